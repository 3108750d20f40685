"""A worker process killed while it hands a prepared batch back (the OOM killer, midway through
writing a 400 kB request into the pool's result pipe) must not hang the send: the send ends
(all sent, or stopped with one line saying a worker stopped), and `--resume` sends the rest,
everyone exactly once. Workers hand back through a file, so what goes through the pipe is
short enough to be written at once (`_prepare_in_worker`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.schema import deliveries
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO, SENDGRID_KEY
from tests.support.sendgrid_process import sender_env

#: Run as the send process: in its forked workers, a message longer than a pipe takes in one
#: write (PIPE_BUF) is cut in half by a kill, as SIGKILL can cut such a write; shorter ones
#: go whole, as the kernel writes them.
CUT_MIDWAY = """
import os, select, signal, struct, sys
from multiprocessing import connection

parent = os.getpid()
send_bytes = connection.Connection._send_bytes

def killed_midway(self, buf):
    if os.getpid() != parent and len(buf) > select.PIPE_BUF:
        self._send(struct.pack("!i", len(buf)))
        self._send(bytes(memoryview(buf)[: len(buf) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)
    return send_bytes(self, buf)

connection.Connection._send_bytes = killed_midway
sys.argv[0] = "newsletter"
from newsletter.cli import run
run()
"""


def test_a_worker_killed_while_handing_back_a_batch_never_hangs_the_send(
    make_project, database_url, sg, tmp_path
):
    root = make_project(config=CONFIG + "\n[sending]\nbatch_size = 10\nconcurrency = 2\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(database_url)
    everyone = [f"leser{i}@example.org" for i in range(30)]
    for address in everyone:
        add_subscriber(engine, address, first_name="Leser")
    dispose_all()
    script = tmp_path / "killed_midway.py"
    script.write_text(CUT_MIDWAY, "utf-8")
    env = {
        **sender_env(sg.url, SENDGRID_KEY, database_url),
        "NEWSLETTER_SEND_PARALLEL_FROM": "1",  # forked workers, as for a big list
        "PYTHONPATH": str(REPO),
    }
    command = ["--project", str(root), "send", EXAMPLE_ISSUE.stem, "--yes"]
    try:
        first = subprocess.run(
            [sys.executable, str(script), *command],
            env=env, cwd=root, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("the send hung after its worker was killed") from None
    if first.returncode != 0:  # (the worker died: one line says so)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "a worker process stopped" in first.stdout + first.stderr
        assert "Traceback" not in first.stdout + first.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "newsletter", *command, "--resume"],
        env=env, cwd=root, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert Counter(sg.recipients()) == Counter(everyone)
    with open_engine(database_url).connect() as conn:
        states = Counter(conn.execute(select(deliveries.c.state)).scalars())
    assert states == {"accepted": 30}


def test_the_hand_back_files_of_a_killed_send_are_removed_by_the_next(tmp_path, monkeypatch):
    """A send killed with -9 cannot remove its workers' hand-back folder (prepared requests,
    readers' addresses in them): the next send with workers removes it; a live one's stays."""
    import tempfile

    from newsletter.sending.execute import _handoff_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"newsletter-send-{gone.pid}-abc"
    (stale / "batch").mkdir(parents=True)
    alive = tmp_path / f"newsletter-send-{os.getppid()}-def"
    alive.mkdir()
    made = Path(_handoff_folder())
    assert not stale.exists() and alive.exists()
    assert made.parent == tmp_path and made.name.startswith(f"newsletter-send-{os.getpid()}-")
    assert made.stat().st_mode & 0o777 == 0o700
