"""Shared fixtures: real projects in tmp dirs, real databases, the real CLI."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main
from tests.sendgrid_server import FakeSendGrid
from tests.skip_summary import pytest_terminal_summary  # noqa: F401  (a pytest hook)

# Fixtures shared by several test modules, without one test module importing another.
pytest_plugins = ["tests.support.stats"]

CONFIG = """\
[newsletter]
name = "Jens' Briefing"
from_email = "jens@example.com"
from_name = "Jens"
reply_to = "jens@example.com"
postal_address = "Musterstraße 1, 10115 Berlin, Germany"
base_url = "https://news.example.com"
language = "de"
imprint_url = "https://news.example.com/impressum"

[database]
url = "sqlite:///newsletter.db"

[sendgrid]
region = "global"
"""

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ISSUE = REPO / "issues" / "2024-07-meta-ki-creator.md"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_SECRET = "test-secret-key-0123456789abcdef"
SENDGRID_KEY = "SG.test-key"


# A run started with Ctrl-C ignored (`pytest &` from a script: the shell ignores SIGINT for
# background jobs) would pass that on to every CLI process the Ctrl-C tests interrupt; they
# must get Ctrl-C as a terminal sends it. (A Python handler becomes the default on exec.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def inlined_css_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of inlined CSS per test process (never the developer's ~/.cache)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def empty_config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_CONFIG_HOME without a newsletter/env (never the developer's secrets file)."""
    return tmp_path_factory.mktemp("config-home")


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, inlined_css_cache: Path, empty_config_home: Path
) -> Iterator[None]:
    """No test sees the developer's keys, secrets file, database or cache; each gets a
    known secret."""
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(inlined_css_cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty_config_home))
    for name in (
        "SENDGRID_API_KEY",
        "SENDGRID_API_HOST",
        "NEWSLETTER_DATABASE_URL",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        "NEWSLETTER_INBOUND_SECRET",
        "NEWSLETTER_PROJECT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    yield
    from newsletter.store.engine import dispose_all

    dispose_all()


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a project folder; `make_project(config=..., issues={"x.md": "..."})`."""

    def make(
        config: str = CONFIG,
        issues: dict[str, str] | None = None,
        templates: dict[str, str] | None = None,
        name: str = "project",
    ) -> Path:
        root = tmp_path / name
        (root / "issues").mkdir(parents=True, exist_ok=True)
        (root / "newsletter.toml").write_text(config, encoding="utf-8")
        for filename, text in (issues or {}).items():
            (root / "issues" / filename).write_text(text, encoding="utf-8")
        if templates:
            (root / "templates").mkdir(exist_ok=True)
            for filename, text in templates.items():
                (root / "templates" / filename).write_text(text, encoding="utf-8")
        return root

    return make


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    """A project holding the example issue."""
    root = make_project()
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(
        EXAMPLE_ISSUE.read_text(encoding="utf-8"), encoding="utf-8"
    )
    return root


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's database, made the project's (NEWSLETTER_DATABASE_URL); its URL."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    return database_url


@pytest.fixture
def issue_project(
    make_project: Callable[..., Path], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """`issue_project(config)`: a project holding the example issue, on this test's
    database (NEWSLETTER_DATABASE_URL is set to `database_url`)."""

    def make(config: str = CONFIG) -> Path:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
        root = make_project(config=config)
        (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
        return root

    return make


@pytest.fixture
def sg(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    """The fake SendGrid on loopback (the project's sender verified), and the environment
    that points the CLI at it."""
    with FakeSendGrid(api_key=SENDGRID_KEY, verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_KEY", SENDGRID_KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        yield server


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run the real CLI in-process: `cli(project, "build", "x.md")`."""

    def run(project_dir: Path | None, *args: str, input: str | None = None) -> Result:
        argv = (["--project", str(project_dir)] if project_dir else []) + list(args)
        return CliRunner().invoke(main, argv, input=input, catch_exceptions=False)

    return run


def _postgres_url() -> str | None:
    url = os.environ.get("NEWSLETTER_TEST_POSTGRES_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # set by pytest-xdist (`pytest -n 2`)
    return _worker_database(url, worker) if url and worker else url


@functools.cache
def _worker_database(url: str, worker: str) -> str:
    """Each parallel test process gets its own database next to the given one (tests empty
    the schema before each test, which must not hit another process's test)."""
    from sqlalchemy import create_engine, text

    base, _, name = url.rpartition("/")
    own = f"{name}_{worker}"
    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        if not conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": own}
        ).first():
            conn.execute(text(f'CREATE DATABASE "{own}"'))
    engine.dispose()
    return f"{base}/{own}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each engine: SQLite always, PostgreSQL when
    NEWSLETTER_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    url = _postgres_url()
    if not url:
        pytest.skip("NEWSLETTER_TEST_POSTGRES_URL is not set")
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser test starts chromium: it is slow, as the `slow` marker says, wherever it
    is, so `pytest -m "not slow"` leaves every one out."""
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
