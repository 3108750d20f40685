"""The rules of `send --resend` (issue 24, item 2): not within `[sending] resend_after` of the
first send (and it says when), not before a send, not to non-openers without open tracking,
not with --tag; a bad resend_after is a one-line config error."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.project import Project
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.sending.resend import first_send
from newsletter.store.engine import open_engine
from newsletter.store.issues import find_issue_id
from tests.conftest import CONFIG, EXAMPLE_ISSUE

ISSUE = EXAMPLE_ISSUE.stem


def _sent(issue_project, cli, extra: str = "") -> Path:
    root = issue_project(CONFIG + extra)
    for i in range(3):
        assert cli(root, "subscribers", "add", f"leser{i}@example.de").exit_code == 0
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    return root


def _plan(root: Path, kind: str, at_hours: float, **request):
    project = Project.load(root)
    engine = open_engine(project.database_url)
    first = first_send(engine, find_issue_id(engine, "meta-ki-creator"))
    assert first is not None
    when = first.went_out + timedelta(hours=at_hours)
    return plan_send(project, ISSUE, SendRequest(resend=kind, now=when, **request)), first


def test_a_resend_waits_resend_after_and_says_from_when(issue_project, sg, cli):
    root = _sent(issue_project, cli, "\n[tracking]\nclicks = true\n")
    plan, first = _plan(root, "non-clickers", 24 - 1 / 60)
    possible = first.went_out + timedelta(hours=24)
    assert plan.refusal == (
        f"too soon to resend meta-ki-creator to non-clickers: possible from "
        f"{possible:%Y-%m-%d %H:%M} UTC (24h after the first send; [sending] resend_after)"
    )
    plan, _ = _plan(root, "non-clickers", 24)
    assert plan.refusal is None and plan.recipients == 3
    assert plan.send_round == "non-clickers"


def test_resend_after_from_the_config(issue_project, sg, cli):
    root = _sent(issue_project, cli, '\n[sending]\nresend_after = "2d"\n')
    plan, _ = _plan(root, "new", 47)
    assert plan.refusal and "48h" not in plan.refusal and "2d after the first send" in plan.refusal
    plan, _ = _plan(root, "new", 48)
    assert plan.refusal is None and plan.recipients == 0  # nobody joined since


def test_a_bad_resend_after_is_one_line_naming_the_file(make_project, cli):
    root = make_project(config=CONFIG + '\n[sending]\nresend_after = "bald"\n')
    with pytest.raises(ConfigError, match=r"newsletter.toml: \[sending\] resend_after 'bald'"):
        Project.load(root)
    result = cli(root, "send", ISSUE, "--resend", "new", "--yes")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "resend_after" in result.output


def test_refusals(make_project, database_url, monkeypatch, sg, cli):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project()
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    assert cli(root, "subscribers", "add", "leser@example.de").exit_code == 0
    before = cli(root, "send", ISSUE, "--resend", "non-clickers", "--yes")
    assert before.exit_code == 1
    assert "has not been sent yet; a resend follows a send" in before.output

    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    # Open tracking was off for the first send: nobody's opens are known.
    plan, _ = _plan(root, "non-openers", 25)
    assert plan.refusal and "open tracking was off for its first send" in plan.refusal
    plan, _ = _plan(root, "non-clickers", 25, resume=True)
    assert plan.refusal and "no resend to non-clickers to resume" in plan.refusal

    tagged = cli(root, "send", ISSUE, "--resend", "new", "--tag", "vip", "--yes")
    assert tagged.exit_code == 2 and "--tag does not go with --resend" in tagged.output
    unknown = cli(root, "send", ISSUE, "--resend", "everyone", "--yes")
    assert unknown.exit_code == 2
    assert sg.recipients() == ["leser@example.de"]


def test_a_resend_after_a_cancelled_schedule_says_it_was_cancelled(issue_project, sg, cli):
    """Before, it said the issue "went only to the outbox or as a dry run", which was not
    what happened; now it names the cancelled send and says to send the issue again."""
    root = issue_project()
    for tag in ("x", "y"):
        assert (
            cli(root, "subscribers", "add", f"leser-{tag}@example.de", "--tag", tag).exit_code == 0
        )
    scheduled = cli(root, "send", ISSUE, "--tag", "x", "--schedule", "in 2h", "--yes")
    assert scheduled.exit_code == 0, scheduled.output
    assert cli(root, "cancel", ISSUE).exit_code == 0
    resent = cli(root, "send", ISSUE, "--resend", "non-clickers", "--yes")
    assert resent.exit_code == 1
    assert resent.output == (
        "Error: meta-ki-creator has not gone out: its send 1 was cancelled, so nobody got it "
        "and there is nobody to resend to; send it again with `newsletter send meta-ki-creator`\n"
    )
    assert len(sg.messages) == 1  # the scheduled one; nothing since
