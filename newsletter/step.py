"""Step files: `sequences/<name>/NN-<title>.md`, the issue format plus `delay:` and
`send_at_hour:`.

A step is known by its key, not its position: the front matter's `slug:` if given, else the
file name without the `NN-` prefix (`02-tipps.md` -> `tipps`). Renumbering files therefore
never makes a step new, and a person who had `tipps` never gets it again.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.durations import MAX_DELAY, format_delay, parse_delay
from newsletter.errors import IssueError, NewsletterError
from newsletter.issue import Issue, load_issue, slugify

if TYPE_CHECKING:
    from newsletter.project import Project

FOLDER = "sequences"
#: Front matter keys a step has besides an issue's.
STEP_KEYS = ("delay", "send_at_hour")
FILE_RE = re.compile(r"^(\d{1,4})-(.+)\.md$")


@dataclass(frozen=True)
class Step:
    """One email of a sequence, loaded and validated (not rendered)."""

    sequence: str
    key: str
    number: int  # the NN of the file name: the order
    delay: timedelta  # after the previous step (the first: after joining)
    send_at_hour: int | None  # hour of day in [newsletter] timezone, or None
    issue: Issue  # slug: sequences/<name>/<key>

    @property
    def path(self) -> Path:
        return self.issue.path

    @property
    def slug(self) -> str:
        return self.issue.slug

    @property
    def named_in_front_matter(self) -> bool:
        """Does the author give its key (`slug:`), rather than the file name?"""
        return bool(self.issue.meta.get("slug"))

    @property
    def label(self) -> str:
        """`01-willkommen`: how the author names the step."""
        return self.path.stem


def sequences_dir(project: Project) -> Path:
    return project.root / FOLDER


def step_slug(sequence: str, key: str) -> str:
    return f"{FOLDER}/{sequence}/{key}"


def is_step_path(path: Path) -> bool:
    """Is this file a sequence step (`.../sequences/<name>/NN-x.md`)?"""
    return path.parent.parent.name == FOLDER and FILE_RE.match(path.name) is not None


def load_step(project: Project, sequence: str, path: Path) -> Step:
    """Read and validate one step file (IssueError with file and line)."""
    found = FILE_RE.match(path.name)
    if found is None:
        raise IssueError(
            path,
            None,
            "a step's file name starts with its number: rename it like 01-willkommen.md",
        )
    issue = load_issue(project, path)
    key = str(issue.meta["slug"]) if issue.meta.get("slug") else slugify(found.group(2))
    if not key:
        raise IssueError(path, None, "the file name has no letters after NN-; rename it")
    raw_delay = issue.meta.get("delay", 0)
    delay = parse_delay(raw_delay)
    if delay is None:
        raise IssueError(
            path,
            issue.key_line("delay"),
            f"bad delay {raw_delay!r}; write 0, 30m, 2h, 3d or 1w (after the previous step), "
            f"at most {format_delay(MAX_DELAY)}",
        )
    hour = issue.meta.get("send_at_hour")
    if hour is not None and (
        isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23
    ):
        raise IssueError(
            path,
            issue.key_line("send_at_hour"),
            f"bad send_at_hour {hour!r}; write a whole hour from 0 to 23, e.g. send_at_hour: 9",
        )
    return Step(
        sequence=sequence,
        key=key,
        number=int(found.group(1)),
        delay=delay,
        send_at_hour=hour,
        issue=replace(issue, slug=step_slug(sequence, key)),
    )


def step_files(project: Project, sequence: str) -> list[Path]:
    folder = sequences_dir(project) / sequence
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.md") if p.is_file())


def load_sequence(project: Project, sequence: str) -> list[Step]:
    """The steps of a sequence in order; IssueError for the first broken file."""
    steps = [load_step(project, sequence, path) for path in step_files(project, sequence)]
    steps.sort(key=lambda s: (s.number, s.path.name))
    seen_keys: dict[str, Path] = {}
    seen_numbers: dict[int, Path] = {}
    for step in steps:
        if step.key in seen_keys:
            raise IssueError(
                step.path,
                step.issue.key_line("slug"),
                f"step key {step.key!r} is also the key of {seen_keys[step.key].name}; "
                "rename one of them (or give it its own `slug:`)",
            )
        if step.number in seen_numbers:
            raise IssueError(
                step.path,
                None,
                f"number {step.number:02d} is also the number of {seen_numbers[step.number].name}; "
                "renumber one so the order is clear",
            )
        seen_keys[step.key] = step.path
        seen_numbers[step.number] = step.path
    return steps


def fingerprint(steps: list[Step]) -> str:
    """Changes whenever the order, a delay or a send hour changes (not the text)."""
    shape = [[s.key, int(s.delay.total_seconds()), s.send_at_hour] for s in steps]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:32]


def due_at(base: datetime, step: Step, timezone: str) -> datetime:
    """When `step` is due for someone whose previous step (or joining) was at `base`:
    base + delay, then moved to the next `send_at_hour` o'clock in the newsletter's zone."""
    due = base + step.delay
    if step.send_at_hour is None:
        return due
    from zoneinfo import ZoneInfo  # deferred: zoneinfo costs 2 ms at start-up (sysconfig)

    zone = ZoneInfo(timezone)
    local = due.astimezone(zone)
    day = local.date()
    for _ in range(3):
        candidate = datetime.combine(day, time(step.send_at_hour), tzinfo=zone)
        if candidate >= local:
            return candidate.astimezone(due.tzinfo)
        day += timedelta(days=1)
    raise AssertionError("unreachable")


def resolve_step(project: Project, name: str) -> Step:
    """`welcome/01`, `welcome/willkommen`, `sequences/welcome/01` or a step file's path."""
    sequence, ref = _split(project, name)
    if sequence is None or ref is None:
        raise NewsletterError(
            f"{name}: give a step as NAME/STEP, e.g. welcome/01 or welcome/willkommen"
        )
    steps = load_sequence(project, sequence)
    if not steps:
        raise NewsletterError(
            f"{name}: sequence {sequence!r} has no steps; add {FOLDER}/{sequence}/01-willkommen.md"
        )
    for step in steps:
        if ref in (step.key, step.label, step.path.name) or (
            ref.isdigit() and int(ref) == step.number
        ):
            return step
    known = ", ".join(f"{sequence}/{s.number:02d} ({s.key})" for s in steps)
    raise NewsletterError(f"{name}: no such step; the steps are {known}")


