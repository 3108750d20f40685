"""kill -9 a real `newsletter send` mid-send, then resume: nobody gets the issue twice, nobody
is silently skipped, and the batch in flight at the crash is `uncertain`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.schema import deliveries, sends, subscribers
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO, TEST_SECRET
from tests.support.sendgrid_process import logged, sender_env, set_delay, slow_sendgrid

KEY = "SG.crash-test-key"
PEOPLE = 120


def received(log: Path) -> list[str]:
    out = []
    for entry in logged(log):
        if "to" in entry:  # the SMTP server's log: one message per line
            out.extend(entry["to"])
        else:
            out.extend(p["to"][0]["email"] for p in entry["personalizations"])
    return out


def in_flight(engine) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(deliveries.c.id).where(deliveries.c.state == "in_flight")).first()
            is not None
        )


@pytest.fixture
def smtp_process(tmp_path: Path):
    log = tmp_path / "smtp.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.smtp_server", "--port", "0", "--log", str(log),
         "--delay", "0.05"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("PORT "), line
    yield int(line.split()[1]), log
    proc.kill()
    proc.wait()


@pytest.fixture
def server_process(tmp_path: Path):
    log = tmp_path / "sendgrid.log"
    with slow_sendgrid(log, KEY, delay=0.3, recipients_only=False) as url:
        yield url, log


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True], ids=["inline", "workers"])
def test_kill_9_mid_send_then_resume(
    make_project, database_url, server_process, cli, monkeypatch, parallel
):
    url, log = server_process
    root = make_project(config=CONFIG + "\n[sending]\nbatch_size = 10\nconcurrency = 2\n")
    _kill_and_resume(root, database_url, log, cli, monkeypatch, parallel, url=url)


@pytest.mark.slow
def test_kill_9_mid_smtp_send_then_resume(
    make_project, database_url, smtp_process, cli, monkeypatch
):
    port, log = smtp_process
    root = make_project(
        config=CONFIG
        + '\n[sending]\ntransport = "smtp"\nbatch_size = 10\nconcurrency = 2\n'
        + f'\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )
    _kill_and_resume(root, database_url, log, cli, monkeypatch, parallel=False, url=None)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _start_send(root, database_url, monkeypatch, parallel, url, output=subprocess.DEVNULL):
    """PEOPLE subscribers, then `newsletter send --yes` in its own process: (the process,
    the engine, everyone's address)."""
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(Project.load(root).database_url)
    everyone = {f"leser{i}@example.org" for i in range(PEOPLE)}
    for address in sorted(everyone):
        add_subscriber(engine, address, first_name="Leser")
    dispose_all()

    env = {
        **os.environ,
        **({"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": url} if url else {}),
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_DATABASE_URL": database_url,
        # "workers": personalize in forked worker processes, as for a big list.
        "NEWSLETTER_SEND_PARALLEL_FROM": "1" if parallel else "1000000000",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), "send", EXAMPLE_ISSUE.stem, "--yes"],
        env=env, cwd=root, stdout=output, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return child, engine, everyone


def _kill_and_resume(root, database_url, log, cli, monkeypatch, parallel, url):
    child, engine, everyone = _start_send(root, database_url, monkeypatch, parallel, url)
    deadline = time.monotonic() + 30
    while len(received(log)) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    if url:
        # Hold the next requests at the server, so that the batch seen in flight is still in
        # flight when the kill comes (a 0.3 s answer could arrive in between on a busy
        # machine, leaving nothing in flight, which is not the case this test is about).
        set_delay(url, 10)
        time.sleep(0.5)  # the requests already at the server get their 0.3 s answers
    # Kill while a request is in flight (on a loaded machine the sender may sit between
    # batches for a while): that is the case this test is about.
    while not in_flight(engine) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert child.poll() is None, "the send finished before it could be killed"
    workers = _children(child.pid)
    assert bool(workers) == parallel, workers
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # Its forked workers end with it (they held the pool's pipes open and waited for good).
    until = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < until:
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived it"
    before = received(log)
    assert 30 <= len(before) < PEOPLE

    if url:
        set_delay(url, 0)  # answer quickly from now on
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", url)

    dead = cli(root, "sends")
    assert "its process is gone" in dead.output and "--resume" in dead.output
    again = cli(root, "send", EXAMPLE_ISSUE.stem, "--yes")
    assert again.exit_code == 1 and "--resume" in again.output

    result = cli(root, "send", "meta-ki-creator", "--resume", "--yes")  # the slug works too
    assert result.exit_code == 0, result.output
    assert "were in flight when the previous send stopped" in result.output

    got = Counter(received(log))
    assert max(got.values()) == 1, "somebody received the issue twice"
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.state).join(
                subscribers, subscribers.c.id == deliveries.c.subscriber_id
            )
        ).all()
        statuses = conn.execute(select(sends.c.status).order_by(sends.c.id)).scalars().all()
    state = {r.email: r.state for r in rows}
    uncertain = {e for e, s in state.items() if s == "uncertain"}
    # The in-flight batch(es) at the kill: at most `concurrency` batches of 10.
    assert 1 <= len(uncertain) <= 20
    assert set(state) == everyone
    assert set(got) | uncertain == everyone, "somebody was silently skipped"
    assert {s for e, s in state.items() if e not in uncertain} == {"accepted"}
    assert statuses[0] == "stopped" and statuses[-1] == "done"
    listing = cli(root, "sends", EXAMPLE_ISSUE.stem)
    assert "--resume --include-uncertain" in listing.output

    # Deliberately covering the uncertain ones: now everybody has it.
    final = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--include-uncertain", "--yes")
    assert final.exit_code == 0, final.output
    got = Counter(received(log))
    assert set(got) == everyone
    assert all(n == 1 for e, n in got.items() if e not in uncertain)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "parallel", "group"),
    [
        (signal.SIGTERM, False, False),
        (signal.SIGINT, False, True),
        (signal.SIGINT, True, True),
        (signal.SIGTERM, True, True),
    ],
    ids=["sigterm", "ctrl-c", "ctrl-c-workers", "sigterm-group-workers"],
)
def test_ctrl_c_and_sigterm_settle_what_was_handed_over(
    make_project, database_url, server_process, signum, parallel, group
):
    """Stopped by Ctrl-C (the whole process group, workers included) or by SIGTERM (`kill`,
    or systemd's stop, which signals the whole group and so kills the workers, maybe with a
    batch in hand): the send settles the requests in flight, prints one line with the resume
    command and exits 130; nobody delivered is left in flight, no worker prints a traceback."""
    url, log = server_process
    root = make_project(config=CONFIG + "\n[sending]\nbatch_size = 10\nconcurrency = 2\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(database_url)
    for i in range(PEOPLE):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    dispose_all()
    env = {
        **sender_env(url, KEY, database_url),
        "NEWSLETTER_SEND_PARALLEL_FROM": "1" if parallel else "1000000000",
    }
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "newsletter", "--project", str(root), "send", EXAMPLE_ISSUE.stem, "--yes"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(received(log)) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the send finished before it could be stopped"
    if group:
        os.killpg(child.pid, signum)  # what Ctrl-C in a terminal does, and systemd's stop
    else:
        os.kill(child.pid, signum)
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGABRT)
        out, err = child.communicate(timeout=30)
        raise AssertionError(err[-6000:]) from None
    assert child.returncode == 130, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    [line] = [line for line in err.splitlines() if line.startswith("Interrupted")]
    assert f"newsletter send {EXAMPLE_ISSUE.stem} --resume" in line and "handed over" in line
    got = received(log)
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.state).join(
                subscribers, subscribers.c.id == deliveries.c.subscriber_id
            )
        ).all()
        status = conn.execute(select(sends.c.status)).scalar_one()
    state = {r.email: r.state for r in rows}
    assert "in_flight" not in state.values()  # settled, not left for a resume to guess
    assert {e for e, s in state.items() if s == "accepted"} == set(got)
    assert status == "stopped" and 30 <= len(got) < PEOPLE


