"""A newcomer's rough edges (issue 12, item 13): database URLs, install hints, `init`'s
language, the test command's summary."""

from __future__ import annotations

import pytest

from tests.support.terminal import in_terminal


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("mysql://jens@db.example/newsletter", "MySQL"),
        ("mysql+pymysql://jens:geheim@db.example/newsletter", "MySQL"),
        ("mariadb://jens@db.example/newsletter", "MariaDB"),
        ("mssql+pyodbc://jens@db.example/newsletter", "Microsoft SQL Server"),
    ],
)
def test_an_unsupported_database_says_so(project, cli, monkeypatch, url, name):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    result = cli(project, "subscribers", "count")
    assert result.exit_code == 1
    message = result.output.strip()
    assert f"{name} is not supported" in message
    assert "sqlite:///" in message and "postgresql://" in message
    assert "newsletter[postgres]" not in message and "geheim" not in message
    assert len(message.splitlines()) == 1


def test_a_postgres_scheme_url_is_read_as_postgresql(monkeypatch):
    # Heroku and others hand out postgres://; SQLAlchemy only knows postgresql://.
    from newsletter.store.engine import engine_url

    assert engine_url("postgres://jens@db.example/nl") == "postgresql+psycopg://jens@db.example/nl"
    assert (
        engine_url("postgresql://jens@db.example/nl") == "postgresql+psycopg://jens@db.example/nl"
    )
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"


def test_screenshot_without_playwright_names_the_install_command_of_a_clone(
    project, cli, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "playwright", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    result = cli(project, "screenshot", "2024-07-meta-ki-creator.md")
    assert result.exit_code == 1
    assert "pip install -e '.[browser]'" in result.output
    assert "'newsletter[browser]'" not in result.output  # not on PyPI: that installs nothing


def test_init_asks_for_the_language_offering_german(tmp_path):
    from newsletter.project import Project

    _code, output = in_terminal(["init", "mein-brief"], "de", tmp_path)
    assert "de = Deutsch" in output and "en = English" in output
    project = Project.load(tmp_path / "mein-brief")
    assert project.config.language == "de"
    assert [p.name for p in project.issues_dir.glob("*.md")][0].endswith("willkommen.md")


def test_init_takes_language_without_asking(tmp_path, cli):
    from newsletter.project import Project

    result = cli(None, "init", str(tmp_path / "brief"), "--language", "de")
    assert result.exit_code == 0 and "Deutsch" not in result.output
    assert Project.load(tmp_path / "brief").config.language == "de"
    # Without a terminal (scripts, CI) nothing is asked: English, as before.
    quiet = cli(None, "init", str(tmp_path / "letter"))
    assert quiet.exit_code == 0, quiet.output
    assert Project.load(tmp_path / "letter").config.language == "en"


@pytest.mark.slow
def test_the_test_command_sums_up_skips_one_line_per_reason(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(40))\n"
        "def test_pg(n):\n    pytest.skip('NEWSLETTER_TEST_POSTGRES_URL is not set')\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_browser(n):\n    pytest.skip('chromium is not installed')\n"
        "def test_ok():\n    pass\n",
        encoding="utf-8",
    )
    # The project's own settings (pyproject's addopts) plus its conftest's summary hook.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = " + _project_addopts() + "\n", encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.skip_summary", "test_some.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout
    assert [line for line in lines if "SKIPPED" in line] == [
        "SKIPPED 40: NEWSLETTER_TEST_POSTGRES_URL is not set",
        "SKIPPED 3: chromium is not installed",
    ]
    assert lines[-1].startswith("1 passed, 43 skipped")


def _project_addopts() -> str:
    import tomllib

    from tests.conftest import REPO

    with open(REPO / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["tool"]["pytest"]["ini_options"]["addopts"]


def test_the_suite_loads_the_skip_summary():
    from tests import conftest, skip_summary

    assert conftest.pytest_terminal_summary is skip_summary.pytest_terminal_summary
