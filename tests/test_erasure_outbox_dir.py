"""Erasure finds the person's messages in a folder that `send --outbox DIR` wrote to, when
it is named with `--outbox DIR` (the project's own outbox/ is always searched), and the
prepared requests a killed send left in the temp folder."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber

ISSUE = """---
title: Ausgabe
slug: ausgabe
---

Hallo {{ subscriber.first_name | default("zusammen") }}!
"""


def _addressed_to(path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return str(message["To"])


def test_forget_with_outbox_deletes_their_copy_there_and_names_it(cli, make_project, db, tmp_path):
    root = make_project(issues={"ausgabe.md": ISSUE})
    engine = open_engine(Project.load(root).database_url)
    add_subscriber(engine, "jörg@müller.example", first_name="Jörg")
    add_subscriber(engine, "anna@example.org", first_name="Anna")
    elsewhere = tmp_path / "try-out"
    assert cli(root, "send", "ausgabe", "--outbox", str(elsewhere), "--yes").exit_code == 0
    [jorgs] = [p for p in elsewhere.glob("*.eml") if "jörg" in _addressed_to(p)]
    [annas] = [p for p in elsewhere.glob("*.eml") if "anna" in _addressed_to(p)]

    result = cli(
        root,
        "subscribers",
        "remove",
        "jörg@müller.example",
        "--forget",
        "--outbox",
        str(elsewhere),
        "--yes",
    )
    assert result.exit_code == 0, result.output
    assert f"deleted {jorgs} (a message to or about them)" in result.output
    assert not jorgs.exists()
    assert annas.exists()  # Anna's copy stays


def test_outbox_without_forget_is_a_usage_error(cli, make_project, db, tmp_path):
    root = make_project(issues={"ausgabe.md": ISSUE})
    add_subscriber(open_engine(Project.load(root).database_url), "anna@example.org")
    result = cli(root, "subscribers", "remove", "anna@example.org", "--outbox", str(tmp_path))
    assert result.exit_code == 2
    assert "--outbox only goes with --forget" in result.output
    assert "unsubscribed" not in result.output


def test_forget_removes_the_prepared_requests_a_killed_send_left_behind(
    cli, make_project, db, tmp_path
):
    # A send killed with kill -9 while its workers handed back prepared requests leaves
    # their folder in the temp dir (0700); the requests name readers.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"newsletter-send-{dead.pid}-test{os.getpid()}"
    left.mkdir(mode=0o700)
    (left / "batch").write_text('{"to": "jörg@müller.example"}', encoding="utf-8")
    try:
        root = make_project(issues={"ausgabe.md": ISSUE})
        add_subscriber(open_engine(Project.load(root).database_url), "jörg@müller.example")
        result = cli(root, "subscribers", "remove", "jörg@müller.example", "--forget", "--yes")
        assert result.exit_code == 0, result.output
        assert not left.exists()
    finally:
        shutil.rmtree(left, ignore_errors=True)
