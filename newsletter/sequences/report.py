"""What a sequence run did: per step, how many were sent, failed or uncertain; its own
module so that the run (`batches`) and its light entry point (`runner`) share it without
importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.step import Step


@dataclass
class StepReport:
    sequence: str
    step: str
    accepted: int = 0
    failed: int = 0
    uncertain: int = 0


@dataclass
class RunReport:
    transport: str = ""
    where: str = ""
    steps: dict[str, StepReport] = field(default_factory=dict)
    stopped: int = 0  # people who left the list since they joined: their sequence ends
    finished: int = 0  # people who had every step
    rescheduled: int = 0
    from_the_future: int = 0  # of those: scheduled by a run whose clock was far ahead
    reaped: int = 0  # in-flight deliveries of a dead run, now uncertain
    retried: int = 0  # uncertain ones sent again (--include-uncertain)
    errors: list[str] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)  # sequences not run: a step was renamed?
    error: str | None = None  # the run had to stop (e.g. the transport refused the key)
    note: str | None = None
    interrupted: bool = False  # stopped early on request (a signal, `serve` stopping)

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.steps.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.steps.values())

    @property
    def uncertain(self) -> int:
        return sum(s.uncertain for s in self.steps.values())

    @property
    def total(self) -> int:
        return self.accepted + self.failed + self.uncertain

    def step(self, step: Step) -> StepReport:
        key = f"{step.sequence}/{step.key}"
        if key not in self.steps:
            self.steps[key] = StepReport(step.sequence, step.key)
        return self.steps[key]


def summary(report: RunReport) -> str:
    """One line: what a run did."""
    if not report.steps:
        return "nothing was due"
    parts = [
        f"{key}: {s.accepted} sent"
        + (f", {s.failed} failed" if s.failed else "")
        + (f", {s.uncertain} uncertain" if s.uncertain else "")
        for key, s in sorted(report.steps.items())
    ]
    return f"{'; '.join(parts)} ({report.transport}, {report.where})"