def _split(project: Project, name: str) -> tuple[str | None, str | None]:
    path = Path(name)
    if path.suffix == ".md":
        absolute = path if path.is_absolute() else (project.root / path)
        try:
            relative = absolute.resolve().relative_to(sequences_dir(project).resolve())
        except ValueError:
            return None, None
        found = relative.parts
        return (found[0], found[1]) if len(found) == 2 else (None, None)
    parts = [p for p in name.strip("/").split("/") if p]
    if parts and parts[0] == FOLDER:
        parts = parts[1:]
    if len(parts) != 2:
        return None, None
    return parts[0], parts[1]


def resolve_step_issue(project: Project, name: str) -> tuple[str, Path | None] | None:
    """(`issues` slug, step file or None) of a step named like `sequences/welcome/01`,
    `sequences/welcome/willkommen` or its file's path, for every command that takes ISSUE
    (`stats`, `sends`, `replies --issue` ...); None when `name` does not name a step."""
    sequence, ref = _split(project, name)
    if sequence is None or ref is None:
        return None
    if not (name.startswith(FOLDER + "/") or name.endswith(".md")):
        return None
    try:
        step = resolve_step(project, name)
    except NewsletterError:
        # A removed step still has its history under its key.
        return (step_slug(sequence, ref), None) if not ref.isdigit() else None
    return step.slug, step.path


def step_issue_slug(project: Project, name: str) -> str | None:
    """The `issues` slug of a step named like `sequences/welcome/01`, or None."""
    found = resolve_step_issue(project, name)
    return found[0] if found else None