@pytest.mark.slow
def test_killed_scheduled_send_stays_scheduled_and_cancellable(
    make_project, database_url, server_process, cli, monkeypatch
):
    """`send --schedule` killed midway: the schedule and its batch id were stored before the
    first request, so `--resume` sends the rest with the same send_at and batch id, `sends`
    says the process is gone, and `cancel` finds the batch and cancels it at SendGrid."""
    url, log = server_process
    root = make_project(config=CONFIG + "\n[sending]\nbatch_size = 10\nconcurrency = 2\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(database_url)
    for i in range(PEOPLE):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    dispose_all()
    env = sender_env(url, KEY, database_url)
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), "send", EXAMPLE_ISSUE.stem,
         "--schedule", "in 2h", "--yes"],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(received(log)) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the send finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", url)
    assert "its process is gone" in cli(root, "sends").output
    resumed = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "Scheduled:" in resumed.output and "scheduled for" in resumed.output
    payloads = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert len({p["batch_id"] for p in payloads}) == 1
    assert len({p["send_at"] for p in payloads}) == 1  # the resumed part too
    got = Counter(received(log))
    assert max(got.values()) == 1
    cancelled = cli(root, "cancel", EXAMPLE_ISSUE.stem)
    assert cancelled.exit_code == 0, cancelled.output
    with engine.connect() as conn:
        statuses = set(conn.execute(select(sends.c.status)).scalars())
        rows = conn.execute(select(deliveries.c.id)).all()
    assert statuses == {"cancelled"} and rows == []
    # The fake SendGrid process recorded the cancel of that batch.
    batches = urllib.request.urlopen(f"{url}/__fake__/state", timeout=5).read()
    assert payloads[0]["batch_id"] in json.loads(batches)["scheduled_sends"]


def _workers_of(pid: int) -> list[int]:
    """The send's forked worker processes (its children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_a_worker_killed_alone_stops_the_send_then_resume(
    make_project, database_url, server_process, cli, monkeypatch
):
    """The OOM killer takes a worker process, not the sender: the send stops within seconds
    with one line saying so (exit 1, no traceback); what went out is recorded, nothing is
    left in flight, and `--resume` sends the rest: everyone gets the issue exactly once."""
    url, log = server_process
    root = make_project(config=CONFIG + "\n[sending]\nbatch_size = 10\nconcurrency = 2\n")
    child, engine, everyone = _start_send(
        root, database_url, monkeypatch, parallel=True, url=url, output=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while len(received(log)) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _workers_of(child.pid)
    assert child.poll() is None and workers, "the send finished before its worker was killed"
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 1, output
    assert "a worker process stopped (killed?)" in output and "--resume" in output
    assert "Traceback" not in output
    before = received(log)
    assert 30 <= len(before) < PEOPLE
    assert not in_flight(engine)

    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", url)
    result = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--yes")
    assert result.exit_code == 0, result.output
    got = Counter(received(log))
    assert set(got) == everyone and max(got.values()) == 1
    with engine.connect() as conn:
        states = set(conn.execute(select(deliveries.c.state)).scalars())
    assert states == {"accepted"}
