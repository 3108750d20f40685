"""A newcomer's rough edges (issue 12, item 13): database URLs, install hints, `init`'s
language, the test command's summary."""

from __future__ import annotations

import pytest


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
    assert engine_url("postgresql://jens@db.example/nl") == "postgresql+psycopg://jens@db.example/nl"
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
