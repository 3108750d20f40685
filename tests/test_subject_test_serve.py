"""`newsletter serve --run-due` carries out a subject-line test without the author's laptop:
a real serve process decides and sends the winner to the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.sendgrid_server import FakeSendGrid, copies
from tests.support.serve_processes import free_port

KEY = "SG.subject-serve-key"
ISSUE = EXAMPLE_ISSUE.stem
SUBJECT_A = "Meta, KI und das Ende der Creator?"


@pytest.mark.slow
def test_serve_decides_and_sends_the_rest(make_project, database_url, monkeypatch, cli):
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
        root = make_project(config=CONFIG)
        (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
        readers = [f"leser{i}@example.de" for i in range(10)]
        for address in readers:
            assert cli(root, "subscribers", "add", address).exit_code == 0
        started = cli(
            root, "send", ISSUE, "--subject-b", "Anders", "--sample", "40%",
            "--decide-after", "0", "--by", "replies", "--yes",
        )  # fmt: skip
        assert started.exit_code == 0, started.output
        assert sum(len(m["personalizations"]) for m in sg.messages) == 4

        engine = open_engine(Project.load(root).database_url)
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--project", str(root), "serve", "--port",
             str(port), "--run-due"],
            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            finished = None
            while finished is None and time.monotonic() < deadline:
                with engine.connect() as conn:
                    finished = conn.execute(select(schema.subject_tests.c.finished_at)).scalar()
                time.sleep(0.2)
        finally:
            serve.terminate()
            _, stderr = serve.communicate(timeout=30)
        assert finished is not None, stderr
        assert "Doing what is due (subject-line tests) every minute." in stderr
        got = [(c["to"][0]["email"], c["subject"]) for m in sg.messages for c in copies(m)]
        assert Counter(a for a, _ in got) == Counter(readers)
        rest = got[4:]
        # Nobody replied: within noise, A wins, and the rest get A.
        assert len(rest) == 6 and {s for _, s in rest} == {SUBJECT_A}
