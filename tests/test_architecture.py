"""The architecture page (docs/development/architecture.md) says what the code does: every
module of the package is in its table, its table of who writes which database table is what
a scan of the code finds, and its layer table is what the import graph keeps to (no
circles, no import up a layer but a few that say why, no imports hidden in functions)."""

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

    # One writer per table: its owner holds the SQL, the fast paths (ingest, import) included.
    shared = {t: sorted(w) for t, w in documented.items() if len(w) > 1}
    assert shared == {}, (
        f"tables with more than one writer: {shared}; move the writes into the owner"
    )

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


# --- the import graph: no circles, layers, no hidden imports -----------------------------------

#: Circles still open, each a set of modules importing each other. Remove an entry once its
#: work has merged; nothing may be added.
KNOWN_CYCLES: list[set[str]] = []

#: Files whose imports inside functions are not yet moved to the top or commented, left alone
#: to keep clear of parallel work on them (issue 23's engine, insights, wording and import
#: work). Shrink this list as that work merges; nothing may be added.
TODO_FUNCTION_IMPORTS_NOT_YET_CHECKED: tuple[str, ...] = ()
#: The files of newsletter/sequences/ that are checked after all.
CHECKED_IN_SEQUENCES = ("newsletter/sequences/config.py",)

#: The package's own modules that may still be imported inside a function (with a `# deferred:`
#: comment), because importing them at the top would load SQLAlchemy into `build`.
DEFERRED_OWN_IMPORTS = {
    ("newsletter/check.py", "newsletter.store.engine"),
    ("newsletter/check.py", "newsletter.store.subscribers"),
    # `sequences run` from cron with nothing due must not load SQLAlchemy (its precheck), and
    # the group's other commands share its module.
    ("newsletter/cli/sequences.py", "newsletter.sequences.status"),
    ("newsletter/cli/sequences.py", "newsletter.sequences.renames"),
    ("newsletter/cli/sequences.py", "newsletter.sequences.start"),
    ("newsletter/cli/sequences.py", "newsletter.store.engine"),
    ("newsletter/cli/sequences.py", "newsletter.cli.segments"),
    # ... and so must its entry point: the run itself (batches) loads SQLAlchemy.
    ("newsletter/sequences/runner.py", "newsletter.sequences.batches"),
    # The import's reader process must not load SQLAlchemy (issue 27.1): the rules of
    # store.subscribers are loaded only by a cell that needs them.
    ("newsletter/store/importer/read.py", "newsletter.store.subscribers"),
}

#: Most imports that may run from a lower layer up into a higher one (each says why).
MAX_UPWARD_IMPORTS = 3
UPWARD = "# upward:"
DEFERRED = "# deferred:"


class Import:
    """One import statement's arrow to a module of the package (or a third-party one)."""

    def __init__(self, path: Path, line: int, target: str, in_function: bool, comment: str):
        self.path, self.line, self.target = path, line, target
        self.in_function, self.comment = in_function, comment

    def __repr__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} imports {self.target}"


