"""The wording readers and authors see, in their language: one gettext catalogue per language.

The texts live in `newsletter/locale/<language>/LC_MESSAGES/newsletter.po` (UTF-8); the msgids
are the English texts, with `{name}`-style placeholders filled by `str.format`. Babel extracts
them from the code and the templates (`babel.cfg`) and compiles each `.po` into the `.mo` that
is read here. A language is a catalogue: `LANGUAGES` lists the folders that hold one.

- `translations(language)`: the catalogue, loaded once per process and language.
- `texts(language, names)`: `{name: translated msgid}`, for templates that read a dict
  (`strings`, `t`) and for code that names its texts.
- `install(env, language)`: Jinja2's i18n extension, so templates say `{{ _("Imprint") }}`.
- `format_date(day, language)`: Babel's long date, "7. Dezember 2026" / "December 7, 2026".

The `.mo` files are compiled when the package is built or installed (`hatch_build.py`; the
wheel ships only them). In a checkout, a `.po` newer than its `.mo` (edited, not
reinstalled), or without a `.mo` yet, is compiled when it is loaded, and the `.mo` rewritten
(as Python rewrites a stale `.pyc`): the text shown is always the `.po`'s, never stale.
"""

from __future__ import annotations

import contextlib
import datetime
import gettext
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.cache import private_folder, read_entry, write_entry
from newsletter.errors import NewsletterError
from newsletter.installed import file_stamp, installed_version

if TYPE_CHECKING:
    import jinja2

DOMAIN = "newsletter"
LOCALE_DIR = Path(__file__).parent / "locale"
#: What Babel's long date is made of, per language (scripts/dates_table.py writes it).
DATES_TABLE = Path(__file__).with_name("dates_table.json")
#: What a missing or unknown language falls back to: the msgids are English.
SOURCE_LANGUAGE = "en"


def catalogue_path(language: str, suffix: str = ".po") -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}{suffix}"


def _languages() -> tuple[str, ...]:
    try:
        folders = sorted(p.name for p in LOCALE_DIR.iterdir())
    except OSError:
        return (SOURCE_LANGUAGE,)
    # A checkout has the .po files; a wheel only the compiled .mo files.
    return tuple(
        name
        for name in folders
        if catalogue_path(name).is_file() or catalogue_path(name, ".mo").is_file()
    )


#: The languages there is wording for: one per catalogue in newsletter/locale/.
LANGUAGES: tuple[str, ...] = _languages()


def N_(message: str) -> str:  # noqa: N802 (gettext's name for "mark for extraction only")
    """Mark `message` for `pybabel extract` where it is translated later, by name."""
    return message


def NC_(context: str, message: str) -> tuple[str, str]:  # noqa: N802
    """Mark `message` with its msgctxt (the same English, another German) for extraction
    (`babel.cfg` declares `NC_:1c,2`); translated later, by name."""
    return (context, message)


