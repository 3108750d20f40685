"""Counted nouns in messages: `1 row`, `2 rows`, never `1 rows`."""

from __future__ import annotations


def noun(count: int, singular: str, plural_form: str | None = None) -> str:
    """The noun alone, in the number that goes with `count` (for counts shown as `1,203`)."""
    return singular if count == 1 else (plural_form or f"{singular}s")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`count` and its noun: plural(1, "row") -> "1 row", plural(3, "person", "people") ->
    "3 people"."""
    return f"{count} {noun(count, singular, plural_form)}"
