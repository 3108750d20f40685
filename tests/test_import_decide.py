"""The merge rules for rows the reader process packs as tuples (address, names, tags): the
short path `packed_changes` decides exactly as `changes` does, and a re-import through the
reader applies them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.importer.decide import changes, packed_changes
from newsletter.store.importer.model import as_incoming
from newsletter.store.subscribers import add_subscriber, find_subscriber, set_status


def test_packed_changes_agree_with_changes_for_every_combination() -> None:
    stamp = datetime(2026, 12, 7, tzinfo=UTC)
    names = (None, "", "Jörg", "Zoë")
    tag_sets = ((), ("leser",), ("leser", "vip"))
    statuses = ("subscribed", "unconfirmed", "unsubscribed", "bounced", "complained")
    compared = 0
    for first, last, tags, status, have_first, have_last, have_tags in itertools.product(
        names, names, tag_sets, statuses, names[::2], names[1::2], tag_sets
    ):
        current = {
            "id": 1, "name": None, "first_name": have_first, "last_name": have_last,
            "status": status, "fields": "{}", "unconfirmed": status == "unconfirmed",
            "tags": set(have_tags),
        }  # fmt: skip
        item = (2, "j@example.de", "j@example.de", first, last, tags)
        assert packed_changes(current, item) == changes(current, as_incoming(item), False, stamp)
        compared += 1
    assert compared == 4 * 4 * 3 * 5 * 2 * 2 * 3


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def test_a_re_import_through_the_reader_updates_names_and_tags_and_keeps_stops(
    engine, tmp_path: Path
) -> None:
    add_subscriber(engine, "jörg@example.de", first_name="Jörg", last_name="Müller", tags=["leser"])
    add_subscriber(engine, "zoe@example.de", first_name="Zoe")
    gone = add_subscriber(engine, "ida@example.de", first_name="Ida")
    set_status(engine, gone.id, "unsubscribed", reason="zu viel Post")
    source = tmp_path / "again.csv"
    source.write_text(
        "email,first name,last name,tags\n"
        "jörg@example.de,Jörg,Müller,leser\n"  # nothing new
        "zoe@example.de,Zoë,Weiß,vip\n"  # new names and a tag
        "ida@example.de,Ida,,\n"  # stays unsubscribed
        "neu@example.de,Lea,,\n",
        encoding="utf-8",
    )
    result = import_file(engine, source, parallel=True)
    assert (result.new, result.updated, result.unchanged, result.kept_stopped) == (1, 1, 2, 1)
    zoe = find_subscriber(engine, "zoe@example.de")
    assert (zoe.first_name, zoe.last_name, zoe.tags) == ("Zoë", "Weiß", ("vip",))
    jorg = find_subscriber(engine, "jörg@example.de")
    assert (jorg.first_name, jorg.last_name, jorg.tags) == ("Jörg", "Müller", ("leser",))
    ida = find_subscriber(engine, "ida@example.de")
    assert (ida.status, ida.unsubscribe_reason) == ("unsubscribed", "zu viel Post")
