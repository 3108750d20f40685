"""`subscribers import` into a list that has people already: the merge, done in bulk.

On PostgreSQL the changes of a batch of existing subscribers go in as one UPDATE per set of
changed columns (not one per person, each with a round trip and a run of the list-growth
trigger), and a new subscriber's times go through COPY as text. These tests check that what
the list then says is exactly what the rules say (both engines), and that a re-import on
PostgreSQL really is set-based.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.subscribers import add_subscriber, find_subscriber, set_status

from .conftest import CONFIG, REPO


@pytest.fixture
def engine(database_url: str):
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def growth(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT metric, sum(count) FROM list_counters GROUP BY metric")
        ).all()
    return {metric: int(total) for metric, total in rows}


def test_a_merge_changes_each_person_by_the_rules(engine, tmp_path: Path) -> None:
    add_subscriber(engine, "anna@example.de", first_name="Anna", fields={"stadt": "Köln"})
    add_subscriber(engine, "jörg@example.de", first_name="Jörg", tags=["leser"])
    add_subscriber(engine, "zoe@example.de", status="unconfirmed")
    add_subscriber(engine, "max@example.de", first_name="Max")
    gone = add_subscriber(engine, "ida@example.de", first_name="Ida")
    set_status(engine, gone.id, "unsubscribed", reason="zu viel Post")
    add_subscriber(engine, "otto@example.de", first_name="Otto", tags=["presse"])
    with engine.connect() as conn:
        untouched_stamp = conn.execute(
            select(schema.subscribers.c.updated_at).where(
                schema.subscribers.c.email_key == "otto@example.de"
            )
        ).scalar_one()
    before = growth(engine)
    source = tmp_path / "again.csv"
    source.write_text(
        "email,first name,last name,Stadt,status,tags\n"
        # a new last name and a city under another spelling of the same field
        "anna@example.de,Anna,Groß,Bad Tölz,,\n"
        # only a new tag
        "jörg@example.de,,,,,kunde\n"
        # confirmed now
        "zoe@example.de,Zoë,,,subscribed,\n"
        # unsubscribed in the other tool
        "max@example.de,,,,unsubscribed,\n"
        # stays unsubscribed: no resubscribe without the flag
        "ida@example.de,,,,subscribed,\n"
        # nothing new
        "otto@example.de,Otto,,,,presse\n"
        "neu@example.de,Lea,Weiß,München,,vip\n",
        encoding="utf-8",
    )
    started = datetime.now(UTC)
    result = import_file(engine, source)

    assert (result.new, result.updated, result.unchanged, result.kept_stopped) == (1, 4, 2, 1)
    anna = find_subscriber(engine, "anna@example.de")
    assert (anna.first_name, anna.last_name, anna.fields) == ("Anna", "Groß", {"stadt": "Bad Tölz"})
    jorg = find_subscriber(engine, "jörg@example.de")
    assert (jorg.first_name, jorg.tags) == ("Jörg", ("kunde", "leser"))
    zoe = find_subscriber(engine, "zoe@example.de")
    assert (zoe.first_name, zoe.status) == ("Zoë", "subscribed")
    assert zoe.confirmed_at is not None and zoe.confirmed_at >= started
    max_ = find_subscriber(engine, "max@example.de")
    assert max_.status == "unsubscribed"
    assert max_.unsubscribed_at is not None and max_.unsubscribed_at >= started
    ida = find_subscriber(engine, "ida@example.de")
    assert (ida.status, ida.unsubscribe_reason) == ("unsubscribed", "zu viel Post")
    otto = find_subscriber(engine, "otto@example.de")
    assert otto.tags == ("presse",)
    lea = find_subscriber(engine, "neu@example.de")
    assert (lea.first_name, lea.last_name, lea.tags) == ("Lea", "Weiß", ("vip",))
    assert lea.fields == {"stadt": "München"}  # the spelling the list already uses

    # Every change of this run carries the same time; people it left alone keep theirs.
    with engine.connect() as conn:
        stamps = dict(
            conn.execute(
                select(schema.subscribers.c.email_key, schema.subscribers.c.updated_at)
            ).all()
        )
    changed = {"anna@example.de", "jörg@example.de", "zoe@example.de", "max@example.de"}
    assert len({stamps[key] for key in changed | {"neu@example.de"}}) == 1
    assert stamps["otto@example.de"] == untouched_stamp

    # List growth: one new import, one confirmation (who joins), one unsubscribe (who leaves).
    after = growth(engine)
    difference = {m: after.get(m, 0) - before.get(m, 0) for m in after}
    assert {m: n for m, n in difference.items() if n} == {
        "new_import": 1,
        "confirmed": 1,
        "joined": 1,
        "unsubscribed": 1,
        "left": 1,
    }


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_postgres_re_import_updates_in_one_statement_per_kind_of_change(
    engine, tmp_path: Path
) -> None:
    people = [f"p{i}@example.de" for i in range(300)]
    first = tmp_path / "first.csv"
    first.write_text("email,first name\n" + "".join(f"{p},P\n" for p in people), encoding="utf-8")
    assert import_file(engine, first).new == 300

    updates: list[str] = []

    def count_updates(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE SUBSCRIBERS"):
            updates.append(statement)

    # Half get a new first name, everyone gets a tag: two kinds of change.
    again = tmp_path / "again.csv"
    again.write_text(
        "email,first name\n"
        + "".join(f"{p},{'Paula' if i % 2 else 'P'}\n" for i, p in enumerate(people)),
        encoding="utf-8",
    )
    event.listen(engine, "before_cursor_execute", count_updates)
    try:
        result = import_file(engine, again, tags=["neu"])
    finally:
        event.remove(engine, "before_cursor_execute", count_updates)

    assert result.updated == 300
    assert len(updates) == 2  # not 300
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT first_name, count(*) FROM subscribers GROUP BY first_name")
        ).all()
        tagged = conn.execute(
            text("SELECT count(*) FROM subscriber_tags WHERE tag = 'neu'")
        ).scalar_one()
    assert dict(names) == {"P": 150, "Paula": 150}
    assert tagged == 300


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_postgres_import_keeps_durable_commits_for_everyone_else(engine, tmp_path) -> None:
    """The import's own commits need not wait for the disk (a rerun writes what a crash of
    the server lost); the pooled connection it used must not keep that for other writes."""
    source = tmp_path / "list.csv"
    source.write_text("email\na@example.de\nb@example.de\n", encoding="utf-8")
    import_file(engine, source)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def tagged(engine, tag: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM subscriber_tags WHERE tag = :tag"), {"tag": tag}
            ).scalar_one()
        )


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses kill -9")
def test_kill_9_mid_merge_then_rerun_changes_everyone_once(
    make_project, database_url, tmp_path
) -> None:
    """A re-import that changes everyone, killed mid-way: the rerun finishes the merge, and
    nobody ends up with a tag twice, a second consent record or a double count."""
    project = make_project(
        config=CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    )
    engine = open_engine(database_url)
    rows = 120_000
    first, again = tmp_path / "first.csv", tmp_path / "again.csv"
    with first.open("w", encoding="utf-8") as old, again.open("w", encoding="utf-8") as new:
        old.write("email,first name,last name,tags\n")
        new.write("email,first name,last name,tags\n")
        for i in range(rows):
            old.write(f"p{i}.leserin@example.com,Jörg,Müller,leser\n")
            new.write(f"p{i}.leserin@example.com,Jörg,Weiß,leser\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "newsletter", "--project", str(project)]
    command += ["subscribers", "import", "--quiet", "--tag", "neu"]
    done = subprocess.run([*command[:-2], str(first)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before = growth(engine)

    merging = subprocess.Popen(
        [*command, str(again)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        # Killed once some chunks are in, so that it dies in the middle of another.
        while tagged(engine, "neu") < 10_000 and merging.poll() is None:
            assert time.monotonic() < deadline, "the merge wrote nothing in 60 s"
            time.sleep(0.02)
        os.kill(merging.pid, signal.SIGKILL)
    finally:
        merging.wait(timeout=30)
    halfway = tagged(engine, "neu")
    assert 0 < halfway < rows, "killed too late to test anything"
    with engine.connect() as conn:
        # Whole chunks only: whoever has the new tag has the new name too, and nobody else.
        assert (
            conn.execute(
                text("SELECT count(*) FROM subscribers WHERE last_name = 'Weiß'")
            ).scalar_one()
            == halfway
        )

    done = subprocess.run([*command, str(again)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        names = dict(
            conn.execute(
                text("SELECT last_name, count(*) FROM subscribers GROUP BY last_name")
            ).all()
        )
        records = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM import_runs), (SELECT count(*) FROM consent_records),"
                " count(DISTINCT import_run_id), count(import_run_id) FROM subscribers"
            )
        ).one()
    assert names == {"Weiß": rows}
    assert tagged(engine, "neu") == tagged(engine, "leser") == rows
    assert tuple(records) == (1, 0, 1, rows)  # the first import's record, once each
    assert growth(engine) == before == {"new_import": rows}  # a merge adds no one
    engine.dispose()
