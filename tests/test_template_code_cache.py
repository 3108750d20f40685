"""Compiled templates (newsletter/render.py, TemplateCodeCache): the built-in ones' code ships
(template_code.json), so a first build compiles none; a project's own are kept in the user's
cache, so a later process loads them; an edited template is compiled afresh, a damaged entry
is a miss, and errors still name the template file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from newsletter import render
from newsletter.project import Project
from newsletter.render import render_file
from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO

#: The shipped code is for the installed Jinja and this environment (else it is not used,
#: which is right but slower: regenerate it).
SHIPPED_FOR_THIS_JINJA = pytest.mark.skipif(
    __import__("json").loads(render.SHIPPED_TEMPLATE_CODE.read_text("utf-8"))["stamp"]
    != render.code_stamp(render.ENVIRONMENT_SETTINGS),
    reason="template_code.json is for another Jinja: run python scripts/template_code.py",
)

FOOTER = "<mj-section><mj-column><mj-text>Fußzeile {{ newsletter.name }}</mj-text></mj-column></mj-section>\n"


def _fresh_render(root: Path, issue: Path, monkeypatch) -> tuple[str, int]:
    """The email's HTML and text, and how many template files were compiled, as in a new process (the
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
        rendered = render_file(Project.load(root), issue)
    return rendered.html + rendered.text, len(compiled)


@SHIPPED_FOR_THIS_JINJA
def test_a_first_build_compiles_no_built_in_template(make_project, tmp_path, monkeypatch):
    """The built-in templates' code ships (template_code.json): an empty cache compiles none
    of them, and the email is the one compiled templates make, in German and English."""
    for language in ("de", "en"):
        monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / f"cache-{language}"))
        root = make_project(
            config=CONFIG.replace('language = "de"', f'language = "{language}"'),
            issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")},
            name=f"project-{language}",
        )
        issue = root / "issues" / EXAMPLE_ISSUE.name
        shipped, compiled = _fresh_render(root, issue, monkeypatch)
        assert compiled == 0
        # without the shipped code and without a cache: Jinja compiles all eight
        blocked = tmp_path / "a-file"
        blocked.write_text("no cache here", "utf-8")
        with monkeypatch.context() as patched:
            patched.setattr(render, "SHIPPED_TEMPLATE_CODE", tmp_path / "none.json")
            patched.setenv("NEWSLETTER_CACHE_DIR", str(blocked))
            render.shipped_template_code.cache_clear()
            compiled_html, compiled = _fresh_render(root, issue, monkeypatch)
        render.shipped_template_code.cache_clear()
        assert compiled == 8 and compiled_html == shipped


@SHIPPED_FOR_THIS_JINJA
def test_without_a_usable_cache_the_shipped_code_is_used_still(make_project, tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("no cache here", "utf-8")
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(blocked))
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    html, compiled = _fresh_render(root, root / "issues" / EXAMPLE_ISSUE.name, monkeypatch)
    assert compiled == 0 and "verdrängen könnte" in html


@pytest.mark.slow
@SHIPPED_FOR_THIS_JINJA
def test_the_shipped_code_is_current():
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "template_code.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, "run: python scripts/template_code.py\n" + checked.stderr


def test_a_projects_own_template_is_compiled_once_then_loaded(make_project, tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_project(
        issues={"x.md": "---\ntitle: X\n---\nHallo\n"}, templates={"footer.mjml.j2": FOOTER}
    )
    issue = root / "issues" / "x.md"
    first, compiled = _fresh_render(root, issue, monkeypatch)
    # the project's footer (and the built-in ones, where their shipped code is for another Jinja)
    assert compiled >= 1 and len(list((tmp_path / "cache" / "templates").iterdir())) == compiled
    again, compiled = _fresh_render(root, issue, monkeypatch)
    assert compiled == 0 and again == first and "Fußzeile" in first


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
    masthead = (REPO / "templates" / "masthead.mjml.j2").read_text("utf-8")
    root = make_project(
        issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")},
        templates={"footer.mjml.j2": FOOTER, "masthead.mjml.j2": masthead + "\n"},
    )
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
