"""`newsletter cancel` while the scheduled send is still being handed over (issue 28, item 1):
the sending process is stopped through its send first (it claims no further batch and
settles those in flight), then the schedule is cancelled at SendGrid. Afterwards the ledger,
`sends` and SendGrid agree, and the issue can be sent again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.schema import deliveries, sends
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE, TEST_SECRET
from tests.support.sendgrid_process import logged_recipients, slow_sendgrid

KEY = "SG.cancel-live-key"
PEOPLE = 120
ISSUE = EXAMPLE_ISSUE.stem


@pytest.fixture
def sendgrid_process(tmp_path: Path):
    """The fake SendGrid in its own process, answering each mail request after 0.3 s."""
    log = tmp_path / "sendgrid.log"
    with slow_sendgrid(log, KEY) as url:
        yield url, log


def handed_over(log: Path) -> list[str]:
    """Every address SendGrid accepted, in order."""
    return logged_recipients(log)


def fake_state(url: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{url}/__fake__/state", timeout=5).read())


def set_delay(url: str, seconds: float) -> None:
    body = json.dumps({"seconds": seconds}).encode()
    request = urllib.request.Request(f"{url}/__fake__/delay", data=body, method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def start_scheduled_send(make_project, database_url, monkeypatch, url, parallel=False):
    """PEOPLE subscribers, then `send --schedule "in 2h" --yes` in its own process (with
    `parallel`, batches are prepared by forked worker processes, as for a big list)."""
    root = make_project(config=CONFIG + "\n[sending]\nbatch_size = 10\nconcurrency = 2\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", url)
    engine = open_engine(database_url)
    for i in range(PEOPLE):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    dispose_all()
    env = {
        **os.environ,
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_SEND_PARALLEL_FROM": "1" if parallel else "1000000000",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), "send", ISSUE,
         "--schedule", "in 2h", "--yes"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return root, engine, child


def wait_for(log: Path, count: int, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while len(handed_over(log)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the send finished before it could be cancelled"


def assert_sender_stopped_for_cancel(child: subprocess.Popen) -> None:
    out, err = child.communicate(timeout=60)
    assert child.returncode == 1, (out, err)
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "newsletter cancel" in line]
    assert line.startswith("Error: send 1 stopped: `newsletter cancel` stopped it after ")


def assert_all_agree(root, engine, cli, url: str, got: list[str]) -> None:
    """Nothing of the issue is in the ledger, `sends` says the send was cancelled with as
    many as SendGrid accepted, SendGrid has the batch cancelled, and the issue can go out."""
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.id)).all() == []
        [(status, batch_id)] = conn.execute(select(sends.c.status, sends.c.batch_id)).all()
    assert status == "cancelled"
    assert fake_state(url)["scheduled_sends"] == {batch_id: "cancel"}
    listing = cli(root, "sends")
    assert f"cancelled {len(got)}" in listing.output and "accepted" not in listing.output
    again = cli(root, "send", ISSUE, "--schedule", "in 3h", "--yes")
    assert again.exit_code == 0, again.output
    assert f"Send 2: {PEOPLE} scheduled for" in again.output


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True], ids=["inline", "workers"])
def test_cancel_stops_the_live_sender_first_then_cancels_at_sendgrid(
    make_project, database_url, sendgrid_process, cli, monkeypatch, parallel
):
    url, log = sendgrid_process
    root, engine, child = start_scheduled_send(
        make_project, database_url, monkeypatch, url, parallel
    )
    wait_for(log, 30, child)

    cancelled = cli(root, "cancel", ISSUE)

    assert cancelled.exit_code == 0, cancelled.output
    got = handed_over(log)
    child.wait(timeout=60)
    time.sleep(0.5)  # the window in which a late request would still reach the server
    assert handed_over(log) == got, "the sender went on after `cancel` said it was done"
    assert 30 <= len(got) < PEOPLE
    assert f"Cancelled send 1 of meta-ki-creator ({len(got)} recipients)" in cancelled.output
    assert f"its sender (pid {child.pid}) stopped" in cancelled.output
    assert_sender_stopped_for_cancel(child)
    assert_all_agree(root, engine, cli, url, got)


@pytest.mark.slow
def test_cancel_refuses_in_one_line_while_the_sender_is_stuck_then_completes(
    make_project, database_url, sendgrid_process, cli, monkeypatch
):
    """A sender stuck in a slow request does not stop within --wait: `cancel` says so in one
    line and cancels nothing yet (SendGrid, ledger and `sends` still agree: scheduled). The
    sender stops after that request; `cancel` again then finishes the job."""
    url, log = sendgrid_process
    root, engine, child = start_scheduled_send(make_project, database_url, monkeypatch, url)
    wait_for(log, 30, child)
    set_delay(url, 4)
    time.sleep(0.5)  # the requests already at the server get their 0.3 s answers

    refused = cli(root, "cancel", ISSUE, "--wait", "1")

    assert refused.exit_code == 1, refused.output
    [error] = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert "send 1 of meta-ki-creator is still sending (pid" in error
    assert "run `newsletter cancel meta-ki-creator` again" in error
    assert "Traceback" not in refused.output
    assert fake_state(url)["scheduled_sends"] == {}
    with engine.connect() as conn:
        assert conn.execute(select(sends.c.status)).scalar_one() == "scheduled"

    assert_sender_stopped_for_cancel(child)  # after its slow request, not later
    got = handed_over(log)
    assert len(got) < PEOPLE
    set_delay(url, 0)
    # Half cancelled: `sends` says so, and a --resume would send under that schedule.
    listing = cli(root, "sends")
    assert "cancelling" in listing.output
    assert "finish with `newsletter cancel meta-ki-creator`" in listing.output
    resumed = cli(root, "send", ISSUE, "--resume", "--yes")
    assert resumed.exit_code == 1
    assert "send 1 of meta-ki-creator is being cancelled" in resumed.output
    assert handed_over(log) == got
    done = cli(root, "cancel", ISSUE)
    assert done.exit_code == 0, done.output
    assert f"({len(got)} recipients); it can be sent again" in done.output
    assert handed_over(log) == got
    assert_all_agree(root, engine, cli, url, got)
