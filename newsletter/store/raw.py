"""Plain driver SQL for hot paths (webhook ingest, its counters): one statement text per call,
no SQLAlchemy compilation or per-row bind processing.

SQLAlchemy Core compiles every `select(...).where(x.in_(ids))` afresh for each list length and
runs each bound value of each row through its type's processor; for a 1,000-event webhook post
that was more CPU than the database's own work. Values are bound here exactly as SQLAlchemy
would bind them (`binder`), so rows written either way read back alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Connection
from sqlalchemy.sql.expression import Select


def storable_text(text: str) -> str:
    """`text` as every database stores it: without NUL (PostgreSQL's text refuses it) and
    without lone surrogates (UTF-8 cannot carry one; JSON, UTF-7 and the escape codecs make
    them), each of those a "?"."""
    text = text.replace("\x00", "")
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def placeholder(conn: Connection) -> str:
    """The driver's parameter marker: `?` (sqlite3) or `%s` (psycopg)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def marks(conn: Connection, count: int) -> str:
    """`count` parameter markers, comma-separated (for an IN list or a VALUES row)."""
    return ", ".join([placeholder(conn)] * count)


def json_marker(conn: Connection) -> str:
    """The marker for a JSON text bound into a JSON column."""
    return "CAST(%s AS JSON)" if conn.dialect.name == "postgresql" else "?"


def max_parameters(conn: Connection) -> int:
    """How many bound parameters one statement may carry on this database (as SQLAlchemy's
    own multi-row inserts assume: 999 for old SQLite, 32,766 for SQLite >= 3.32)."""
    return int(conn.dialect.insertmanyvalues_max_parameters)


def binder(conn: Connection, column: Column[Any]) -> Callable[[Any], Any]:
    """What SQLAlchemy does to a value bound to `column` on this database (e.g. a datetime to
    SQLite's text format); the identity where it does nothing."""
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _chunks(
    conn: Connection, sql: str, values: Sequence[Any], before: Sequence[Any], after: Sequence[Any]
) -> Iterator[Any]:
    size = max(max_parameters(conn) - len(before) - len(after) - 10, 1)
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        yield conn.exec_driver_sql(sql.format(marks(conn, len(chunk))), (*before, *chunk, *after))


def select_in(
    conn: Connection,
    sql: str,
    values: Sequence[Any],
    before: Sequence[Any] = (),
    after: Sequence[Any] = (),
) -> list[Any]:
    """Rows of `sql`, whose `{}` is replaced by an IN list of `values` (in chunks under the
    parameter limit); `before` and `after` are the parameters either side of the list."""
    return [row for result in _chunks(conn, sql, values, before, after) for row in result.all()]


def execute_in(
    conn: Connection,
    sql: str,
    values: Sequence[Any],
    before: Sequence[Any] = (),
    after: Sequence[Any] = (),
) -> int:
    """Run the statement `sql` (an UPDATE, say) like `select_in`; how many rows it changed."""
    return sum(result.rowcount or 0 for result in _chunks(conn, sql, values, before, after))


def driver_rows(conn: Connection, statement: Select[Any]) -> list[tuple[Any, ...]]:
    """Every row of `statement`, as the driver's plain tuples (see `CompiledQuery`)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = dict(compiled.params)
    if compiled.positiontup is not None:  # positional drivers (sqlite3): in this order
        params = tuple(params[name] for name in compiled.positiontup)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


class CompiledQuery:
    """A SQLAlchemy statement compiled once for this database's driver, then run on the
    driver's own cursor with one bound value changed per run (`after` for keyset paging):
    rows come back as the driver's tuples, without SQLAlchemy's per-row objects (a bulk send
    reads 100,000 rows; the Row objects took more CPU than SQLite)."""

    def __init__(self, conn: Connection, statement: Select[Any], changing: str) -> None:
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        self.sql = str(compiled)
        self.changing = changing
        self._params = dict(compiled.params)
        self._order = compiled.positiontup  # positional drivers (sqlite3): in this order

    def rows(self, conn: Connection, value: Any) -> list[tuple[Any, ...]]:
        return self.rows_with(conn, {self.changing: value})

    def rows_with(self, conn: Connection, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows with these bound values changed (any of the statement's)."""
        params: Any = {**self._params, **values}
        if self._order is not None:
            params = tuple(params[name] for name in self._order)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()
