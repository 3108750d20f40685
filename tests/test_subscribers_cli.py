"""The `subscribers` commands, driven through the real CLI on a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import click
import pytest

from newsletter.cli.subscribers import subscribers as group


def rows(project) -> list[tuple]:
    with sqlite3.connect(project / "newsletter.db") as conn:
        return conn.execute(
            "SELECT email, status, first_name FROM subscribers ORDER BY id"
        ).fetchall()


def test_add_show_list_count(cli, project) -> None:
    result = cli(
        project,
        "subscribers", "add", "Jörg@Example.DE",
        "--first-name", "Jörg", "--last-name", "Weiß",
        "--tag", "leser", "--tag", "vip", "--field", "stadt=Köln", "--field", "gruß=„Moin“",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "added Jörg@example.de (subscribed)\n"
    assert rows(project) == [("Jörg@example.de", "subscribed", "Jörg")]

    cli(project, "subscribers", "add", "ben@example.com", "--status", "unconfirmed")
    shown = cli(project, "subscribers", "show", "jörg@example.de")
    assert shown.exit_code == 0
    assert "first_name:          Jörg" in shown.output
    assert "field gruß:          „Moin“" in shown.output
    assert "tags:                leser, vip" in shown.output
    data = json.loads(
        cli(project, "subscribers", "show", "JÖRG@example.de", "--format", "json").output
    )
    assert data["fields"] == {"stadt": "Köln", "gruß": "„Moin“"}

    table = cli(project, "subscribers", "list").output.splitlines()
    assert table[0].split() == ["ID", "EMAIL", "STATUS", "NAME", "TAGS"]
    assert "Jörg@example.de" in table[1] and "Jörg Weiß" in table[1] and "leser, vip" in table[1]
    assert "ben@example.com" in table[2] and "unconfirmed" in table[2]
    only = cli(project, "subscribers", "list", "--status", "unconfirmed").output.splitlines()
    assert len(only) == 2 and "ben@example.com" in only[1]

    assert cli(project, "subscribers", "count").output == "2\n"
    assert cli(project, "subscribers", "count", "--tag", "vip").output == "1\n"
    assert cli(project, "subscribers", "count", "--status", "subscribed").output == "1\n"


def test_list_formats_stream_csv_and_json(cli, project) -> None:
    for i in range(3):
        cli(project, "subscribers", "add", f"r{i}@example.com", "--tag", "t" if i else "u")
    out = cli(project, "subscribers", "list", "--tag", "t", "--format", "csv").output
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["email"] for r in parsed] == ["r1@example.com", "r2@example.com"]
    # (The people, not their consent records: truncated IPs and user agents are for export.)
    assert "consent" not in parsed[0]
    data = json.loads(cli(project, "subscribers", "list", "--format", "json").output)
    assert "consent" not in data[0]
    assert [d["email"] for d in data] == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert (
        json.loads(cli(project, "subscribers", "list", "--tag", "none", "--format", "json").output)
        == []
    )


def test_add_twice_and_bad_address_are_one_line_errors(cli, project) -> None:
    cli(project, "subscribers", "add", "anna@example.com")
    again = cli(project, "subscribers", "add", "ANNA@example.com")
    assert again.exit_code == 1
    assert again.output.startswith("Error: ANNA@example.com is already on the list")
    assert again.output.count("\n") == 1
    bad = cli(project, "subscribers", "add", "anna@@example.com")
    assert bad.exit_code == 1 and "is not a valid email address" in bad.output
    assert "Traceback" not in bad.output
    field = cli(project, "subscribers", "add", "x@example.com", "--field", "nokey")
    assert field.exit_code == 2 and "KEY=VALUE" in field.output
    assert rows(project) == [("anna@example.com", "subscribed", None)]


def test_tag_untag(cli, project) -> None:
    cli(project, "subscribers", "add", "anna@example.com", "--tag", "a")
    assert cli(project, "subscribers", "tag", "anna@example.com", "b", "c").output == (
        "anna@example.com: a, b, c\n"
    )
    assert cli(project, "subscribers", "untag", "anna@example.com", "a", "c").output == (
        "anna@example.com: b\n"
    )
    missing = cli(project, "subscribers", "tag", "nobody@example.com", "x")
    assert missing.exit_code == 1 and "nobody@example.com is not on the list" in missing.output


def test_remove_unsubscribes_and_forget_erases(cli, project) -> None:
    cli(project, "subscribers", "add", "anna@example.com")
    cli(project, "subscribers", "add", "ben@example.com")
    result = cli(project, "subscribers", "remove", "Anna@example.com", "--reason", "per Mail")
    assert result.output == "unsubscribed anna@example.com\n"
    with sqlite3.connect(project / "newsletter.db") as conn:
        row = conn.execute(
            "SELECT status, unsubscribe_reason, unsubscribed_at FROM subscribers "
            "WHERE email_key = 'anna@example.com'"
        ).fetchone()
    assert row[0] == "unsubscribed" and row[1] == "per Mail" and row[2]
    forgot = cli(project, "subscribers", "remove", "ben@example.com", "--forget", "--yes")
    assert forgot.exit_code == 0 and "erased ben@example.com" in forgot.output
    assert [r[0] for r in rows(project)] == ["anna@example.com"]
    missing = cli(project, "subscribers", "remove", "ben@example.com")
    assert missing.exit_code == 1 and "ben@example.com is not on the list" in missing.output


def test_show_unknown_and_bad_status(cli, project) -> None:
    result = cli(project, "subscribers", "show", "nobody@example.com")
    assert result.exit_code == 1
    assert result.output == (
        "Error: nobody@example.com is not on the list; check the address with "
        "`newsletter subscribers list`\n"
    )
    assert cli(project, "subscribers", "count", "--status", "active").exit_code == 2


@pytest.mark.slow
def test_export_to_file_and_stdout(cli, project, tmp_path) -> None:
    cli(project, "subscribers", "add", "anna@example.com", "--name", '=HYPERLINK("x")')
    target = tmp_path / "out.csv"
    result = cli(project, "subscribers", "export", "-o", str(target))
    assert result.exit_code == 0
    assert "exported 1 subscriber to" in result.output
    assert not (tmp_path / "out.csv.partial").exists()
    row = next(csv.DictReader(target.open(encoding="utf-8")))
    assert row["name"] == '\'=HYPERLINK("x")'
    as_json = json.loads(cli(project, "subscribers", "export", "--format", "json").output)
    assert as_json[0]["name"] == '=HYPERLINK("x")'  # JSON is not a spreadsheet: kept as is


def test_every_command_has_a_summary_and_an_example() -> None:
    commands: dict[str, click.Command] = {"subscribers": group, **group.commands}
    expected = {
        "subscribers",
        "add",
        "remove",
        "list",
        "count",
        "show",
        "tag",
        "untag",
        "import",
        "export",
    }
    assert expected <= set(commands)
    for name, command in commands.items():
        assert command.help and command.help.strip().splitlines()[0], name
        assert "Example:" in command.help, name


def test_cli_module_imports_nothing_heavy() -> None:
    """`newsletter --help` loads neither this module (it imports the store at its top and
    is loaded when a `subscribers` command runs) nor what it needs."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from newsletter.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(any(m.startswith(('sqlalchemy', 'email_validator', 'newsletter.cli.subscribers'))"
        " for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_list_into_a_closed_pipe_stops_quietly(cli, project, tmp_path, fmt) -> None:
    import subprocess
    import sys

    # More output than a pipe buffer holds, so `head` really closes the pipe early.
    source = tmp_path / "many.csv"
    source.write_text(
        "email\n" + "".join(f"reader{i}@example.com\n" for i in range(3000)), encoding="utf-8"
    )
    assert cli(project, "subscribers", "import", str(source)).exit_code == 0
    base = [sys.executable, "-m", "newsletter", "--project", str(project), "subscribers"]
    shell = f"{' '.join(base)} list --format {fmt} | head -n 1"
    done = subprocess.run(shell, shell=True, capture_output=True, text=True)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == ""


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_a_file_that_is_not_a_database_is_one_line(cli, project) -> None:
    (project / "newsletter.db").write_bytes(b"not a database\n" * 500)
    line = _one_line_error(cli(project, "subscribers", "count"))
    assert "newsletter.db" in line and "not a database" in line


