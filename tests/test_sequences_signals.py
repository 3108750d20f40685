"""SIGTERM (systemd's stop and restart) and Ctrl-C stop `sequences run` and `serve --sequences`
cleanly (issue 28, item 3): no batch is claimed after the signal, the batches in flight are
answered and recorded, one line is printed, the exit code is 130. Nothing is left `in_flight`
for the next run to call uncertain, and nobody gets a step twice. Real processes, real signals,
the tests' SendGrid server (HTTP) and SMTP server, SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CONFIG
from tests.sendgrid_server import FakeSendGrid
from tests.smtp_server import FakeSmtp, free_port
from tests.support.sequences import (
    SEQUENCE,
    STEP1,
    add_people_due,
    ledger_states,
    newsletter_process,
    write_steps,
)

pytestmark = pytest.mark.slow

KEY = "SG.sequence-signal-key"
PEOPLE = 600


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended before {what}: {process.communicate()}")
        if time.monotonic() >= deadline:
            process.kill()  # (a failed test leaves no `serve` running behind it)
            process.communicate()
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def stop_with(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.fixture
def sendgrid():
    with FakeSendGrid(api_key=KEY, delay=0.2, log_recipients_only=True) as server:
        yield server


def sendgrid_project(make_project, database_url: str, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)  # for this test's own reads
    config = CONFIG.replace(
        'region = "global"\n', 'region = "global"\n\n[sending]\nbatch_size = 20\nconcurrency = 2\n'
    )
    root = make_project(config + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1})
    return root


def run_env(database_url: str, sendgrid: FakeSendGrid) -> dict[str, str]:
    return {
        "NEWSLETTER_DATABASE_URL": database_url,
        "SENDGRID_API_KEY": KEY,
        "SENDGRID_API_HOST": sendgrid.url,
    }


def assert_settled_then_rest_sent_once(
    root: Path, env: dict[str, str], everyone: set[str], received: Callable[[], list[str]]
) -> None:
    """After the stop: nothing in flight or uncertain, what went out is `accepted` exactly
    once; the next run sends the rest, and nobody has the step twice."""
    got = received()
    assert 0 < len(got) < len(everyone), "the stop did not land mid-run"
    states = ledger_states(root)
    assert states == {"accepted": len(got)}, states
    rerun = newsletter_process(root, "sequences", "run", **env)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "in flight when an earlier run stopped" not in out + err
    counts = Counter(received())
    assert max(counts.values()) == 1, "somebody received the step twice"
    assert set(counts) == everyone
    assert ledger_states(root) == {"accepted": len(everyone)}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_mid_run_settles_the_batches_in_flight(
    make_project, database_url, sendgrid, monkeypatch, signum
):
    root = sendgrid_project(make_project, database_url, monkeypatch)
    env = run_env(database_url, sendgrid)
    everyone = add_people_due(root, PEOPLE)
    run = newsletter_process(root, "sequences", "run", **env)
    wait_for(lambda: len(sendgrid.recipients()) >= 60, "60 were sent", run)
    code, stderr = stop_with(run, signum)

    assert code == 130, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Stopped: ")
    assert "nothing is left in flight" in lines[0]
    assert_settled_then_rest_sent_once(root, env, everyone, sendgrid.recipients)


def test_sigterm_mid_run_over_smtp_settles_the_messages_in_flight(
    make_project, database_url, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    with FakeSmtp() as smtp:
        smtp.delay = 0.02
        config = (
            CONFIG
            + '\n[sending]\ntransport = "smtp"\nbatch_size = 5\nconcurrency = 2\n'
            + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
        )
        root = make_project(config + SEQUENCE)
        write_steps(root, {"01-willkommen.md": STEP1})
        everyone = add_people_due(root, 300)
        env = {"NEWSLETTER_DATABASE_URL": database_url}
        run = newsletter_process(root, "sequences", "run", **env)
        wait_for(lambda: len(smtp.recipients()) >= 30, "30 were sent", run)
        code, stderr = stop_with(run, signal.SIGTERM)

        assert code == 130, stderr
        assert "Traceback" not in stderr
        assert [line for line in stderr.splitlines() if line.strip()] == [
            line for line in stderr.splitlines() if line.startswith("Stopped: ")
        ]
        assert_settled_then_rest_sent_once(root, env, everyone, smtp.recipients)


def test_sigterm_stops_serve_sequences_after_settling_the_run_in_progress(
    make_project, database_url, sendgrid, monkeypatch
):
    root = sendgrid_project(make_project, database_url, monkeypatch)
    env = run_env(database_url, sendgrid)
    everyone = add_people_due(root, PEOPLE)
    serve = newsletter_process(root, "serve", "--sequences", "--port", str(free_port()), **env)
    wait_for(lambda: len(sendgrid.recipients()) >= 60, "60 were sent", serve)
    code, stderr = stop_with(serve, signal.SIGTERM)

    assert code == 130, stderr
    assert "Traceback" not in stderr
    # The line comes at once (issue 26), before the run in progress settles and logs.
    assert (
        stderr.strip()
        .splitlines()
        .count(
            "Stopped (SIGTERM). Everything received so far is stored; "
            "start `newsletter serve` again to go on."
        )
        == 1
    )
    assert_settled_then_rest_sent_once(root, env, everyone, sendgrid.recipients)
