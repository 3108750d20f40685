"""One summary line per skip reason, with its count, instead of pytest's `-ra` line per test
(a newcomer without PostgreSQL would otherwise read 120 identical SKIPPED lines)."""

from __future__ import annotations

from collections import Counter

import pytest


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    counts = Counter(_reason(report) for report in terminalreporter.stats.get("skipped", []))
    if not counts:
        return
    terminalreporter.write_sep("=", "skipped tests, by reason")
    for reason, count in counts.most_common():
        terminalreporter.write_line(f"SKIPPED {count}: {reason}")