@cache
def translations(language: str) -> gettext.GNUTranslations:
    """The catalogue of `language`, loaded once per process: its `.mo`, or, where the `.mo` is
    missing or not newer than the `.po` (a `.po` edited in a checkout), the `.po` compiled anew,
    so stale text is never shown; the fresh `.mo` is written for the next process."""
    po, mo = catalogue_path(language), catalogue_path(language, ".mo")
    if mo.is_file() and (not po.is_file() or _mtime(mo) > _mtime(po)):
        with mo.open("rb") as handle:
            return gettext.GNUTranslations(handle)
    if not po.is_file():
        raise NewsletterError(
            f"{po}: no wording for language {language!r}; use one of: {', '.join(LANGUAGES)}"
        )
    compiled = compile_catalogue(po)
    _write_quietly(mo, compiled)
    return gettext.GNUTranslations(io.BytesIO(compiled))


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def _write_quietly(path: Path, data: bytes) -> None:
    """Replace `path` atomically (parallel processes may compile at once); where it cannot be
    written (a read-only install), each process compiles in memory instead."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def compile_catalogue(po: Path) -> bytes:
    """The `.mo` bytes of a `.po` file, as `pybabel compile` writes them (fuzzy entries left
    out)."""
    # deferred: babel.messages costs 22 ms at start-up; only a changed .po file needs it
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as handle:
        catalog = read_po(handle, locale=po.parent.parent.name, domain=DOMAIN)
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


def gettext_for(language: str) -> gettext.GNUTranslations:
    """The catalogue of `language`, else of the source language (English)."""
    return translations(language if language in LANGUAGES else SOURCE_LANGUAGE)


def texts(
    language: str, names: Mapping[str, str | tuple[str, str]], **values: object
) -> dict[str, str]:
    """`{name: text}` for `names` (`name -> msgid`, or `name -> (msgctxt, msgid)`), translated
    into `language`; with `values`, their `{placeholders}` filled in."""
    catalogue = gettext_for(language)
    out = {}
    for name, message in names.items():
        text = (
            catalogue.pgettext(*message)
            if isinstance(message, tuple)
            else catalogue.gettext(message)
        )
        out[name] = text.format(**values) if values else text
    return out


def install(env: jinja2.Environment, language: str) -> None:
    """Give `env`'s templates `_()`, `gettext()` and `pgettext()` in `language` (the
    environment needs `extensions=["jinja2.ext.i18n"]`). Old-style callables on purpose: a
    translation is text, escaped like any other value, not trusted HTML."""
    env.install_gettext_translations(gettext_for(language), newstyle=False)  # type: ignore[attr-defined]


def display_name(language: str) -> str:
    """The language's name in itself: `Deutsch`, `English` (Babel's locale data)."""
    from babel import Locale  # deferred: babel costs 16 ms at start-up; only when asked

    return str(Locale.parse(language).display_name)


def format_date(day: datetime.date, language: str) -> str:
    """Babel's long date in `language`: `7. Dezember 2026`, `December 7, 2026`.

    Babel loads its whole locale data for it (25 ms, a sixth of a `build` whose CSS is
    cached). For the catalogues' languages the package ships what Babel's long date is made
    of (`dates_table.json`: its pattern compiled by Babel, and the month names), so the text
    is put together without Babel; other languages (or another Babel) use Babel, and the text
    is kept in the user's cache, keyed by the installed Babel: the next build reads it back."""
    shipped = _shipped_long_date(language)
    if shipped is not None:
        pattern, months = shipped
        return pattern % {"d": day.day, "MMMM": months[day.month - 1], "y": day.year}
    folder = private_folder("dates")
    path = folder / f"{_babel_stamp()}-{language}-{day.isoformat()}.txt" if folder else None
    if path is not None and (cached := read_entry(path)):
        return cached
    # deferred: babel.dates costs 17 ms at start-up; only when the cache has no text
    from babel.dates import format_date as babel_format_date

    text = str(babel_format_date(day, format="long", locale=language))
    if folder is not None and path is not None:
        write_entry(folder, path, text)
    return text


def format_number(value: float, language: str) -> str:
    """A number with the language's grouping and decimal sign: `1.234.567`, `2,5`."""
    from babel.numbers import format_decimal  # deferred: as babel.dates; only the report

    return str(format_decimal(value, locale=language))


def format_percent(rate: float, language: str) -> str:
    """A rate as a percentage with one decimal, in the language's own pattern: `12,3 %`
    (with a no-break space), `12.3%`."""
    from babel import Locale  # deferred: as babel.dates; only the report
    from babel.numbers import format_percent as babel_format_percent  # deferred: as above

    pattern = Locale.parse(language).percent_formats[None].pattern
    one_decimal = re.sub(r"0(?=[^0#,.]*%)", "0.0", pattern, count=1)
    return str(babel_format_percent(rate, format=one_decimal, locale=language))


@cache
def _shipped_long_date(language: str) -> tuple[str, list[str]] | None:
    """Babel's long-date pattern (as a %-format of the fields d, MMMM and y) and wide month
    names for `language`, from `dates_table.json` when it was written by the installed Babel
    (scripts/dates_table.py; tests/test_dates_table.py checks it against Babel, day by day)."""
    version = installed_version("babel")
    try:
        table = json.loads(DATES_TABLE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = table.get("languages", {}).get(language)
    if version is None or table.get("babel") != version or not entry:
        return None
    return str(entry["pattern"]), [str(month) for month in entry["months"]]


@cache
def _babel_stamp() -> str:
    """The installed Babel (its package file's path, size and mtime: an upgrade changes
    them), found without importing it; short enough for a file name."""
    stamp = file_stamp("babel")
    return hashlib.sha256(stamp.encode()).hexdigest()[:16] if stamp else "babel"
