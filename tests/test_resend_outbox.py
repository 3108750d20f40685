"""A resend after a send that only went to the outbox says why it cannot follow (the outbox
keeps no record of who got the issue), instead of claiming the issue was never sent."""

from __future__ import annotations

from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import EXAMPLE_ISSUE

ISSUE = EXAMPLE_ISSUE.stem


def test_a_resend_after_an_outbox_send_says_the_outbox_keeps_no_record(
    issue_project, database_url, cli, tmp_path
):
    root = issue_project()
    add_subscriber(open_engine(database_url), "leserin@example.de")
    outbox = tmp_path / "outbox"
    first = cli(root, "send", ISSUE, "--outbox", str(outbox), "--yes")
    assert first.exit_code == 0, first.output
    again = cli(root, "send", ISSUE, "--resend", "new", "--outbox", str(outbox), "--yes")
    assert again.exit_code == 1
    assert again.output.count("\n") == 1 and "Traceback" not in again.output
    assert "went only to the outbox or as a dry run" in again.output
    assert "has not been sent yet" not in again.output
