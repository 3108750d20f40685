"""The wording comes from one gettext catalogue per language: complete, current, in use.

The msgids used by the code and the templates are found with Babel's extractor and
babel.cfg, as `pybabel extract` finds them."""

from __future__ import annotations

import datetime
import gettext
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter import i18n
from newsletter.project import Project
from newsletter.render import render_file
from tests.conftest import CONFIG, REPO
from tests.support.catalogues import (
    catalogue_problems,
    extracted_messages,
    placeholders,
    read_catalogue,
)

CATALOGUES = sorted(i18n.LOCALE_DIR.glob("*/LC_MESSAGES/newsletter.po"))


def test_each_language_has_one_catalogue() -> None:
    assert i18n.LANGUAGES == ("de", "en")
    assert [po.parent.parent.name for po in CATALOGUES] == ["de", "en"]


@pytest.fixture(scope="module")
def used() -> set[tuple[str | None, str]]:
    return extracted_messages()


def test_the_extractor_finds_the_code_and_the_templates(used) -> None:
    assert (None, "Unsubscribe") in used  # footer.mjml.j2
    assert ("page title", "Unsubscribe") in used  # web/pages.py, NC_()
    assert (None, "Click rate") in used  # report.py, N_()
    assert (None, "Hello {person},") in used  # web/confirm_email.txt
    assert (None, "Every issue of “{name}” so far, to read on the web.") in used  # archive
    assert len(used) > 100


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda po: po.parent.parent.name)
def test_every_catalogue_translates_every_message_in_use(po: Path, used) -> None:
    assert catalogue_problems(po, used) == []


def test_a_missing_empty_or_fuzzy_german_text_is_reported(tmp_path: Path, used) -> None:
    text = (i18n.LOCALE_DIR / "de/LC_MESSAGES/newsletter.po").read_text(encoding="utf-8")
    broken = (
        text.replace('msgid "Imprint"\nmsgstr "Impressum"\n\n', "")
        .replace('msgid "Privacy"\nmsgstr "Datenschutz"', 'msgid "Privacy"\nmsgstr ""')
        .replace('msgid "Next issue"\n', '#, fuzzy\nmsgid "Next issue"\n')
        .replace('msgstr "Hallo {person},"', 'msgstr "Hallo {name},"')
    )
    po = tmp_path / "de" / "LC_MESSAGES" / "newsletter.po"
    po.parent.mkdir(parents=True)
    po.write_text(broken, encoding="utf-8")
    problems = catalogue_problems(po, used)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "'Hello {person},': placeholders differ from the msgid's",
        "'Next issue': fuzzy (check it, then drop the fuzzy flag)",
        "'Privacy': no translation",
        "'Imprint': missing",
    ], problems


def test_german_keeps_its_umlauts_and_typographic_quotes() -> None:
    words = i18n.texts("de", {"lead": "Subscribe to “{name}”", "next": "Next issue"}, name="Köln")
    assert words == {"lead": "„Köln“ abonnieren", "next": "Nächste Ausgabe"}


def test_an_unknown_language_reads_english() -> None:
    assert i18n.gettext_for("xx").gettext("Imprint") == "Imprint"
    assert i18n.gettext_for("de").gettext("Imprint") == "Impressum"


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda po: po.parent.parent.name)
def test_the_loaded_catalogue_is_its_po_file(po: Path) -> None:
    """The .mo (when one was built) says what the .po says: never stale text."""
    compiled = gettext.GNUTranslations(io.BytesIO(i18n.compile_catalogue(po)))
    loaded = i18n.translations(po.parent.parent.name)
    assert loaded._catalog == compiled._catalog  # type: ignore[attr-defined]


