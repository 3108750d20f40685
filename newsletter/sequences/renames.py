"""Renamed step files: `01-hello.md` becoming `01-hallo.md` (without a `slug:`) changes the
step's key from `hello` to `hallo`, and to the run `hallo` is a step nobody has had: every
active reader would get step 1 again. So a step that is gone, that readers had, while a new
step sits at its number is a suspected rename: `sequences check` warns, `sequences run`
holds the sequence back, until the author says which it is: `slug: hello` in the front matter
or `sequences rename NAME hello hallo` (the same email), or `slug: hallo` (a new email).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError
from newsletter.sequences import state
from newsletter.step import FOLDER, Step, load_sequence, step_slug
from newsletter.store.schema import DeliveryState
from newsletter.wording import plural

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project


@dataclass(frozen=True)
class SuspectedRename:
    step: Step  # the new step, at the old one's number
    old_key: str
    had: int  # readers who had the old step (or may have: uncertain)

    def message(self) -> str:
        name, new = self.step.sequence, self.step.key
        return (
            f"step {self.step.number:02d} was {self.old_key!r} until now "
            f"({plural(self.had, 'reader')} had it) and is now {new!r}, which nobody has had: "
            "a run would send it to them again. If it is the same email under a new file "
            f"name, run `newsletter sequences rename {name} {self.old_key} {new}` (or add "
            f"`slug: {self.old_key}` to its front matter); if it is a new email for everyone, "
            f"add `slug: {new}`"
        )


def suspected_renames(engine: Engine, sequence: str, steps: list[Step]) -> list[SuspectedRename]:
    """Steps whose key comes from their file name, that no run has seen, at the number of a
    step that readers had and that is gone from the folder."""
    known = state.known_steps(engine, sequence)
    current = {s.key for s in steps}
    gone = {
        number: (key, issue_id)
        for key, (issue_id, number) in known.items()
        if key not in current and number is not None
    }
    suspects = [
        (step, *gone[step.number])
        for step in steps
        if step.number in gone and step.key not in known and not step.named_in_front_matter
    ]
    if not suspects:
        return []
    counts = state.sent_counts(engine, [issue_id for _, _, issue_id in suspects])
    out = []
    for step, old_key, issue_id in suspects:
        had = sum(n for s, n in counts[issue_id].items() if s != DeliveryState.FAILED)
        if had:
            out.append(SuspectedRename(step, old_key, had))
    return out


def rename_step(project: Project, engine: Engine, sequence: str, old: str, new: str) -> int:
    """`sequences rename NAME OLD NEW`: the step once called `old` is the step now called
    `new` (its file was renamed): who had `old` has had `new`. Returns how many had it."""
    steps = load_sequence(project, sequence)
    current = {s.key: s for s in steps}
    known = state.known_steps(engine, sequence)
    if old not in known:
        sent = ", ".join(sorted(known)) or "none yet"
        raise NewsletterError(
            f"{sequence}: no step {old!r} has been sent, so there is nothing to rename "
            f"(steps with a history: {sent})"
        )
    if old in current:
        raise NewsletterError(
            f"{sequence}: {old!r} is still the key of {current[old].path.name}; rename the "
            "file (or change its `slug:`) first, then run this again"
        )
    if new not in current:
        keys = ", ".join(f"{s.number:02d} {s.key}" for s in steps) or "none"
        raise NewsletterError(
            f"{sequence}: no step file has the key {new!r} (the steps in {FOLDER}/{sequence}/: "
            f"{keys})"
        )
    if new in known:
        raise NewsletterError(
            f"{sequence}: step {new!r} has been sent already under its own name; the two "
            f"histories cannot be joined. To keep {old!r}'s, give {current[new].path.name} "
            f"`slug: {old}`"
        )
    issue_id = known[old][0]
    had = sum(
        n
        for s, n in state.sent_counts(engine, [issue_id])[issue_id].items()
        if s != DeliveryState.FAILED
    )
    state.rename_step_key(engine, sequence, old, new, step_slug(sequence, new))
    return had
