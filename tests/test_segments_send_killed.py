"""A send to a segment records which segment it went to when the send is created, in the same
transaction: a sender killed with kill -9 mid-send leaves a send that still names its segment
(so `sends` and the archive's rule know it went to part of the list). A real sender process
against a slow fake SendGrid, killed for real."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO
from tests.support.sendgrid_process import sender_env, slow_sendgrid

pytestmark = pytest.mark.slow

KEY = "SG.segment-kill-key"
SEGMENT = 'field:stadt="Köln"'


def test_a_killed_send_still_names_its_segment(
    make_project, database_url, tmp_path, cli, monkeypatch
):
    config = CONFIG + "\n[sending]\nbatch_size = 5\nconcurrency = 1\n"
    config += f'\n[segments."köln"]\nwhere = {json.dumps(SEGMENT, ensure_ascii=False)}\n'
    root = make_project(config=config)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(database_url)
    for n in range(40):
        add_subscriber(engine, f"leser{n}@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "bert@example.de", fields={"stadt": "Bad Tölz"})
    log = tmp_path / "sendgrid.log"
    with slow_sendgrid(log, KEY) as url:
        env = {**sender_env(url, KEY, database_url), "PYTHONPATH": str(REPO)}
        sender = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--project", str(root), "send",
             EXAMPLE_ISSUE.stem, "--segment", "köln", "--yes", "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text("utf-8").strip()):
            assert sender.poll() is None, sender.stdout.read()  # type: ignore[union-attr]
            if time.monotonic() >= deadline:
                sender.kill()  # (a failed test leaves no send running behind it)
                pytest.fail("no batch reached SendGrid")
            time.sleep(0.05)
        sender.send_signal(signal.SIGKILL)
        sender.wait()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    shown = json.loads(cli(root, "sends", "--format", "json").output)
    assert [s["segment_name"] for s in shown] == ["köln"]
    assert shown[0]["segment_where"] == SEGMENT
