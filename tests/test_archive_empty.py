"""`archive build` in a project that has only written to the outbox says why the archive
is empty (outbox sends and dry runs publish nothing)."""

from __future__ import annotations

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber

ISSUE = "---\ntitle: Erste\nslug: erste\n---\n\nHallo!\n"


def test_outbox_only_project_hears_why_the_archive_is_empty(cli, make_project, tmp_path):
    root = make_project(issues={"erste.md": ISSUE})
    add_subscriber(open_engine(Project.load(root).database_url), "anna@example.org")
    fresh = cli(root, "archive", "build", "-o", str(tmp_path / "site0"), "-q")
    assert "The archive is empty: nothing has been sent yet" in fresh.output
    sent = cli(root, "send", "erste", "--yes", "--outbox", str(tmp_path / "outbox"))
    assert sent.exit_code == 0, sent.output
    result = cli(root, "archive", "build", "-o", str(tmp_path / "site"), "-q")
    assert result.exit_code == 0, result.output
    assert "0 issues" in result.output
    assert (
        "The archive is empty: every send so far (1 send: erste) went to the outbox or was a "
        "dry run, which publishes nothing; an issue appears in the archive once it is sent "
        "for real (SendGrid or SMTP)." in result.output
    )
