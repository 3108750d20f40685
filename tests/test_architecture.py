"""The architecture page (docs/development/architecture.md) says what the code does: every
module of the package is in its table, and its table of who writes which database table is
what a scan of the code finds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "newsletter"
PAGE = (REPO / "docs" / "development" / "architecture.md").read_text(encoding="utf-8")
TABLES = set(
    re.findall(r"^(\w+) = Table\(", (PACKAGE / "store" / "schema.py").read_text("utf-8"), re.M)
)
SQL_WRITE = re.compile(r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.I)


def _section(title: str) -> list[list[str]]:
    """The rows of the first table under the heading `## title`, as lists of cells."""
    text = PAGE.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([\w.]+)`", cell)


def _written_tables(path: Path) -> set[str]:
    """Tables a file inserts into, updates or deletes from: in SQL text, or through
    SQLAlchemy's insert(t)/update(t)/delete(t) and t.insert()/t.update()/t.delete()."""

    def name(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        return None

    tree = ast.parse(path.read_text("utf-8"))
    # `enrollments = sequence_enrollments`: a module's short name for a table
    alias = {
        target.id: name(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and name(node.value) in TABLES
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def table(node: ast.AST) -> str | None:
        named = name(node)
        named = alias.get(named, named) if named else None
        return named if named in TABLES else None

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= {t for t in SQL_WRITE.findall(node.value) if t in TABLES}
        elif isinstance(node, ast.Call):
            verb = name(node.func)
            if verb in ("insert", "update", "delete"):
                if node.args and table(node.args[0]):
                    found.add(table(node.args[0]))  # type: ignore[arg-type]
                elif (
                    isinstance(node.func, ast.Attribute)
                    and not node.args
                    and table(node.func.value)
                ):
                    found.add(table(node.func.value))  # type: ignore[arg-type]
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_is_on_the_page_and_every_listed_one_exists() -> None:
    listed = {_names(row[0])[0] for row in _section("Packages and modules")}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert sorted(present - listed) == [], "add these to docs/development/architecture.md"
    assert sorted(listed - present) == [], "these are on the page but not in the package"


@pytest.mark.slow
def test_the_table_writers_on_the_page_are_the_ones_in_the_code() -> None:
    documented: dict[str, set[str]] = {}
    for tables_cell, owner_cell, others_cell in _section("Who writes which table"):
        tables = _names(tables_cell)
        owner = _names(owner_cell)
        # "also written by" may name the table it is about: "`sends`: `sequences.batches`"
        others: dict[str, list[str]] = {}
        for part in others_cell.split(";") if others_cell else []:
            scoped = re.match(r"\s*`(\w+)`:\s*(.*)", part)
            if scoped and scoped.group(1) in TABLES:
                others.setdefault(scoped.group(1), []).extend(_names(scoped.group(2)))
            else:
                for table in tables:
                    others.setdefault(table, []).extend(_names(part))
        for table in tables:
            documented[table] = set(owner) | set(others.get(table, []))

    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for table in _written_tables(path):
            found.setdefault(table, set()).add(_module(path))

    for table in sorted(set(found) | set(documented)):
        assert found.get(table, set()) <= documented.get(table, set()), (
            f"{table} is written by {sorted(found[table] - documented.get(table, set()))}, "
            "which the architecture page does not say"
        )
        stale = (
            documented.get(table, set())
            - found.get(table, set())
            - set(
                _names(
                    next(r[1] for r in _section("Who writes which table") if f"`{table}`" in r[0])
                )
            )
        )
        assert stale == set(), f"the page says {sorted(stale)} write {table}; they no longer do"


def test_the_scan_sees_each_way_of_writing(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "a = 'INSERT OR IGNORE INTO deliveries (x) VALUES (1)'\n"
        "b = update(schema.subscribers).values(status='x')\n"
        "c = replies.delete()\n"
        "d = 'UPDATE \"sends\" SET state = 1'\n"
        "short = sequence_state\n"
        "e = update(short)\n",
        "utf-8",
    )
    assert _written_tables(sample) == {
        "deliveries",
        "subscribers",
        "replies",
        "sends",
        "sequence_state",
    }


def test_no_test_module_imports_another() -> None:
    """Tests (and benchmarks) share through conftest.py and tests/support/, never by importing
    a test module."""
    offenders = []
    for path in sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [("." * node.level) + node.module]
                modules += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                if module.split(".")[-1].startswith("test_"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert offenders == []
