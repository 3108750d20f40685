"""Babel's long date without Babel (newsletter/i18n.py): `dates_table.json` holds Babel's
compiled long-date pattern and month names per language; the text put together from them must
be Babel's own, day by day."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest
from babel.dates import format_date as babel_format_date

from newsletter import i18n
from newsletter.installed import installed_version
from tests.conftest import EXAMPLE_ISSUE, REPO

#: The shipped table is for the installed Babel (else Babel formats every date, which is right
#: but slower: regenerate it).
SHIPPED_FOR_THIS_BABEL = pytest.mark.skipif(
    json.loads(i18n.DATES_TABLE.read_text("utf-8"))["babel"] != installed_version("babel"),
    reason="dates_table.json is for another Babel: run python scripts/dates_table.py",
)


@pytest.mark.slow
@SHIPPED_FOR_THIS_BABEL
def test_the_shipped_table_is_current_and_covers_every_language():
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "dates_table.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, "run: python scripts/dates_table.py\n" + checked.stderr
    for language in i18n.LANGUAGES:
        assert i18n._shipped_long_date(language) is not None, language


@pytest.mark.slow
@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_every_day_reads_as_babel_writes_it(language):
    day, last = datetime.date(1970, 1, 1), datetime.date(2070, 12, 31)
    days = [datetime.date(year, 1, 1) for year in (1, 9, 10, 99, 100, 999, 1000, 9999)]
    while day <= last:
        days.append(day)
        day += datetime.timedelta(days=1)
    for day in days:
        assert i18n.format_date(day, language) == babel_format_date(day, "long", locale=language)
    assert i18n.format_date(datetime.date(2024, 3, 2), "de") == "2. März 2024"


def test_a_language_the_table_lacks_is_babels(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path))
    day = datetime.date(2024, 7, 2)
    assert i18n.format_date(day, "fr") == "2 juillet 2024"
    assert list((tmp_path / "dates").iterdir())  # kept for the next build
    assert i18n.format_date(day, "fr") == "2 juillet 2024"


@SHIPPED_FOR_THIS_BABEL
def test_a_build_of_a_dated_issue_does_not_load_babel(make_project, tmp_path):
    """The example issue shows its date (`2. Juli 2024`) in the masthead; with an empty
    cache, Babel (25 ms) is not imported for it."""
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    script = (
        "import sys; from pathlib import Path; from newsletter.project import Project; "
        "from newsletter.render import render_file; "
        f"html = render_file(Project.load(Path({str(root)!r})), "
        f"Path({str(root / 'issues' / EXAMPLE_ISSUE.name)!r})).html; "
        "print('babel.dates' in sys.modules, '2. Juli 2024' in html)"
    )
    env = {**os.environ, "NEWSLETTER_CACHE_DIR": str(tmp_path / "empty"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.stdout.split() == ["False", "True"], done.stderr
