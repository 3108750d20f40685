"""What the wording tests compare: the msgids Babel's extractor finds in the code and the
templates (as `pybabel extract -F babel.cfg` does), and the problems of one catalogue."""

from __future__ import annotations

import string
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

REPO = Path(__file__).resolve().parent.parent.parent

#: A message: (msgctxt or None, msgid).
Key = tuple[str | None, str]


def extracted_messages(root: Path = REPO) -> set[Key]:
    """Every message the code and the templates use, found by Babel with babel.cfg."""
    with (root / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found: set[Key] = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        root, method_map, options_map, keywords=DEFAULT_KEYWORDS
    ):
        assert isinstance(message, str), f"{_file}:{_line}: plural forms are not used here"
        found.add((context, message))
    return found


def read_catalogue(po: Path) -> Catalog:
    with po.open("rb") as handle:
        return read_po(handle, locale=po.parent.parent.name)


def placeholders(text: str) -> set[str]:
    """The `{name}` fields of a text, as str.format sees them (`{{ … }}` is literal)."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def catalogue_problems(po: Path, used: set[Key]) -> list[str]:
    """One line per problem of the catalogue at `po`: a message in use that it lacks, one
    whose translation is empty or fuzzy, one whose placeholders differ from the msgid's, one
    it holds that nothing uses."""
    catalogue = read_catalogue(po)
    problems = []
    held: set[Key] = set()
    for message in catalogue:
        if not message.id:
            continue  # the header
        key: Key = (message.context, str(message.id))
        held.add(key)
        where = f"{po}:{message.lineno}: {key[1]!r}" + (f" ({key[0]})" if key[0] else "")
        if not message.string:
            problems.append(f"{where}: no translation")
        elif message.fuzzy:
            problems.append(f"{where}: fuzzy (check it, then drop the fuzzy flag)")
        elif placeholders(str(message.string)) != placeholders(key[1]):
            problems.append(f"{where}: placeholders differ from the msgid's")
    for context, msgid in sorted(used - held, key=str):
        problems.append(f"{po}: {msgid!r}" + (f" ({context})" if context else "") + ": missing")
    for context, msgid in sorted(held - used, key=str):
        problems.append(f"{po}: {msgid!r}" + (f" ({context})" if context else "") + ": unused")
    return problems