def test_a_po_edited_after_its_mo_was_built_is_compiled_on_load(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po, mo = folder / "newsletter.po", folder / "newsletter.mo"
    shutil.copy(i18n.LOCALE_DIR / "de/LC_MESSAGES/newsletter.po", po)
    mo.write_bytes(i18n.compile_catalogue(po))
    built = mo.stat().st_mtime_ns
    edited = po.read_text(encoding="utf-8").replace('msgstr "Abmelden"', 'msgstr "Austragen"')
    po.write_text(edited, encoding="utf-8")
    os.utime(po, ns=(built + 1_000_000_000, built + 1_000_000_000))  # a second later
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        assert i18n.translations("de").gettext("Unsubscribe") == "Austragen"
        assert mo.read_bytes() == i18n.compile_catalogue(po)  # rewritten for the next process
    finally:
        i18n.translations.cache_clear()


def test_dates_are_babels_long_dates() -> None:
    assert i18n.format_date(datetime.date(2026, 12, 7), "de") == "7. Dezember 2026"
    assert i18n.format_date(datetime.date(2026, 3, 1), "de") == "1. März 2026"
    assert i18n.format_date(datetime.date(2026, 12, 7), "en") == "December 7, 2026"


def test_the_masthead_dates_an_issue_in_its_language(make_project) -> None:
    root = make_project(CONFIG)
    issue = root / "issues" / "maerz.md"
    issue.write_text(
        "---\ntitle: Frühling\ndate: 2026-03-01\nnumber: 3\n---\n\nHallo „Welt“.\n",
        encoding="utf-8",
    )
    text = render_file(Project.load(root), issue).text
    assert "Ausgabe 3 · 1. März 2026" in text
    assert "Du bekommst diese E-Mail, weil du „Jens' Briefing“ abonniert hast." in text


FRENCH = {
    "Unsubscribe": "Se désabonner",
    "Issue {number}": "Numéro {number}",
    "Welcome": "Bienvenue",
    'Hi {{ subscriber.first_name | default("there") }},': (
        'Bonjour {{ subscriber.first_name | default("à tous") }},'
    ),
}


@pytest.mark.slow
def test_a_third_language_is_one_po_file(tmp_path: Path) -> None:
    """A copy of the package with fr/LC_MESSAGES/newsletter.po added speaks French, from
    `init --language fr` to the built email, its date from Babel."""
    copy = tmp_path / "checkout"
    for folder in ("newsletter", "templates"):
        shutil.copytree(
            REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "*.mo")
        )
    catalogue = read_catalogue(copy / "newsletter/locale/en/LC_MESSAGES/newsletter.po")
    catalogue.locale = "fr"  # type: ignore[assignment]
    for message in catalogue:
        if message.id in FRENCH:
            message.string = FRENCH[str(message.id)]
    from babel.messages.pofile import write_po

    french = copy / "newsletter/locale/fr/LC_MESSAGES/newsletter.po"
    french.parent.mkdir(parents=True)
    with french.open("wb") as handle:
        write_po(handle, catalogue)

    env = {**os.environ, "PYTHONPATH": str(copy)}

    def newsletter(*args: str, cwd: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    newsletter("init", "lettre", "--name", "La Lettre", "--language", "fr", cwd=tmp_path)
    project = tmp_path / "lettre"
    [sample] = (project / "issues").glob("*-bienvenue.md")
    assert 'Bonjour {{ subscriber.first_name | default("à tous") }},' in sample.read_text()
    sample.write_text(
        sample.read_text().replace("language: fr", "language: fr\nnumber: 2"), encoding="utf-8"
    )
    newsletter("build", str(sample), "-o", str(tmp_path / "out"), cwd=project)
    [text] = (tmp_path / "out").glob("*.txt")
    built = text.read_text(encoding="utf-8")
    today = datetime.date.today()
    from babel.dates import format_date

    assert f"Numéro 2 · {format_date(today, format='long', locale='fr')}" in built
    assert "Se désabonner: " in built
    assert "Bonjour Alex," in built  # the sample reader's first name


def test_placeholders_are_str_format_fields() -> None:
    assert placeholders("„{name}“ abonnieren") == {"name"}
    assert placeholders('Hallo {{ subscriber.first_name | default("zusammen") }},') == set()


def test_a_date_babel_formatted_once_comes_from_the_cache(tmp_path: Path) -> None:
    """Babel's locale data costs a build 25 ms: the next process reads the text back. (For
    the catalogues' languages Babel is not needed at all, see tests/test_dates_table.py; a
    language without a catalogue, such as French, still goes through Babel and this cache.)"""
    script = (
        "import datetime, sys; from newsletter.i18n import format_date; "
        "print(format_date(datetime.date(2026, 3, 1), 'fr')); "
        "print('babel.dates' in sys.modules)"
    )
    env = {**os.environ, "NEWSLETTER_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}

    def run() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.splitlines()

    assert run() == ["1 mars 2026", "True"]
    assert run() == ["1 mars 2026", "False"]
    [entry] = (tmp_path / "dates").iterdir()
    entry.write_text(entry.read_text(encoding="utf-8").replace("mars", "mai"), encoding="utf-8")
    assert run() == ["1 mars 2026", "True"]  # a changed entry is a miss, never a wrong date


def test_templates_a_project_copied_before_the_catalogues_still_read_their_wording(
    make_project,
) -> None:
    """`strings.<name>` (email) and `t.<name>` (pages) are filled from the catalogue."""
    old_footer = (
        "-- \n{{ newsletter.name }}\n{{ newsletter.postal_address }}\n\n{{ strings.reason }}\n"
        "{{ strings.imprint }}: {{ newsletter.imprint_url }}\n"
        "{{ strings.unsubscribe }}: {{ unsubscribe_url }}\n"
    )
    old_page = "{{ t.unsubscribe_title }} · {{ t.imprint }} · {{ t.signup_button }}"
    root = make_project(CONFIG, templates={"footer.txt.j2": old_footer})
    (root / "templates" / "web").mkdir()
    (root / "templates" / "web" / "page.html").write_text(old_page, encoding="utf-8")
    issue = root / "issues" / "alt.md"
    issue.write_text("---\ntitle: Alt\n---\n\nText.\n", encoding="utf-8")
    project = Project.load(root)
    text = render_file(project, issue).text
    assert "Du bekommst diese E-Mail, weil du „Jens' Briefing“ abonniert hast.\n" in text
    assert "Impressum: https://news.example.com/impressum\nAbmelden: " in text
    from newsletter.web import pages

    page = pages.render(project, "page.html", "de")
    assert page == "Newsletter abbestellen · Impressum · Anmelden"


def test_report_numbers_follow_the_language_through_babel():
    from newsletter.i18n import format_number, format_percent

    assert format_number(1234567, "de") == "1.234.567"
    assert format_number(1234567, "en") == "1,234,567"
    assert format_percent(0.1234, "de") == "12,3\xa0%"  # no break between number and sign
    assert format_percent(0.1234, "en") == "12.3%"
    assert format_percent(0.5, "de") == "50,0\xa0%"
