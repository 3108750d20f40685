"""A send goes to exactly the people counted and confirmed (issue 28, item 2): readers who
*become* subscribed after planning (an import with --resubscribe, a confirmation, a
resubscribe link) are not picked up midway, even when their ids are below the highest id at
planning time; `sends` says they are waiting, and `--resume` reaches them."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.sending.execute import execute
from newsletter.sending.plan import SendRequest, plan_send
from tests.conftest import CONFIG, EXAMPLE_ISSUE


def _project(issue_project, batch_size: int) -> Path:
    return issue_project(CONFIG + f"\n[sending]\nbatch_size = {batch_size}\nconcurrency = 1\n")


def _import(cli, root: Path, name: str, lines: list[str], *flags: str) -> None:
    path = root / name
    path.write_text("\n".join(["email,status", *lines]) + "\n", encoding="utf-8")
    result = cli(root, "subscribers", "import", str(path), *flags)
    assert result.exit_code == 0, result.output


def test_readers_resubscribed_between_confirmation_and_send_are_not_added(issue_project, sg, cli):
    """The count shown at the confirmation is the set sent to: people resubscribed while
    the author reads the prompt (ids among the planned ones) wait for --resume."""
    root = _project(issue_project, batch_size=2)
    # Interleaved: the ones who left sit between (and below) those who are subscribed.
    lines = []
    for i in range(7):
        status = "unsubscribed" if i % 2 else "subscribed"
        lines.append(f"leser{i}@example.org,{status}")
    _import(cli, root, "list.csv", lines)
    plan = plan_send(Project.load(root), EXAMPLE_ISSUE.stem, SendRequest())
    assert plan.recipients == 4

    back = [f"leser{i}@example.org," for i in (1, 3, 5)]
    _import(cli, root, "back.csv", back, "--resubscribe")
    report = execute(plan)

    assert report.accepted == 4
    assert sorted(sg.recipients()) == [f"leser{i}@example.org" for i in (0, 2, 4, 6)]
    listing = cli(root, "sends")
    assert "3 subscribed after this send was planned" in listing.output
    resumed = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "Recipients: 3 subscribed" in resumed.output
    assert sorted(sg.recipients()) == sorted(f"leser{i}@example.org" for i in range(7))


@pytest.mark.slow  # imports 1,200 people and sends to 1,000
def test_import_resubscribe_during_a_send_does_not_widen_it(issue_project, sg, cli):
    """The issue's repro, scaled: 1,000 subscribed and 200 who left (their ids below the
    highest); during the send, `subscribers import --resubscribe` brings the 200 back. The
    send confirmed for 1,000 reaches exactly those 1,000."""
    root = _project(issue_project, batch_size=100)
    lines = [f"leser{i}@example.org,subscribed" for i in range(1000)]
    lines += [f"weg{i}@example.org,unsubscribed" for i in range(200)]
    _import(cli, root, "list.csv", lines)
    plan = plan_send(Project.load(root), EXAMPLE_ISSUE.stem, SendRequest())
    assert plan.recipients == 1000

    back: list[bool] = []

    def resubscribe_during_the_send(report) -> None:
        if not back:  # after the first batch: the send is under way
            back.append(True)
            _import(
                cli, root, "back.csv", [f"weg{i}@example.org," for i in range(200)], "--resubscribe"
            )

    report = execute(plan, resubscribe_during_the_send)
    assert back
    assert report.accepted == 1000
    got = sg.recipients()
    assert len(got) == 1000 and not [a for a in got if a.startswith("weg")]
    listing = cli(root, "sends")
    assert "200 subscribed after this send was planned" in listing.output
    resumed = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "Recipients: 200 subscribed" in resumed.output
    assert len(sg.recipients()) == 1200 == len(set(sg.recipients()))
