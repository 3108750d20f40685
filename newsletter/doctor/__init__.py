"""`newsletter doctor`: what decides whether mail arrives, checked, with the fix for each problem.

Three areas: DNS for the From domain (SPF, DKIM, DMARC, alignment, the reply domain's MX;
`records.py`, `dns_checks.py`), the setup (base_url, `serve` answering, secrets;
`setup_checks.py`) and the list (complaint and bounce rates, consent evidence;
`list_checks.py`). Each check is a `Check`: ✓ ok, ! warning, ✗ problem, - skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from newsletter.doctor.checks import SYMBOL, Check, Status
from newsletter.doctor.dns_checks import dns_checks
from newsletter.doctor.list_checks import list_checks
from newsletter.doctor.records import Lookup
from newsletter.doctor.setup_checks import setup_checks
from newsletter.project import Project


@dataclass(frozen=True)
class DoctorOptions:
    #: Ask this DNS server (HOST or HOST:PORT) instead of the system's resolver.
    nameserver: str | None = None
    #: No network besides DNS: no /healthz request, no SendGrid API call.
    offline: bool = False


def run_doctor(project: Project, options: DoctorOptions) -> list[Check]:
    """Every check, in the order the table shows them."""
    lookup = Lookup(options.nameserver)
    return [
        *dns_checks(project, lookup, offline=options.offline),
        *setup_checks(project, offline=options.offline),
        *list_checks(project),
    ]


def failed(checks: list[Check]) -> bool:
    return any(check.status is Status.FAIL for check in checks)


AREA_TITLES = {"dns": "DNS", "setup": "Setup", "list": "The list"}


def as_text(checks: list[Check]) -> str:
    """The table: symbol, check, what was found; the fix on the line below a problem."""
    width = max((len(check.name) for check in checks), default=0)
    lines: list[str] = []
    area = None
    for check in checks:
        if check.area != area:
            area = check.area
            lines += ["", AREA_TITLES[area]] if lines else [AREA_TITLES[area]]
        lines.append(f"  {SYMBOL[check.status]}  {check.name.ljust(width)}  {check.found}")
        if check.fix:
            lines.append(f"     {' ' * width}  fix: {check.fix}")
    problems = sum(check.status is Status.FAIL for check in checks)
    warnings = sum(check.status is Status.WARN for check in checks)
    lines += ["", _summary(problems, warnings)]
    return "\n".join(lines)


def _summary(problems: int, warnings: int) -> str:
    if not problems and not warnings:
        return "All checks passed."
    parts = []
    if problems:
        parts.append(f"{problems} problem{'s' if problems != 1 else ''} (✗)")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''} (!)")
    return ", ".join(parts) + "."


def as_json(checks: list[Check]) -> str:
    return json.dumps(
        {"ok": not failed(checks), "checks": [asdict(check) for check in checks]},
        ensure_ascii=False,
        indent=2,
    )
