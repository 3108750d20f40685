"""Open the project's database (SQLite by default, PostgreSQL by URL) and migrate it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from newsletter.errors import StoreError, database_error
from newsletter.store.migrations import migrate

if TYPE_CHECKING:
    from newsletter.project import Project

_engines: dict[str, Engine] = {}


#: How often a connection asks again for WAL mode that was refused as locked, 20 ms apart.
WAL_SWITCH_TRIES = 100


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL makes NORMAL safe against corruption; a crash may lose only the last commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Processes opening a new database at once (two commands started together, say): the
    # switch of one of them can be refused as locked at once, without the busy wait, while
    # another is making the file; it goes through once that one is done (2 in 560 such
    # openings failed with "database is locked" before).
    for attempt in range(1, WAL_SWITCH_TRIES + 1):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_TRIES:
                raise
            time.sleep(0.02)


def _no_automatic_checkpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def defer_checkpoints(engine: Engine) -> None:
    """SQLite: commits on `engine` no longer copy the write-ahead log back into the database
    file themselves (SQLite's automatic checkpoint: whichever commit takes the log past
    1,000 pages writes them all again and waits for two fsyncs, half of a webhook post's
    answer time with a million events stored). The caller runs `checkpoint(engine)` when
    nobody waits on it (`serve`: after answering, and every few seconds). Nothing changes
    for a kill -9: committed transactions are in the log, and the next open replays it.
    A no-op on PostgreSQL."""
    in_memory = engine.url.database in (None, "", ":memory:")  # no log; dispose would lose it
    if (
        engine.dialect.name != "sqlite"
        or in_memory
        or event.contains(engine, "connect", _no_automatic_checkpoint)
    ):
        return
    event.listen(engine, "connect", _no_automatic_checkpoint)
    engine.dispose()  # pooled connections made before would still checkpoint


def others_have_it_open(engine: Engine) -> bool:
    """Whether another process has this SQLite database open, so that a long writer should
    give it turns at the write lock. SQLite keeps a shared lock on its `-shm` file for as
    long as a connection is open; Linux lists every such lock in /proc/locks. True wherever
    that cannot be told (another system, another database, no lock of this process's own
    found there): then the writer behaves as if someone were waiting."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return True
    try:
        shm = os.stat(f"{database}-shm")
        locks = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    file = f"{os.major(shm.st_dev):02x}:{os.minor(shm.st_dev):02x}:{shm.st_ino}"
    holders = set()
    for line in locks.splitlines():
        fields = line.split()  # "1: POSIX  ADVISORY  READ  4242 fe:00:3809373 128 128"
        if file in fields[1:]:
            holders.add(fields[fields.index(file) - 1])
    me = str(os.getpid())
    return me not in holders or len(holders) > 1


def checkpoint(engine: Engine) -> None:
    """Copy the write-ahead log's committed pages into the database file without waiting
    for readers (SQLite's PASSIVE checkpoint); a no-op on PostgreSQL."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def redact(url: str) -> str:
    """The URL without its password, for error messages; a password holding an unescaped
    "@" is hidden whole (the URL parser would take its end for the host)."""
    if url.startswith("sqlite"):
        return url  # (a file's path, as given: no password)
    if _password_holds_at(url):
        scheme, _, rest = url.partition("://")
        at = _authority(rest).rfind("@")
        return f"{scheme}://{rest[:at].partition(':')[0]}:***@{rest[at + 1 :]}"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid database URL>"


def _password_holds_at(url: str) -> bool:
    """Whether the part before the host (user:password) holds a second "@". A file URL
    (SQLite) has no host, and its path may hold any "@"."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.startswith("sqlite"):
        return False
    authority = _authority(rest)
    userinfo = authority[: authority.rfind("@")] if "@" in authority else ""
    return "@" in userinfo and ":" in userinfo


def _authority(rest: str) -> str:
    """user:password@host:port of a URL after its "://": up to the first "/" (RFC 3986:
    userinfo holds no "/"; a query, which may hold an "@", comes after it)."""
    return rest.partition("/")[0]


#: Databases SQLAlchemy knows but the store does not support, by URL scheme.
_UNSUPPORTED = {
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "mssql": "Microsoft SQL Server",
    "oracle": "Oracle",
}
_SUPPORTED_HINT = "use sqlite:///FILE or postgresql://USER@HOST/DB"


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for a configured one: psycopg 3 (the driver of the `postgres`
    extra) for postgresql:// and Heroku-style postgres:// URLs."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def _refuse_unsupported(url: str) -> None:
    backend = url.partition(":")[0].partition("+")[0].lower()
    if backend in _UNSUPPORTED:
        raise StoreError(
            f"database URL {redact(url)!r}: {_UNSUPPORTED[backend]} is not supported; "
            + _SUPPORTED_HINT
        )


def open_engine(url: str) -> Engine:
    """An engine for `url`, migrated to the current schema. Cached per URL per process."""
    url = engine_url(url)
    if url in _engines:
        return _engines[url]
    _refuse_unsupported(url)
    if _password_holds_at(url):
        raise StoreError(
            f"database URL {redact(url)!r}: its password holds an @, which a URL reads as "
            "the start of the host; write each @ in the password as %40"
        )
    try:
        # A server-side database may have restarted since a pooled connection was made:
        # check each one before use, so one-click unsubscribes never meet a dead connection.
        # psycopg prepares a statement after 5 runs, and PostgreSQL may then keep one generic
        # plan for the whole session: planned while a table was small (a seq scan), a
        # 1000-key lookup stays a seq scan as an import grows the table (2 s a chunk at 250k
        # rows). Plan each statement afresh instead.
        connect_args = {"prepare_threshold": None} if url.startswith("postgresql+psycopg") else {}
        engine = create_engine(
            url,
            future=True,
            pool_pre_ping=not url.startswith("sqlite"),
            connect_args=connect_args,
        )
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:  # ValueError: a bad port
        raise StoreError(
            f"database URL {redact(url)!r} is not usable ({exc}); " + _SUPPORTED_HINT
        ) from None
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"database URL {redact(url)!r} needs the {exc.name} module; "
            "pip install 'newsletter[postgres]'"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        if migrate(engine) and engine.dialect.name == "sqlite":
            # A step may have switched foreign keys off on its connection: start afresh.
            engine.dispose()
    except DBAPIError as exc:  # unreachable, refused, or not a database at all
        engine.dispose()
        raise StoreError(
            f"cannot open database {redact(url)}: {database_error(exc)}; check [database] url "
            "or NEWSLETTER_DATABASE_URL"
        ) from None
    _engines[url] = engine
    return engine


def dispose_all() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def project_engine(project: Project) -> Engine:
    """The engine for a project's database (`NEWSLETTER_DATABASE_URL` or `[database] url`)."""
    return open_engine(project.database_url)
