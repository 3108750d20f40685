"""Issue 23 item 4: one rule for "a send that reached readers" (insights.metrics), by which
`stats`, `report` and the archive agree. An issue whose only send was a `--test` copy, a dry
run, an outbox run or a send SendGrid rejected for every recipient is in none of them; one
whose send had accepted deliveries is in all of them. Sends through the real CLI to the fake
SendGrid over HTTP; the archive's page fetched over real HTTP; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.issues import published_issues
from newsletter.web import create_app
from tests.conftest import EXAMPLE_ISSUE
from tests.support import archive as support
from tests.support.archive import add_readers, send
from tests.support.web import live_server

ISSUE = EXAMPLE_ISSUE.stem
SLUG = "meta-ki-creator"
sg = support.sg  # the fake SendGrid fixture


def what_readers_see(project: Path, cli) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Where the issue shows as sent: `stats` (table and JSON), the report, the archive."""
    table = cli(project, "stats")
    assert table.exit_code == 0, table.output
    as_json = cli(project, "stats", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    report = project / "report.html"
    written = cli(project, "report", "-o", str(report))
    assert written.exit_code == 0, written.output
    page = report.read_text(encoding="utf-8")
    proj = Project.load(project)
    with live_server(create_app(proj)) as base:
        issue_page = httpx.get(f"{base}/issues/{SLUG}").status_code
        index = httpx.get(base + "/").text
    return {
        "stats table": SLUG in table.output,
        "stats json": [i["issue"] for i in json.loads(as_json.output)["issues"]] == [SLUG],
        "report": "Noch keine Ausgabe verschickt." not in page,
        "archive": [p.slug for p in published_issues(open_engine(proj.database_url))] == [SLUG],
        "archive page": issue_page == 200 and f"/issues/{SLUG}" in index,
    }


NOWHERE = dict.fromkeys(["stats table", "stats json", "report", "archive", "archive page"], False)
EVERYWHERE = dict.fromkeys(NOWHERE, True)


def test_an_issue_rejected_for_every_recipient_is_not_sent_anywhere(project, db, sg, cli):
    add_readers(project, 3)
    sg.inject("400", errors=[{"message": "The from address is blocked", "field": "from"}])
    result = send(cli, project, ISSUE)
    assert result.exit_code == 1, result.output
    assert what_readers_see(project, cli) == NOWHERE
    stats = cli(project, "stats")
    assert stats.output.strip() == "No issue has been sent yet."
    # Once a resend is accepted, stats, the report and the archive all show it.
    assert send(cli, project, ISSUE, "--resume").exit_code == 0
    assert what_readers_see(project, cli) == EVERYWHERE


@pytest.mark.parametrize(
    "how", [("--test", "jens@example.com"), ("--dry-run",), ("--outbox", "OUTBOX")]
)
def test_a_test_copy_a_dry_run_or_an_outbox_run_is_not_sent_anywhere(
    project, db, sg, cli, how, tmp_path
):
    add_readers(project)
    args = [str(tmp_path / "out") if a == "OUTBOX" else a for a in how]
    result = send(cli, project, ISSUE, *args)
    assert result.exit_code == 0, result.output
    assert what_readers_see(project, cli) == NOWHERE


def test_an_accepted_send_is_sent_everywhere(project, db, sg, cli):
    add_readers(project)
    assert send(cli, project, ISSUE).exit_code == 0
    assert what_readers_see(project, cli) == EVERYWHERE