def test_a_malformed_database_url_is_one_line_without_the_password(
    cli, project, monkeypatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "postgresql://jens:s3cret@db.invalid:port/news")
    line = _one_line_error(cli(project, "subscribers", "count"))
    assert "s3cret" not in line and "database URL" in line


def test_an_unreachable_postgresql_is_one_line_without_the_password(
    cli, project, monkeypatch
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "postgresql://jens:s3cret@127.0.0.1:1/news")
    line = _one_line_error(cli(project, "subscribers", "count"))
    assert "s3cret" not in line and "127.0.0.1" in line


@pytest.mark.slow
def test_a_damaged_table_is_one_line_without_sql_or_addresses(cli, project, tmp_path) -> None:
    source = tmp_path / "list.csv"
    source.write_text(
        "email\n" + "".join(f"reader{i}@example.com\n" for i in range(50)), encoding="utf-8"
    )
    assert cli(project, "subscribers", "import", str(source)).exit_code == 0
    from newsletter.store.engine import dispose_all

    dispose_all()
    db = project / "newsletter.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='subscribers'")
        page = root.fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as handle:  # overwrite the subscribers table's first page
        handle.seek((page - 1) * size)
        handle.write(b"\xff" * size)
    result = cli(project, "subscribers", "list")  # the table's heading is already out
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: database error: ")
    assert "malformed" in result.output
    assert "SELECT" not in result.output and "reader" not in result.output


