"""The plain rows of an import (address, names, tags; most of a big file): what they share
goes into the INSERT's text on SQLite, so it must come back exactly as given."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.subscribers import find_subscriber


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_source_with_quotes_and_umlauts_comes_back_as_given(
    engine, tmp_path: Path, parallel: bool
) -> None:
    source = "Lesers 'alte' Liste; „Übergangslösung“ -- \\ DROP TABLE subscribers"
    path = tmp_path / "plain.csv"
    rows = "".join(f"p{i}@example.com,Jörg{i},Groß,alt\n" for i in range(30))
    path.write_text("email,first name,last name,tags\n" + rows, encoding="utf-8")
    result = import_file(engine, path, source=source, parallel=parallel, chunk_rows=7)
    assert result.new == 30
    for i in (0, 29):
        person = find_subscriber(engine, f"p{i}@example.com")
        assert person is not None
        assert (person.source, person.first_name, person.last_name) == (source, f"Jörg{i}", "Groß")
        assert (person.status, person.tags, dict(person.fields)) == ("subscribed", ("alt",), {})
        assert person.created_at == person.confirmed_at == person.updated_at