def _dotted(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_dotted(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _comment(lines: list[str], node: ast.stmt) -> str:
    """The comment on an import's first line, or the comment lines just above it (or above
    the run of import lines it is part of: one comment may speak for a group)."""
    own = lines[node.lineno - 1].partition("#")[2]
    if own:
        return "#" + own
    above: list[str] = []
    for line in reversed(lines[: node.lineno - 1]):
        text = line.strip()
        if not above and text.startswith(("from ", "import ")):
            continue
        if not text.startswith("#"):
            break
        above.insert(0, text.removeprefix("#").strip())
    return "# " + " ".join(above) if above else ""


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> list[Import]:
    """Every import a file runs (at module level or inside a function), resolved to the most
    specific module: `from newsletter.store import schema` is an arrow to
    `newsletter.store.schema`, `from newsletter.cli import get_project` one to `newsletter.cli`.
    Imports under `if TYPE_CHECKING:` never run, so they are no arrows."""
    text = path.read_text("utf-8")
    lines = text.splitlines()
    module = _dotted(path) if path.is_relative_to(REPO) else path.stem
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def resolve(name: str) -> str:
        if not name.startswith("newsletter"):
            return name
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_statement(other, in_function)
                continue
            visit_statement(child, in_function)

    def visit_statement(child: ast.AST, in_function: bool) -> None:
        targets: list[str] = []
        if isinstance(child, ast.Import):
            targets = [resolve(alias.name) for alias in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = package
                for _ in range(child.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [resolve(f"{base}.{alias.name}") for alias in child.names]
            if not base.startswith("newsletter"):
                targets = [base]
        if isinstance(child, ast.Import | ast.ImportFrom):
            for target in dict.fromkeys(targets):
                if target and target != module:
                    found.append(
                        Import(path, child.lineno, target, in_function, _comment(lines, child))
                    )
        visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(text), False)
    return found


def import_graph() -> dict[str, list[Import]]:
    return {
        name: [i for i in imports_of(path) if i.target in MODULES] for name, path in MODULES.items()
    }


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm):
    each is a set of modules that import each other, directly or round about."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return found


def test_no_import_circles() -> None:
    graph = {name: {i.target for i in found} for name, found in import_graph().items()}
    assert len(graph) > 100 and "newsletter.project" in graph["newsletter.issue"] | {
        "newsletter.project"
    }
    found = [sorted(c) for c in circles(graph) if c not in KNOWN_CYCLES]
    assert found == [], "these modules import each other; move what they share down a layer"


def test_the_circle_finder_finds_a_circle_round_about() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [{"a", "b", "c"}]


def layers() -> list[tuple[int, str, list[str]]]:
    """(number, name, module prefixes) from the page's layer table; 1 is the bottom."""
    found = []
    for number, name, modules in _section("Layers: which way imports may go"):
        found.append((int(number), name, [m.removesuffix("/") for m in _names(modules)]))
    return found


def layer_of(module: str) -> tuple[int, str]:
    """The layer whose longest listed name is `module` or a package holding it."""
    name = module.removeprefix("newsletter.") if module != "newsletter" else "__init__"
    best: tuple[int, int, str] | None = None
    for number, layer, prefixes in layers():
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), number, layer)
    assert best is not None, f"{module} is in no layer on docs/development/architecture.md"
    return best[1], best[2]


def test_every_module_is_in_a_layer() -> None:
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except AssertionError:
            unplaced.append(module)
    assert unplaced == [], "add these to the layer table of docs/development/architecture.md"


def test_imports_go_down_the_layers_but_for_a_few_that_say_why() -> None:
    upward = [
        found
        for module, imports in import_graph().items()
        for found in imports
        if layer_of(found.target)[0] > layer_of(module)[0]
    ]
    unexplained = [i for i in upward if not i.comment.startswith(UPWARD)]
    assert unexplained == [], (
        f"these import a higher layer; move what they need down, or (at most "
        f"{MAX_UPWARD_IMPORTS} in all) say why with a `{UPWARD} ...` comment at the import"
    )
    assert len(upward) <= MAX_UPWARD_IMPORTS, upward


def _checked_for_function_imports(path: Path) -> bool:
    relative = path.relative_to(REPO).as_posix()
    if relative in CHECKED_IN_SEQUENCES:
        return True
    return not relative.startswith(TODO_FUNCTION_IMPORTS_NOT_YET_CHECKED)


def test_imports_inside_functions_only_defer_a_costly_library_and_say_so() -> None:
    """An import inside a function hides an arrow from the layer check and the reader; it
    may only put off a slow third-party import until it is needed, with a comment saying
    what it costs (`# deferred: premailer costs 80 ms at start-up`)."""
    ours, silent = [], []
    for path in MODULES.values():
        if not _checked_for_function_imports(path):
            continue
        for found in imports_of(path):
            if not found.in_function:
                continue
            relative = (path.relative_to(REPO).as_posix(), found.target)
            if found.target.startswith("newsletter") and relative not in DEFERRED_OWN_IMPORTS:
                ours.append(found)
            elif not found.comment.startswith(DEFERRED):
                silent.append(found)
    assert ours == [], "import the package's own modules at the top of the module"
    assert silent == [], f"import at the top, or say why not with `{DEFERRED} ...`"


def test_the_import_reader_sees_what_runs_and_skips_what_does_not(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "from newsletter.store import schema\n"
        "from newsletter.cli import get_project\n"
        "if TYPE_CHECKING:\n"
        "    from newsletter.project import Project\n"
        "def f():\n"
        "    import premailer  # deferred: 80 ms\n"
        "    # upward: a reason\n"
        "    from newsletter.web import pages\n",
        "utf-8",
    )
    found = {(i.target, i.in_function, i.comment) for i in imports_of(sample)}
    assert found == {
        ("typing", False, ""),
        ("newsletter.store.schema", False, ""),
        ("newsletter.cli", False, ""),
        ("premailer", True, "# deferred: 80 ms"),
        ("newsletter.web.pages", True, "# upward: a reason"),
    }
