"""The layers, written down and enforced: the core never imports the web app or the CLI
(they call the core, not the other way round), and no code branches on a transport's name."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
OUTER = ("newsletter.web", "newsletter.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (lazy imports in functions included)."""
    tree = ast.parse(path.read_text("utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def core_files() -> list[Path]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if name == "newsletter.__main__" or name.startswith(OUTER):
            continue
        out.append(path)
    return out


def test_the_core_never_imports_web_or_cli() -> None:
    files = core_files()
    assert len(files) > 30 and any(p.name == "plan.py" for p in files)
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in files
        for line, name in _imports(path)
        if name.startswith(OUTER)
    ]
    assert offenders == []


def test_the_checker_sees_a_lazy_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from newsletter.web.pages import TEXT\n", "utf-8")
    assert (2, "newsletter.web.pages") in _imports(sample)


def test_nothing_outside_the_transports_checks_a_transport_by_name() -> None:
    """Capabilities, not names: `transport.kind == "sendgrid"`, `isinstance(t, OutboxTransport)`
    and the like are what made a new provider silently skip the ledger."""
    import re

    pattern = re.compile(
        r"""(\.kind|\.name|transport)\s*(==|!=|in)\s*\(?["'](sendgrid|outbox|smtp)["']"""
        r"""|isinstance\([^)]*(SendGrid|Outbox|Smtp)Transport"""
    )
    transports = PACKAGE / "sending" / "transports"
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if transports not in path.parents
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
