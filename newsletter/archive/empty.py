"""Why the archive shows no issue: what a user who sent only to the outbox needs to hear."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from newsletter.sending.summary import send_summaries
from newsletter.wording import plural


def why_empty(engine: Engine) -> str:
    """One sentence on why no issue is published yet, from the sends made so far."""

    sends = send_summaries(engine, None)
    if not sends:
        return (
            "nothing has been sent yet; an issue appears in the archive once "
            "`newsletter send ISSUE` has delivered it"
        )
    rehearsals = [s for s in sends if s.dry_run or not s.keeps_ledger]
    if len(rehearsals) == len(sends):
        issues = ", ".join(dict.fromkeys(s.issue for s in rehearsals))
        return (
            f"every send so far ({plural(len(rehearsals), 'send')}: {issues}) went to the "
            "outbox or was a dry run, which publishes nothing; an issue appears in the "
            "archive once it is sent for real (SendGrid or SMTP)"
        )
    return (
        "no send has delivered an issue yet (a scheduled one appears at its time); see "
        "`newsletter sends`"
    )
