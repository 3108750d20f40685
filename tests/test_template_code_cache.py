"""Compiled templates are kept in the user's cache (newsletter/render.py, TemplateCodeCache):
a later process loads them instead of compiling the email's eight templates again, an edited
template is compiled afresh, a damaged entry is a miss, and errors still name the template
file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2

from newsletter import render
from newsletter.project import Project
from newsletter.render import render_file
from tests.conftest import EXAMPLE_ISSUE, REPO

FOOTER = "<mj-section><mj-column><mj-text>Fußzeile {{ newsletter.name }}</mj-text></mj-column></mj-section>\n"


def _fresh_render(root: Path, issue: Path, monkeypatch) -> tuple[str, int]:
    """The email's HTML and how many template files were compiled, as in a new process (the
    environments of earlier renders are forgotten; expressions of the issue's own text are
    compiled from strings, and not counted)."""
    monkeypatch.setattr(render, "_environments", {})
    compiled = []
    original = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        if filename is not None:
            compiled.append(name)
        return original(self, source, name, filename, raw, defer_init)

    with monkeypatch.context() as patched:
        patched.setattr(jinja2.Environment, "compile", counting)
        html = render_file(Project.load(root), issue).html
    return html, len(compiled)


def test_a_later_process_loads_the_compiled_templates(make_project, tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    issue = root / "issues" / EXAMPLE_ISSUE.name
    first, compiled = _fresh_render(root, issue, monkeypatch)
    assert compiled == 8 and len(list((tmp_path / "cache" / "templates").iterdir())) == 8
    again, compiled = _fresh_render(root, issue, monkeypatch)
    assert compiled == 0 and again == first


def test_an_edited_template_is_compiled_afresh(make_project, tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_project(
        issues={"x.md": "---\ntitle: X\n---\nHallo\n"}, templates={"footer.mjml.j2": FOOTER}
    )
    issue = root / "issues" / "x.md"
    before, _ = _fresh_render(root, issue, monkeypatch)
    (root / "templates" / "footer.mjml.j2").write_text(FOOTER.replace("Fußzeile", "Grüße"), "utf-8")
    after, compiled = _fresh_render(root, issue, monkeypatch)
    assert "Fußzeile" in before and "Grüße" in after and "Fußzeile" not in after
    assert compiled == 1  # only the edited one


def test_a_damaged_entry_is_compiled_afresh(make_project, tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    issue = root / "issues" / EXAMPLE_ISSUE.name
    expected, _ = _fresh_render(root, issue, monkeypatch)
    entries = sorted((tmp_path / "cache" / "templates").iterdir())
    entries[0].write_bytes(entries[0].read_bytes()[:200])  # cut short
    entries[1].write_bytes(b"\\xff\\xfe not an entry")
    html, compiled = _fresh_render(root, issue, monkeypatch)
    assert html == expected and compiled == 2


def test_an_error_in_a_cached_template_names_its_file_and_line(make_project, tmp_path):
    """A template whose code comes from the cache still fails with its own file and line."""
    root = make_project(
        issues={"x.md": "---\ntitle: X\n---\nHi\n"},
        templates={"footer.mjml.j2": "<mj-section>\n{{ issue.meta.nope.x }}\n</mj-section>\n"},
    )
    env = {**os.environ, "NEWSLETTER_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "newsletter", "--project", str(root), "build", "x"]
    runs = [subprocess.run(command, env=env, capture_output=True, text=True) for _ in "12"]
    assert len(list((tmp_path / "cache" / "templates").iterdir())) >= 1
    for done in runs:
        assert done.returncode == 1
        assert f"{root / 'templates' / 'footer.mjml.j2'}:2: template error" in done.stderr
        assert "Traceback" not in done.stderr
