"""Ctrl-C at a command's question ("Send to 3 subscribers? [y/N]") is an interrupt like any
other (CONTRACT.md: one line, exit 130), not click's "Aborted!" and exit 1; nothing is sent
or erased. Answering no is still "Aborted!" and 1."""

from __future__ import annotations

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from tests.support.terminal import in_terminal


def test_ctrl_c_at_the_erasure_question_exits_130_and_erases_nothing(cli, make_project) -> None:  # type: ignore[no-untyped-def]
    root = make_project()
    assert cli(root, "subscribers", "add", "jörg@example.de").exit_code == 0
    code, output = in_terminal(
        ["--project", str(root), "subscribers", "remove", "jörg@example.de", "--forget"], None
    )
    assert code == 130, output
    assert "Aborted" not in output and "Traceback" not in output
    assert output.rstrip().endswith("Stopped (Ctrl-C).")
    engine = open_engine(Project.load(root).database_url)
    assert find_subscriber(engine, "jörg@example.de") is not None


def test_no_at_the_question_is_still_aborted(cli, make_project) -> None:  # type: ignore[no-untyped-def]
    root = make_project()
    assert cli(root, "subscribers", "add", "jörg@example.de").exit_code == 0
    code, output = in_terminal(
        ["--project", str(root), "subscribers", "remove", "jörg@example.de", "--forget"], "n"
    )
    assert code == 1 and "Aborted" in output
