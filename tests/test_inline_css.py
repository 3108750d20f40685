"""Inlined CSS is remembered on disk by its exact input (newsletter/inline_css.py): an unchanged
issue renders to the same email without premailer, an edit is never served stale, and a cache
that cannot be used changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import inline_css, inline_table
from newsletter.project import Project
from newsletter.render import render_file
from tests.conftest import EXAMPLE_ISSUE, REPO


@pytest.fixture
def example(make_project) -> tuple[Project, Path]:
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    return Project.load(root), root / "issues" / EXAMPLE_ISSUE.name


def entries(folder: Path) -> list[Path]:
    return sorted((folder / "inlined").glob("*.html"))


@pytest.mark.slow
def test_an_unchanged_issue_renders_the_same_email_from_the_cache(example, tmp_path, monkeypatch):
    project, issue = example
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    first = render_file(project, issue)
    [entry] = entries(tmp_path / "cache")
    again = render_file(project, issue)
    assert entries(tmp_path / "cache") == [entry]  # read back, nothing new written
    assert again.html == first.html and 'style="' in again.html  # the CSS is inlined
    # A render into an empty cache (premailer runs again) gives the very same email.
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "other"))
    assert render_file(project, issue).html == first.html


def test_an_edit_is_never_served_from_the_cache(example, tmp_path, monkeypatch):
    project, issue = example
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    before = render_file(project, issue).html
    issue.write_text(issue.read_text("utf-8") + "\nEin Nachtrag über Größe.\n", "utf-8")
    after = render_file(project, issue).html
    assert "Ein Nachtrag über Größe." in after and "Nachtrag" not in before
    assert len(entries(tmp_path / "cache")) == 2


@pytest.mark.slow
def test_the_cache_keeps_the_most_recently_used_entries(example, tmp_path, monkeypatch):
    project, issue = example
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(inline_css, "MAX_ENTRIES", 3)
    original = issue.read_text("utf-8")
    for n in range(5):
        issue.write_text(original + f"\nNachtrag {n}.\n", "utf-8")
        render_file(project, issue)
    assert len(entries(tmp_path / "cache")) == 3


@pytest.mark.slow
def test_a_cache_that_cannot_be_used_changes_nothing(example, tmp_path, monkeypatch):
    project, issue = example
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "fresh"))
    expected = render_file(project, issue).html
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", "utf-8")
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(blocked))
    assert render_file(project, issue).html == expected
    # A damaged entry (not UTF-8, cut short by a crash, emptied) is rendered afresh, not shown.
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "fresh"))
    [entry] = entries(tmp_path / "fresh")
    whole = entry.read_text("utf-8")
    for damage in (b"\xff\xfe broken", whole[: len(whole) // 2].encode(), b""):
        entry.write_bytes(damage)
        assert render_file(project, issue).html == expected
    assert entry.read_text("utf-8") == whole  # and stored again whole


def test_no_home_directory_means_no_cache(example, monkeypatch):
    """A container run under a uid with no passwd entry and no HOME: rendering works."""
    project, issue = example
    for name in ("NEWSLETTER_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert inline_css.cache_folder() is None
    assert 'style="' in render_file(project, issue).html


@pytest.mark.slow
def test_a_cached_render_does_not_load_premailer(example, tmp_path):
    """What the cache saves is premailer's run and its import (cssutils, lxml: a quarter of a
    second): finding the installed versions for the key must not import them either."""
    import subprocess
    import sys

    project, issue = example
    script = (
        "import sys; from pathlib import Path; from newsletter.project import Project; "
        "from newsletter.render import render_file; "
        f"render_file(Project.load(Path({str(project.root)!r})), Path({str(issue)!r})); "
        "print('premailer' in sys.modules, 'cssutils' in sys.modules)"
    )
    env = {**__import__("os").environ, "NEWSLETTER_CACHE_DIR": str(tmp_path / "cache")}
    run = [sys.executable, "-c", script]
    first, again = (
        subprocess.run(run, env=env, cwd=REPO, capture_output=True, text=True) for _ in "12"
    )
    # An empty cache: the built-in templates' CSS is in the shipped table (inline_table.json),
    # so premailer is not needed even then, where that table is for the installed libraries
    # (tests/test_inline_table.py has a template it runs for).
    shipped = bool(inline_table.shipped_table().blocks)
    assert first.stdout.split() == [str(not shipped)] * 2, first.stderr
    assert again.stdout.split() == ["False", "False"], again.stderr