def test_control_characters_in_a_name_stay_on_their_table_row(cli, project) -> None:
    # An import or the subscribe form may store a multi-line name or a terminal escape.
    name = "Jörg\nWeiß\x1b]0;pwned\x07 „Ö“"
    assert cli(project, "subscribers", "add", "j@example.de", "--name", name).exit_code == 0
    table = cli(project, "subscribers", "list").output.splitlines()
    assert len(table) == 2
    assert "Jörg Weiß ]0;pwned „Ö“" in table[1]
    assert not any(ord(c) < 32 for c in table[1])
    shown = cli(project, "subscribers", "show", "j@example.de").output
    assert "name:                Jörg Weiß ]0;pwned „Ö“\n" in shown
    stored = json.loads(
        cli(project, "subscribers", "show", "j@example.de", "--format", "json").output
    )
    # Stored as one line: control characters never reach a header (issue 15, item 6).
    assert stored["name"] == "Jörg Weiß ]0;pwned „Ö“"


def test_export_and_rejects_into_an_unusable_folder_are_one_line_errors(
    cli, project, tmp_path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    assert cli(project, "subscribers", "add", "a@example.com").exit_code == 0
    exported = cli(project, "subscribers", "export", "-o", str(blocker / "list.csv"))
    line = _one_line_error(exported)
    assert line.startswith(f"Error: {blocker / 'list.csv'}: cannot write it")

    source = tmp_path / "list.csv"
    source.write_text("email\nkein-at-zeichen\nb@example.com\n", encoding="utf-8")
    imported = cli(
        project, "subscribers", "import", str(source), "--rejects", str(blocker / "r.csv")
    )
    line = _one_line_error(imported)
    assert line.startswith(f"Error: {blocker / 'r.csv'}: cannot write")
    assert rows(project) == [("a@example.com", "subscribed", None)]  # nothing imported


def test_json_import_names_the_keys_it_leaves_out_and_reads_them_with_map(cli, project) -> None:
    people = [
        {"email": "j2@example.de", "Vorname": "Änne", "attribs": {"x": 1}},
        {"email": "k3@example.de", "Vorname": "Jörg", "fields": {"stadt": "Köln"}},
        {"email": "u@example.de", "status": "unsubscribed", "id": 7},
    ]
    path = project / "a.json"
    path.write_text(json.dumps(people, ensure_ascii=False), encoding="utf-8")
    result = cli(project, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "left out keys" in line]
    assert warning == [
        f'{path}: left out keys this import does not read: "Vorname" (2 rows), "attribs" (1 row);'
        ' put them under "fields" (custom fields) or read them with --map, e.g. --map '
        '"Vorname=first_name" or --map "Vorname=Vorname" (a custom field)'
    ]
    exported = {
        p["email"]: p
        for p in json.loads(cli(project, "subscribers", "export", "--format", "json").output)
    }
    # A stopped person without a time of it stopped at the import, as from a CSV file.
    assert exported["u@example.de"]["unsubscribed_at"] is not None

    mapped = cli(
        project, "subscribers", "import", str(path), "--map", "Vorname=first_name",
        "--map", "attribs=attribs",
    )  # fmt: skip
    assert mapped.exit_code == 0, mapped.output
    assert "left out keys" not in mapped.output
    exported = {
        p["email"]: p
        for p in json.loads(cli(project, "subscribers", "export", "--format", "json").output)
    }
    assert exported["j2@example.de"]["first_name"] == "Änne"
    assert exported["j2@example.de"]["fields"] == {"attribs": {"x": 1}}
    assert exported["k3@example.de"]["fields"] == {"stadt": "Köln"}

    wrong = cli(project, "subscribers", "import", str(path), "--map", "Nachname=last_name")
    assert wrong.exit_code == 1 and "the file has no column 'Nachname'" in wrong.output


def test_json_and_csv_imports_stamp_an_unsubscribe_without_a_time_alike(cli, project) -> None:
    (project / "a.json").write_text(
        '[{"email": "j@example.de", "status": "unsubscribed", "fields": {"stadt": "Köln"}}]',
        encoding="utf-8",
    )
    (project / "b.csv").write_text("email,status\nc@example.de,unsubscribed\n", encoding="utf-8")
    for name in ("a.json", "b.csv"):
        assert cli(project, "subscribers", "import", str(project / name)).exit_code == 0
    with sqlite3.connect(project / "newsletter.db") as conn:
        stamped = conn.execute(
            "SELECT email, unsubscribed_at IS NOT NULL FROM subscribers ORDER BY email"
        ).fetchall()
    assert stamped == [("c@example.de", 1), ("j@example.de", 1)]
