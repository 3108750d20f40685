"""What `sequences list`, `check` and `status` report, as typed summaries (no click here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from newsletter.check import Finding, check_issue
from newsletter.errors import IssueError, NewsletterError
from newsletter.sequences import state
from newsletter.sequences.config import SequenceConfig, configured
from newsletter.sequences.renames import SuspectedRename, suspected_renames
from newsletter.step import (
    Step,
    format_delay,
    load_sequence,
    load_step,
    resolve_step,
    sequences_dir,
    step_files,
)
from newsletter.store.engine import project_engine

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project

#: Ledger states counted as "got it" (handed over; `uncertain` is listed on its own).
GOT_STATES = ("accepted", "delivered", "bounced", "dropped")


@dataclass
class SequenceInfo:
    name: str
    config: SequenceConfig | None  # None: a folder without a [sequences.<name>] table
    steps: list[Step]
    problem: str | None = None

    @property
    def active(self) -> bool:
        return self.config is not None and self.problem is None and bool(self.steps)


def sequence_names(project: Project) -> list[str]:
    """Configured sequences and step folders, by name."""
    names = {s.name for s in configured(project)}
    folder = sequences_dir(project)
    if folder.is_dir():
        names |= {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return sorted(names)


def describe(project: Project, name: str | None = None) -> list[SequenceInfo]:
    configs = {s.name: s for s in configured(project)}
    names = [name] if name else sequence_names(project)
    out = []
    for each in names:
        if name and each not in configs and not (sequences_dir(project) / each).is_dir():
            raise NewsletterError(
                f"{each}: no such sequence; add [sequences.{each}] to newsletter.toml and "
                f"steps in sequences/{each}/"
            )
        try:
            steps = load_sequence(project, each)
            problem = None if steps else f"no steps in sequences/{each}/"
        except NewsletterError as exc:
            steps, problem = [], str(exc)
        out.append(SequenceInfo(each, configs.get(each), steps, problem))
    return out


def check_sequences(project: Project, name: str | None = None) -> list[Finding]:
    """`newsletter check` on every step, plus what only a step can get wrong (delay, send hour,
    numbering, keys) and sequences configured without steps or steps without configuration."""
    findings: list[Finding] = []
    for info in describe(project, name):
        files = step_files(project, info.name)
        if info.config is None:
            findings.append(
                Finding(
                    "warning",
                    f"sequence {info.name} is not enabled; add [sequences.{info.name}] with "
                    'trigger = "subscribed" to newsletter.toml',
                    sequences_dir(project) / info.name,
                    None,
                )
            )
        if not files:
            findings.append(
                Finding(
                    "error",
                    f"sequence {info.name} has no steps; add sequences/{info.name}/01-willkommen.md",
                    project.config.path,
                    None,
                )
            )
        for path in files:
            findings += check_issue(project, path)
            try:
                load_step(project, info.name, path)
            except IssueError as exc:
                findings.append(Finding("error", exc.reason, exc.path, exc.line))
        if files and info.problem and not any(f.severity == "error" for f in findings):
            findings.append(
                Finding("error", info.problem, sequences_dir(project) / info.name, None)
            )
        if info.steps:
            findings += [
                Finding("warning", suspect.message(), suspect.step.path, None)
                for suspect in _suspected_renames(project, info.name, info.steps)
            ]
    unique: dict[tuple[str, str, int | None, str], Finding] = {}
    for f in findings:
        unique.setdefault((f.severity, str(f.path), f.line, f.message), f)
    return sorted(unique.values(), key=lambda f: (f.severity != "error", str(f.path), f.line or 0))


def _suspected_renames(project: Project, name: str, steps: list[Step]) -> list[SuspectedRename]:
    """Renamed step files, judged against what the database says was sent (`renames.py`).
    `check` never creates a database: without one there is nothing a rename could repeat."""
    url = project.database_url
    sqlite_file = url[len("sqlite:///") :].split("?")[0] if url.startswith("sqlite:///") else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).exists():
        return []
    try:
        return suspected_renames(project_engine(project), name, steps)
    except SQLAlchemyError:  # no database to compare with: the run itself still checks
        return []


@dataclass
class StepStatus:
    number: int
    key: str
    file: str
    delay: str
    send_at_hour: int | None
    got: int
    uncertain: int
    failed: int
    in_flight: int
    waiting: int
    due: int
    next_due: datetime | None
    waiting_people: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": f"{self.number:02d}",
            "key": self.key,
            "file": self.file,
            "delay": self.delay,
            "send_at_hour": self.send_at_hour,
            "got": self.got,
            "uncertain": self.uncertain,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "due": self.due,
            "next_due": self.next_due.isoformat() if self.next_due else None,
            "waiting_people": [
                {"email": p["email"], "due_at": p["due_at"].isoformat() if p["due_at"] else None}
                for p in self.waiting_people
            ],
        }


@dataclass
class SequenceStatus:
    name: str
    trigger: str | None
    enabled: bool
    problem: str | None
    people: dict[str, int]  # enrollment state -> count
    steps: list[StepStatus]
    removed_steps: dict[str, int]  # keys of steps no longer in the folder -> people who had them

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trigger": self.trigger,
            "enabled": self.enabled,
            "problem": self.problem,
            "people": self.people,
            "steps": [s.as_dict() for s in self.steps],
            "removed_steps": self.removed_steps,
        }


def sequence_status(
    project: Project,
    engine: Engine,
    now: datetime,
    name: str | None = None,
    *,
    people_limit: int | None = 20,
) -> list[SequenceStatus]:
    """Per sequence and step: who got it, who waits for it (under the step the run would send
    them next), how many are due, when the next is."""
    timezone = project.config.section("newsletter")["timezone"]
    out = []
    for info in describe(project, name):
        issue_ids = state.step_issue_ids(engine, info.name)
        counts = state.sent_counts(engine, issue_ids.values())
        waiting = state.waiting_by_step(engine, info.name, info.steps, timezone, now)
        steps = []
        for step in info.steps:
            c = counts.get(issue_ids.get(step.key, -1), {})
            w = waiting.get(step.key, state.Waiting())
            steps.append(
                StepStatus(
                    number=step.number,
                    key=step.key,
                    file=step.path.name,
                    delay=format_delay(step.delay),
                    send_at_hour=step.send_at_hour,
                    got=sum(c.get(s, 0) for s in GOT_STATES),
                    uncertain=c.get("uncertain", 0),
                    failed=c.get("failed", 0),
                    in_flight=c.get("in_flight", 0),
                    waiting=w.waiting,
                    due=w.due,
                    next_due=w.first_due,
                    waiting_people=[
                        {"email": email, "due_at": due} for email, due in w.people[:people_limit]
                    ],
                )
            )
        current = {s.key for s in info.steps}
        removed = {
            key: sum(counts.get(issue_id, {}).values())
            for key, issue_id in issue_ids.items()
            if key not in current
        }
        out.append(
            SequenceStatus(
                name=info.name,
                trigger=info.config.trigger if info.config else None,
                enabled=info.active,
                problem=info.problem or _held_back(engine, info),
                people=state.enrollment_counts(engine, info.name),
                steps=steps,
                removed_steps=removed,
            )
        )
    return out


def _held_back(engine: Engine, info: SequenceInfo) -> str | None:
    """Why `sequences run` holds this sequence back (a step file seems renamed), if it does."""
    suspects = suspected_renames(engine, info.name, info.steps) if info.steps else []
    return "; ".join(f"{s.step.path.name}: {s.message()}" for s in suspects) or None


def step_path_for_preview(project: Project, name: str) -> Path:
    return resolve_step(project, name).path
