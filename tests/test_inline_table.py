"""An email not in the inlined-CSS cache is inlined by replaying premailer from a table of what
premailer made of the same CSS (newsletter/inline_table.py). The replay must give premailer's
very bytes: each test here renders an email, runs premailer on it, and compares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter import inline_css, inline_table, render
from newsletter.cache import read_entry, write_entry
from newsletter.inline_table import Miss, Table, learn, replay, shipped_table
from newsletter.project import Project
from newsletter.render import render_file
from newsletter.scaffold import init_project
from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO

#: Every Markdown element the templates style (the sample `scripts/inline_table.py` learns from).
EVERY_ELEMENT = (REPO / "tests" / "fixtures" / "every_element.md").read_text(encoding="utf-8")

#: The issue's own HTML: style attributes, classes, an id, a floating image, a <style> block.
RAW_HTML = """\
---
title: Eigenes HTML
---

<p style="color: #ABC; text-align: center">Zentriert, „eigene“ Farbe.</p>

<div class="kasten" id="nl-x"><p>Im Kasten.</p></div>

<img src="https://example.com/r.png" alt="rechts" style="float: right; width: 120px">

<style>.kasten p { background-color: #fe0; vertical-align: top; }</style>

Ein Absatz danach mit Umlauten: äöüß.
"""

#: A project's own CSS: pseudo-classes (inlined and left over), !important, `*`, `unset`,
#: an id, an attribute selector, a media query and a floating image class.
OWN_CSS = (
    (REPO / "templates" / "content.css.j2").read_text("utf-8")
    + """
.nl-content p:first-child { margin-top: 0; }
.nl-content a:hover { color: #ff0000; }
.nl-content h2 { color: #ABC !important; text-align: center; background-color: #fe0; }
* { box-sizing: border-box; }
.nl-content td { background-color: transparent; vertical-align: top; }
#nl-x p { color: unset; }
.nl-content a[href^="https"] { font-weight: bold; }
.nl-content img { float: left; }
@media (max-width: 400px) { .nl-content h1 { font-size: 20px; } }
"""
)

#: The shipped table is for the installed premailer, cssutils, cssselect and lxml (else it is
#: not used, which is right but slow: regenerate it for the new versions).
SHIPPED_FOR_THESE_LIBRARIES = pytest.mark.skipif(
    __import__("json").loads(inline_table.SHIPPED.read_text("utf-8"))["stamp"]
    != inline_table.version_stamp(),
    reason="inline_table.json is for other library versions: run python scripts/inline_table.py",
)

THEMED = (
    CONFIG
    + """
[theme]
brand_color = "#0a7d32"
background_color = "#fff8e7"
text_color = "#222"
font_family = "Georgia, serif"
web_font_name = "Merriweather"
web_font_url = "https://fonts.example.com/merriweather.css"
logo_url = "https://example.com/logo.png"
"""
)


def email_before_inlining(monkeypatch: pytest.MonkeyPatch, project: Project, path: Path) -> str:
    """The HTML that `render_file` hands to the inliner (MJML's output)."""
    seen: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(render, "with_inlined_css", lambda html: seen.append(html) or html)
        render_file(project, path)
    [html] = seen
    return html


def premailer(html: str) -> str:
    return str(inline_css._premailer(html).transform())


def projects(make_project) -> list[tuple[Project, Path]]:
    """(project, issue) for every sample: the example issue, every Markdown element, the
    issue's own HTML, `init`'s samples in German and English with their welcome step; with
    the default theme, another theme with a web font and logo, and a project's own CSS."""
    issues = {
        EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8"),
        "alle-elemente.md": EVERY_ELEMENT,
        "eigenes-html.md": RAW_HTML,
    }
    roots = [
        make_project(issues=issues, name="default"),
        make_project(config=THEMED, issues=issues, name="themed"),
        make_project(issues=issues, templates={"content.css.j2": OWN_CSS}, name="own-css"),
    ]
    for language in ("de", "en"):
        root = roots[0].parent / f"init-{language}"
        init_project(root, "Jens' Briefing", language)
        roots.append(root)
    found = []
    for root in roots:
        project = Project.load(root)
        for path in sorted(root.glob("issues/*.md")) + sorted(root.glob("sequences/*/*.md")):
            found.append((project, path))
    return found


@pytest.mark.slow
def test_the_replay_gives_premailers_bytes_for_every_sample(make_project, monkeypatch):
    samples = projects(make_project)
    assert len(samples) == 13
    for project, path in samples:
        html = email_before_inlining(monkeypatch, project, path)
        premailer_instance = inline_css._premailer(html)
        expected = premailer_instance.transform()
        table = learn(html, premailer_instance, expected)
        assert replay(html, [table]) == expected, f"{project.root.name}/{path.name}"
        if path.name == "eigenes-html.md":
            assert "Umlauten: äöüß" in expected and "„eigene“" in expected


@pytest.mark.slow
@SHIPPED_FOR_THESE_LIBRARIES
def test_the_shipped_table_replays_the_built_in_templates_as_premailer_does(
    make_project, monkeypatch
):
    """Without any cache, the example issue and `init`'s samples need no premailer run."""
    for project, path in projects(make_project):
        if project.root.name not in ("default", "init-de", "init-en") or "eigenes" in path.name:
            continue
        html = email_before_inlining(monkeypatch, project, path)
        assert replay(html, [shipped_table()]) == premailer(html), path.name


def test_css_the_table_lacks_is_a_miss(make_project, monkeypatch):
    root = make_project(issues={"eigenes-html.md": RAW_HTML})
    html = email_before_inlining(monkeypatch, Project.load(root), root / "issues/eigenes-html.md")
    with pytest.raises(Miss):  # the issue's own <style> and style attributes
        replay(html, [shipped_table()])
    with pytest.raises(Miss):
        replay(html, [Table()])


@pytest.mark.slow
@SHIPPED_FOR_THESE_LIBRARIES
def test_the_shipped_table_is_current():
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "inline_table.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, "run: python scripts/inline_table.py\n" + checked.stderr
    assert inline_table.version_stamp() is not None
    assert shipped_table().blocks, "the shipped table is not for the installed premailer/cssutils"


def _modules_after_render(root: Path, issue: Path, cache: Path) -> tuple[list[str], str]:
    script = (
        "import sys; from pathlib import Path; from newsletter.project import Project; "
        "from newsletter.render import render_file; "
        f"html = render_file(Project.load(Path({str(root)!r})), Path({str(issue)!r})).html; "
        "print('premailer' in sys.modules, 'cssutils' in sys.modules); print(html)"
    )
    env = {**os.environ, "NEWSLETTER_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    flags, _, html = done.stdout.partition("\n")
    return flags.split(), html


@pytest.mark.slow
@SHIPPED_FOR_THESE_LIBRARIES
def test_a_first_build_with_the_built_in_templates_does_not_load_premailer(make_project, tmp_path):
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    issue = root / "issues" / EXAMPLE_ISSUE.name
    flags, html = _modules_after_render(root, issue, tmp_path / "empty-cache")
    assert flags == ["False", "False"]
    assert 'style="' in html and "verdrängen könnte" in html  # inlined, German intact


@pytest.mark.slow
def test_a_projects_own_css_runs_premailer_once_then_is_replayed(make_project, tmp_path):
    """The first email with CSS the table lacks runs premailer and teaches the table; the
    next issue with the same templates (a new email, not in the cache) is replayed, and is
    what premailer makes of it."""
    root = make_project(
        issues={"erste.md": EVERY_ELEMENT, "zweite.md": EVERY_ELEMENT.replace("Größe", "Höhe")},
        templates={"content.css.j2": OWN_CSS},
    )
    cache = tmp_path / "cache"
    first, _ = _modules_after_render(root, root / "issues/erste.md", cache)
    assert first == ["True", "True"]
    assert list((cache / "inline-table").glob("*.json"))
    second, html = _modules_after_render(root, root / "issues/zweite.md", cache)
    assert second == ["False", "False"]
    assert "Höhe" in html and "color:#ABC !important" in html.replace(": ", ":")
    # premailer's own result for that email, in a process without any cache
    blocked = tmp_path / "a-file"
    blocked.write_text("no cache here", "utf-8")
    assert _modules_after_render(root, root / "issues/zweite.md", blocked)[1] == html


def test_an_edited_template_is_never_replayed_stale(make_project, monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_project(issues={"erste.md": EVERY_ELEMENT}, templates={"content.css.j2": OWN_CSS})
    project, issue = Project.load(root), root / "issues/erste.md"
    before = render_file(project, issue).html
    assert "background-color:#fe0" in before.replace(": ", ":")
    (root / "templates/content.css.j2").write_text(OWN_CSS.replace("#fe0", "#0ef"), "utf-8")
    after = render_file(project, issue).html
    assert "background-color:#0ef" in after.replace(": ", ":")
    assert "#fe0" not in after


def test_a_damaged_or_foreign_learned_table_is_not_used(make_project, monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_project(issues={"erste.md": EVERY_ELEMENT}, templates={"content.css.j2": OWN_CSS})
    project, issue = Project.load(root), root / "issues/erste.md"
    html = email_before_inlining(monkeypatch, project, issue)
    expected = premailer(html)
    assert inline_css._inline(html) == (expected, False)  # premailer ran, taught the table
    assert inline_css._inline(html) == (expected, True)  # replayed from what it learned
    path = inline_css._learned_path()
    assert path is not None and read_entry(path)
    # A table (its checksum made to match) for other libraries is ignored: premailer runs;
    # so does it for a table cut short.
    other = Table(__import__("json").loads(read_entry(path)))
    write_entry(path.parent, path, other.as_json("premailer 0.0 cssutils 0.0"))
    assert inline_css._inline(html) == (expected, False)
    path.write_text(path.read_text("utf-8")[:100], "utf-8")
    assert inline_css._inline(html) == (expected, False)
