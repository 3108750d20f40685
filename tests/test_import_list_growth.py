"""`subscribers import` and the list-growth counters (issue 27).

A bulk import adds up each chunk's growth itself instead of letting a trigger count each row
(on SQLite the insert triggers are set aside inside the chunk's transaction). These tests
check that the counters say exactly what the triggers would have said, and that the triggers
are always back afterwards: after an import, a dry run, a rolled-back chunk and a kill -9.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.subscribers import BulkWriter, add_subscriber, count_subscribers

from .conftest import CONFIG
from .support.imports import kill_import_after

ALL_TRIGGERS = {
    "sqlite": {
        "list_counters_insert",
        "list_counters_insert_unconfirmed",
        "list_counters_update",
        "list_counters_delete",
    },
    "postgresql": {"list_counters_insert", "list_counters_update", "list_counters_delete"},
}


@pytest.fixture
def engine(database_url: str):
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def triggers(engine) -> set[str]:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            sql = (
                "SELECT tgname FROM pg_trigger "
                "WHERE NOT tgisinternal AND tgrelid = 'subscribers'::regclass"
            )
        return {row[0] for row in conn.execute(text(sql))}


def growth(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT metric, sum(count) FROM list_counters GROUP BY metric")
        ).all()
    return {metric: int(n) for metric, n in rows if n}


def own_export(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A file in `subscribers export`'s format: (email, status, source) per row."""
    lines = ["email,name,first_name,last_name,status,tags,source,created_at"]
    lines += [f"{email},,Jörg,Müller,{status},leser,{source}," for email, status, source in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_import_counts_each_row_as_the_triggers_would(engine, tmp_path) -> None:
    rows = [
        *[(f"form{i}@example.de", "subscribed", "form") for i in range(3)],
        *[(f"wartet{i}@example.de", "unconfirmed", "cli") for i in range(2)],
        *[(f"mc{i}@example.de", "subscribed", "import:mailchimp") for i in range(2)],
        ("weg@example.de", "unsubscribed", "form"),
        ("prallt@example.de", "bounced", "import:csv"),
        ("leer@example.de", "subscribed", ""),  # no source: the import's own ("import")
        ("wartet.import@example.de", "unconfirmed", "import:ghost"),
    ]
    result = import_file(engine, own_export(tmp_path / "export.csv", rows), chunk_rows=4)
    assert result.new == len(rows)
    assert growth(engine) == {
        "new_form": 3,
        "new_added": 2,  # source "cli"
        "new_import": 4,  # two import:mailchimp, the one without a source, import:ghost
        "unconfirmed_new": 3,
    }
    assert triggers(engine) == ALL_TRIGGERS[engine.dialect.name]

    # A plain file with a --source of the user's own: counted as added, not imported.
    plain = tmp_path / "freunde.csv"
    plain.write_text("email\n" + "".join(f"f{i}@example.de\n" for i in range(5)), "utf-8")
    import_file(engine, plain, source="freunde")
    assert growth(engine)["new_added"] == 2 + 5

    # The triggers still count what comes later.
    add_subscriber(engine, "danach@example.de")
    assert growth(engine)["new_added"] == 2 + 5 + 1
    assert triggers(engine) == ALL_TRIGGERS[engine.dialect.name]


def test_a_dry_run_counts_nothing_and_keeps_the_triggers(engine, tmp_path) -> None:
    source = tmp_path / "x.csv"
    source.write_text("email\n" + "".join(f"p{i}@example.de\n" for i in range(10)), "utf-8")
    assert import_file(engine, source, dry_run=True, chunk_rows=4).new == 10
    assert growth(engine) == {}
    assert triggers(engine) == ALL_TRIGGERS[engine.dialect.name]


def test_a_rolled_back_chunk_counts_nothing_and_keeps_the_triggers(
    engine, tmp_path, monkeypatch
) -> None:
    source = tmp_path / "x.csv"
    source.write_text("email\n" + "".join(f"p{i}@example.de\n" for i in range(10)), "utf-8")
    real_insert = BulkWriter.insert
    calls = {"n": 0}

    def crashing_insert(self, *args):
        calls["n"] += 1
        real_insert(self, *args)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second chunk's rows went in

    monkeypatch.setattr(BulkWriter, "insert", crashing_insert)
    with pytest.raises(KeyboardInterrupt):
        import_file(engine, source, chunk_rows=4)
    monkeypatch.setattr(BulkWriter, "insert", real_insert)
    assert growth(engine) == {"new_import": 4}  # the first chunk, committed
    assert triggers(engine) == ALL_TRIGGERS[engine.dialect.name]
    add_subscriber(engine, "danach@example.de")
    assert growth(engine) == {"new_import": 4, "new_added": 1}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses kill -9")
def test_kill_9_mid_import_then_rerun_counts_everyone_once(
    make_project, database_url, tmp_path
) -> None:
    project = make_project(
        config=CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    )
    engine = open_engine(database_url)
    rows = 120_000
    source = tmp_path / "big.csv"
    with source.open("w", encoding="utf-8") as handle:
        handle.write("email,first name,last name,tags\n")
        for i in range(rows):
            handle.write(f"p{i}.leserin@example.com,Jörg{i},Müller,leser\n")
    command, env = kill_import_after(project, source, lambda: count_subscribers(engine))
    written = count_subscribers(engine)
    assert written > 0
    assert triggers(engine) == ALL_TRIGGERS[engine.dialect.name]
    assert growth(engine) == {"new_import": written}

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert count_subscribers(engine) == rows
    assert growth(engine) == {"new_import": rows}
    assert triggers(engine) == ALL_TRIGGERS[engine.dialect.name]
    engine.dispose()


def test_awkward_values_arrive_as_written(engine, tmp_path) -> None:
    """PostgreSQL takes the rows through COPY: backslashes, a literal \\N (COPY's NULL), quotes,
    umlauts and custom fields must arrive exactly as in the file (and so on SQLite)."""
    source = tmp_path / "awkward.csv"
    source.write_text(
        "email,first name,last name,Stadt,tags\n"
        'jörg@example.de,J\\N,"Mül""ler\\t",Bad Tölz,"„Früh“ dabei"\n'
        "anna@example.de,\\N,Back\\slash,,leser\n"
        "plain@example.de,Zoë,Weiß,,\n",
        encoding="utf-8",
    )
    result = import_file(engine, source)
    assert (result.new, result.rejected) == (3, 0)
    from newsletter.store.subscribers import find_subscriber

    jorg = find_subscriber(engine, "jörg@example.de")
    assert (jorg.first_name, jorg.last_name) == ("J\\N", 'Mül"ler\\t')
    assert jorg.fields == {"Stadt": "Bad Tölz"}
    assert jorg.tags == ("„Früh“ dabei",)
    anna = find_subscriber(engine, "anna@example.de")
    assert (anna.first_name, anna.last_name, anna.fields) == ("\\N", "Back\\slash", {})
    zoe = find_subscriber(engine, "plain@example.de")
    assert (zoe.first_name, zoe.last_name, zoe.tags) == ("Zoë", "Weiß", ())
    assert growth(engine) == {"new_import": 3}
