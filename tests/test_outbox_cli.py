"""The outbox and `send` at the command line: a second send of an issue replaces its files
(and says so), names keep non-ASCII addresses readable, `--dry-run` asks nothing, and a
test copy to the outbox is "written", not "sent"."""

from __future__ import annotations

import email
import email.policy

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber

ISSUE = """---
title: Ausgabe
slug: ausgabe
---

Hallo {{ subscriber.first_name | default("zusammen") }}!
"""


def _project(make_project):
    root = make_project(issues={"ausgabe.md": ISSUE})
    engine = open_engine(Project.load(root).database_url)
    add_subscriber(engine, "jörg@müller.example", first_name="Jörg")
    add_subscriber(engine, "anna@example.org", first_name="Anna")
    return root


def test_second_outbox_send_replaces_the_same_files_and_says_so(cli, make_project, tmp_path):
    root = _project(make_project)
    outbox = tmp_path / "outbox"
    first = cli(root, "send", "ausgabe", "--outbox", str(outbox), "--yes")
    assert first.exit_code == 0, first.output
    assert "replaced" not in first.output
    names = sorted(p.name for p in outbox.iterdir())
    assert len(names) == 2
    (outbox / names[0]).write_text("stale", encoding="utf-8")
    second = cli(root, "send", "ausgabe", "--outbox", str(outbox), "--yes")
    assert second.exit_code == 0, second.output
    assert "2 files of an earlier send of this issue were replaced." in second.output
    assert sorted(p.name for p in outbox.iterdir()) == names  # no -2 copies, no temp files
    message = email.message_from_bytes(
        (outbox / names[0]).read_bytes(), policy=email.policy.default
    )
    assert message["Subject"] == "Ausgabe"


def test_outbox_file_names_keep_non_ascii_addresses_readable(cli, make_project, tmp_path):
    root = _project(make_project)
    outbox = tmp_path / "outbox"
    assert cli(root, "send", "ausgabe", "--outbox", str(outbox), "--yes").exit_code == 0
    names = sorted(p.name for p in outbox.iterdir())
    assert any(name.endswith("jörg@müller.example.eml") for name in names), names
    assert all(name.startswith("ausgabe-") for name in names), names


def test_dry_run_never_asks_for_confirmation(cli, make_project, tmp_path):
    root = _project(make_project)
    # No --yes, and no terminal (CliRunner's stdin): a real send would refuse here.
    result = cli(root, "send", "ausgabe", "--dry-run", "--outbox", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "confirmation" not in result.output and "?" not in result.output
    assert "2 written" in result.output


def test_test_copy_to_the_outbox_says_written(cli, make_project, tmp_path):
    root = _project(make_project)
    outbox = tmp_path / "outbox"
    result = cli(root, "send", "ausgabe", "--test", "ich@example.org", "--outbox", str(outbox))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Test written: ich@example.org: written to ")
    assert "sent" not in result.output.lower().replace("as a sample subscriber", "")


def test_a_test_copy_again_replaces_the_last_one_but_single_mails_pile_up(
    cli, make_project, tmp_path
):
    """A test copy is like a send's copy (the same message again); confirmations and
    forwarded replies are messages of their own, each kept."""
    from newsletter.sending.single import send_transactional

    root = _project(make_project)
    outbox = tmp_path / "outbox"
    for _ in range(2):
        sent = cli(root, "send", "ausgabe", "--test", "ich@example.org", "--outbox", str(outbox))
        assert sent.exit_code == 0, sent.output
    assert [p.name for p in outbox.glob("*.eml")] == ["test-ausgabe-ich@example.org.eml"]
    project = Project.load(root)
    for n in range(2):
        send_transactional(project, "anna@example.org", f"Bestätigung {n}", "<p>x</p>", "x")
    kept = sorted(p.name for p in (root / "outbox").glob("transactional-*.eml"))
    assert kept == [
        "transactional-anna@example.org-2.eml",
        "transactional-anna@example.org.eml",
    ]


def test_a_file_where_the_outbox_folder_belongs_stops_the_send_before_anyone_is_claimed(
    cli, make_project
):
    root = _project(make_project)
    (root / "outbox").write_text("not a folder", encoding="utf-8")
    result = cli(root, "send", "ausgabe", "--yes")
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()[-1:]
    assert f"{root / 'outbox'}: is a file, not a folder" in line
    assert "--outbox DIR" in line
    sends = cli(root, "sends", "ausgabe")
    assert "uncertain" not in sends.output
    assert (root / "outbox").read_text(encoding="utf-8") == "not a folder"
    # Moved away, the same send goes out to both, nobody left "uncertain".
    (root / "outbox").unlink()
    again = cli(root, "send", "ausgabe", "--yes")
    assert again.exit_code == 0, again.output
    assert len(list((root / "outbox").iterdir())) == 2
