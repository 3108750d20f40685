"""A first import into an empty list looks up only the addresses that an earlier chunk may
have had (a bit set of their hashes, kept by the reading side). The bit set is sized from
the file, and a false "maybe" costs a lookup, never a wrong merge or count. SQLite and
PostgreSQL, with and without the forked reader process."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.importer import process as import_process
from newsletter.store.importer.decide import KeyFilter
from newsletter.store.subscribers import find_subscriber, iter_subscribers


def test_the_bit_set_is_sized_for_the_rows_and_answers_maybe_rarely() -> None:
    assert len(KeyFilter(exact=False, rows=10).bits) == 128 << 10  # a small file: 128 KB
    assert len(KeyFilter(exact=False, rows=2_500_000).bits) == 8 << 20  # a 50 MB file
    assert len(KeyFilter(exact=False, rows=10**9).bits) == 16 << 20  # never more than 16 MB
    assert len(KeyFilter(exact=True).bits) == 0

    rows = 100_000
    seen = KeyFilter(exact=False, rows=rows)
    seen.update(f"leser{i}@example.de" for i in range(rows))
    assert all(f"leser{i}@example.de" in seen for i in range(0, rows, 97))
    unknown = [f"neu{i}@example.de" for i in range(rows)]
    assert len(seen.among(unknown)) <= rows / 16


def test_one_chunks_filter_holds_only_its_keys() -> None:
    chunk = KeyFilter.of(["a@example.de"])
    chunk.update(["b@example.de"])  # what the chunk added is never asked about again
    assert chunk.among(["a@example.de", "b@example.de"]) == ["a@example.de"]


def test_a_chunks_filter_asked_about_a_part_of_the_chunk_names_only_that_parts_keys() -> None:
    """The writer asks with the part it writes (a dict): only the keys seen before that the
    part holds, once each."""
    seen = KeyFilter.of(["c@example.de", "a@example.de", "c@example.de", "z@example.de"])
    part = {"a@example.de": 1, "b@example.de": 2, "c@example.de": 3}
    assert seen.among(part) == ["c@example.de", "a@example.de"]
    assert seen.among({"b@example.de": 2}) == []


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True])
def test_a_bit_set_that_always_says_maybe_changes_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    if parallel and not import_process.can_fork():
        pytest.skip("needs fork")
    lines = ["email,first name,tags"]
    lines += [f"p{i}@example.com,P{i},t{i % 2}" for i in range(9)]
    lines += ["P1@EXAMPLE.com,Paula,extra", "p7@example.com,,more", "p1@example.com,,"]
    source = tmp_path / "x.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def imported(url: str) -> tuple[tuple[int, ...], list[dict]]:
        engine = open_engine(url)
        result = import_file(engine, source, chunk_rows=3, parallel=parallel)
        people = [
            {k: v for k, v in s.to_dict().items() if not k.endswith("_at")}
            for s in iter_subscribers(engine)
        ]
        counts = (result.new, result.updated, result.unchanged, result.duplicates)
        return counts, people

    expected = imported(f"sqlite:///{tmp_path / 'exact.db'}")
    # One byte of bits: every address of every chunk is a "maybe" and is looked up.
    monkeypatch.setattr(KeyFilter, "BITS", 3)
    monkeypatch.setattr(KeyFilter, "MIN_BITS", 3)
    assert len(KeyFilter(exact=False, rows=1000).bits) == 1
    counts, people = imported(database_url)
    assert counts == expected[0] == (9, 0, 0, 3)
    assert people == expected[1]
    paula = find_subscriber(open_engine(database_url), "p1@example.com")
    assert paula is not None and (paula.first_name, paula.tags) == ("Paula", ("extra", "t1"))
