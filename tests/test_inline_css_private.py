"""The inlined-CSS cache trusts only what this user wrote (issue 28, item 13): the folder is
created 0700, a folder that another user owns is not used (with a warning), one of ours that
others could write to is made 0700 again, and an entry another user owns or may write to is
a miss. Before, an entry
rewritten with a matching (unkeyed SHA-256) checksum went into every reader's email.
(Owners are changed with chown: those tests need root, and skip without it.)"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.render import render_file
from tests.conftest import EXAMPLE_ISSUE, REPO

PLANTED = '<html><body><a href="https://evil.example/login">Bitte anmelden</a></body></html>'


@pytest.fixture
def example(make_project) -> tuple[Project, Path]:
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    return Project.load(root), root / "issues" / EXAMPLE_ISSUE.name


def plant(entry: Path) -> None:
    """Rewrite a cache entry the way its checksum was checked: SHA-256 of the rest."""
    checksum = hashlib.sha256(PLANTED.encode()).hexdigest()
    entry.write_text(f"{checksum}\n{PLANTED}", "utf-8")


def test_a_new_cache_folder_is_private(example, tmp_path, monkeypatch) -> None:
    project, issue = example
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    render_file(project, issue)
    for folder in (tmp_path / "cache", tmp_path / "cache" / "inlined"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    [entry] = (tmp_path / "cache" / "inlined").glob("*.html")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def render_in_a_process(project: Project, issue: Path, cache: Path) -> subprocess.CompletedProcess:
    """A fresh process (its own warnings), as a command would render."""
    script = (
        "from pathlib import Path; from newsletter.project import Project; "
        "from newsletter.render import render_file; "
        f"print(render_file(Project.load(Path({str(project.root)!r})), Path({str(issue)!r})).html)"
    )
    env = {**os.environ, "NEWSLETTER_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )


def nobody_owns(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing an owner needs root")
    os.chown(path, 65534, 65534)  # nobody


def test_a_folder_another_user_owns_is_not_used(example, tmp_path, monkeypatch) -> None:
    project, issue = example
    cache = tmp_path / "shared"
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(cache))
    expected = render_file(project, issue).html
    [entry] = (cache / "inlined").glob("*.html")
    plant(entry)  # with the owner's (this user's) own file, even
    nobody_owns(cache / "inlined")

    run = render_in_a_process(project, issue, cache)
    assert run.returncode == 0, run.stderr
    assert "evil.example" not in run.stdout and run.stdout.strip() == expected.strip()
    [warning] = run.stderr.splitlines()
    assert str(cache / "inlined") in warning and "chmod 700" in warning


def test_our_folder_that_others_could_write_to_is_made_private(example, tmp_path, monkeypatch):
    """A folder made under umask 002 (group-writable): made 0700 again, and an entry another
    user put there meanwhile (a file of theirs) is not used."""
    project, issue = example
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(cache))
    expected = render_file(project, issue).html
    [entry] = (cache / "inlined").glob("*.html")
    (cache / "inlined").chmod(0o777)
    plant(entry)
    nobody_owns(entry)

    run = render_in_a_process(project, issue, cache)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "evil.example" not in run.stdout and run.stdout.strip() == expected.strip()
    assert stat.S_IMODE((cache / "inlined").stat().st_mode) == 0o700


@pytest.mark.parametrize("how", ["writable by others", "owned by another user"])
def test_an_entry_that_is_not_this_users_own_is_a_miss(example, tmp_path, monkeypatch, how):
    project, issue = example
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path / "cache"))
    expected = render_file(project, issue).html
    [entry] = (tmp_path / "cache" / "inlined").glob("*.html")
    plant(entry)
    if how == "writable by others":
        entry.chmod(0o666)
    else:
        nobody_owns(entry)
    html = render_file(project, issue).html
    assert "evil.example" not in html and html == expected
    assert "evil.example" not in entry.read_text("utf-8")  # replaced by this user's own
