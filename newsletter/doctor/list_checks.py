"""The list: complaint and bounce rates over the last 30 days (from the counters `stats`
reads), and the share of readers without consent evidence."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from newsletter.doctor.checks import Check, Status
from newsletter.errors import NewsletterError
from newsletter.project import Project
from newsletter.store.consent import has_evidence
from newsletter.store.engine import database_error, project_engine
from newsletter.store.schema import issue_day_counters as c
from newsletter.store.schema import subscribers

DAYS = 30
#: Gmail's limits for the spam-complaint rate: keep it under 0.1 %, never reach 0.3 %.
COMPLAINTS_WARN = 0.001
COMPLAINTS_FAIL = 0.003
#: Bounces over what was sent: above 2 % mailbox providers start to distrust a sender.
BOUNCES_WARN = 0.02
BOUNCES_FAIL = 0.05


def _check(name: str, status: Status, found: str, fix: str | None = None) -> Check:
    return Check("list", name, status, found, fix)


def list_checks(project: Project, now: datetime | None = None) -> list[Check]:
    since = ((now or datetime.now(UTC)) - timedelta(days=DAYS)).date()
    try:
        engine = project_engine(project)
        return [*_rates(_totals(engine, since)), _consent(engine)]
    except NewsletterError as exc:
        problem = str(exc)
    except DBAPIError as exc:
        problem = f"database error: {database_error(exc)}"
    # The other areas' rows still show: one row says why the list could not be read.
    return [
        _check(
            "database",
            Status.FAIL,
            problem,
            "check [database] url or NEWSLETTER_DATABASE_URL, and that the database is running",
        )
    ]


def _totals(engine: Engine, since: date) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.c.metric, func.coalesce(func.sum(c.c.readers), 0))
            .where(c.c.day >= since, c.c.metric.in_(("delivered", "bounced", "complained")))
            .group_by(c.c.metric)
        ).all()
    return {metric: int(n) for metric, n in rows}


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f} %"


def _rates(totals: dict[str, int]) -> list[Check]:
    delivered = totals.get("delivered", 0)
    bounced = totals.get("bounced", 0)
    complained = totals.get("complained", 0)
    if not delivered:
        note = f"nothing delivered in the last {DAYS} days"
        return [
            _check("complaint rate", Status.SKIP, note),
            _check("bounce rate", Status.SKIP, note),
        ]
    rate = complained / delivered
    found = f"{_pct(rate)} ({complained} of {delivered} delivered, last {DAYS} days)"
    if rate > COMPLAINTS_FAIL:
        complaints = _check(
            "complaint rate",
            Status.FAIL,
            found + "; Gmail's limit is 0.3 %",
            "send only to people who asked for it (double opt-in), make unsubscribing easy, "
            "and drop long-inactive readers",
        )
    elif rate > COMPLAINTS_WARN:
        complaints = _check(
            "complaint rate",
            Status.WARN,
            found + "; Gmail wants it under 0.1 %",
            "remind readers why they get it, and drop long-inactive readers",
        )
    else:
        complaints = _check("complaint rate", Status.OK, found)
    sent = delivered + bounced
    rate = bounced / sent
    found = f"{_pct(rate)} ({bounced} of {sent} sent, last {DAYS} days)"
    fix = "import only confirmed addresses; bounced readers are never mailed again"
    if rate > BOUNCES_FAIL:
        bounces = _check("bounce rate", Status.FAIL, found + "; keep it under 2 %", fix)
    elif rate > BOUNCES_WARN:
        bounces = _check("bounce rate", Status.WARN, found + "; keep it under 2 %", fix)
    else:
        bounces = _check("bounce rate", Status.OK, found)
    return [complaints, bounces]


def _consent(engine: Engine) -> Check:
    with engine.connect() as conn:
        readers = conn.execute(
            select(func.count()).where(subscribers.c.status == "subscribed")
        ).scalar_one()
        without = conn.execute(
            select(func.count()).where(subscribers.c.status == "subscribed", ~has_evidence())
        ).scalar_one()
    if not readers:
        return _check("consent evidence", Status.SKIP, "no subscribed readers yet")
    share = without / readers
    found = f"{without} of {readers} readers ({share * 100:.1f} %) have no consent evidence"
    if not without:
        return _check("consent evidence", Status.OK, f"every one of {readers} readers has it")
    return _check(
        "consent evidence",
        Status.WARN,
        found,
        "`newsletter subscribers list --no-consent-evidence` lists them; import their opt-in "
        "records (OPTIN_TIME, CONFIRM_TIME) or ask them to confirm again",
    )
