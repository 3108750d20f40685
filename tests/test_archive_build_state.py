"""`archive build` publishes only the archive (issue 28, item 10): its build state, which
names every issue file with its title, preheader and local path (drafts, test-only and
dry-run issues too), is kept in the user's private cache folder, not in the site."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.sendgrid_server import FakeSendGrid

KEY = "SG.build-state-key"


@pytest.fixture
def sendgrid(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        yield server


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)


def issue(title: str, slug: str, preheader: str) -> str:
    return f'---\ntitle: "{title}"\nslug: {slug}\npreheader: "{preheader}"\n---\n\nText.\n'


@pytest.fixture
def project(make_project, sendgrid: FakeSendGrid) -> Path:
    root = make_project(
        issues={
            "2024-07-01-erste.md": issue("Erste Ausgabe", "erste", "Öffentlich"),
            "2024-08-01-entwurf.md": issue("Geheimer Entwurf", "entwurf", "Streng vertraulich"),
            "2024-08-02-probe.md": issue("Nur eine Probe", "probe", "Testkopie"),
            "2024-08-03-trocken.md": issue("Trockenlauf", "trocken", "Nur ein Versuch"),
        }
    )
    add_subscriber(open_engine(Project.load(root).database_url), "leserin@example.org")
    assert run(root, "send", "2024-07-01-erste", "--yes").exit_code == 0
    assert run(root, "send", "2024-08-02-probe", "--test", "jens@example.com").exit_code == 0
    assert run(root, "send", "2024-08-03-trocken", "--yes", "--dry-run").exit_code == 0
    return root


def published_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_site_holds_no_unpublished_issue_and_no_local_path(project, tmp_path) -> None:
    out = tmp_path / "site"
    result = run(project, "archive", "build", "-o", str(out))
    assert result.exit_code == 0, result.output
    files = published_bytes(out)
    assert ".newsletter-archive.json" not in files
    assert "issues/erste/index.html" in files
    for name, data in files.items():
        text = data.decode("utf-8")
        for private in (
            "Geheimer Entwurf",
            "Streng vertraulich",
            "Nur eine Probe",
            "Trockenlauf",
            str(project),
        ):
            assert private not in text, f"{name} publishes {private!r}"

    # The state is remembered privately: a second build renders and writes nothing.
    again = run(project, "archive", "build", "-o", str(out))
    assert again.exit_code == 0 and "0 files written" in again.output, again.output
    assert published_bytes(out) == files


def test_the_build_state_is_in_a_private_cache_folder(project, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(cache))
    assert run(project, "archive", "build", "-o", str(tmp_path / "site")).exit_code == 0
    [state] = (cache / "archive").iterdir()
    assert stat.S_IMODE((cache / "archive").stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert "Geheimer Entwurf" in state.read_text("utf-8")  # what the site must not hold


def test_an_older_builds_manifest_is_removed_from_the_site(project, tmp_path) -> None:
    out = tmp_path / "site"
    assert run(project, "archive", "build", "-o", str(out)).exit_code == 0
    # What builds before this change left in the folder (trimmed).
    leaked = {
        "files": {"issues/gone/index.html": {"inputs": "x", "stat": [1, 2]}},
        "summaries": [[str(project / "issues/2024-08-01-entwurf.md"), [1, 2], "entwurf",
                       "Geheimer Entwurf", "Streng vertraulich", "de"]],
    }  # fmt: skip
    (out / ".newsletter-archive.json").write_text(json.dumps(leaked), "utf-8")
    (out / "issues/gone").mkdir()
    (out / "issues/gone/index.html").write_text("old page", "utf-8")
    (out / "mine.json").write_text('{"files": "not the archive\'s"}', "utf-8")

    result = run(project, "archive", "build", "-o", str(out))
    assert result.exit_code == 0 and "2 removed" in result.output, result.output
    assert not (out / ".newsletter-archive.json").exists()
    assert not (out / "issues/gone").exists()  # its list of pages was still honoured
    assert (out / "mine.json").exists()


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("archive_index.html", "{% if %}", "archive_index.html:1: template error"),
        ("archive_404.html", "{{ nope.x }}", "template error"),
        ("archive_base.html", "{% for %}", "archive_base.html:1: template error"),
    ],
)
def test_a_broken_web_template_of_ones_own_stops_the_build_before_it_writes(
    project, tmp_path, name, text, needle
) -> None:
    """Before: a traceback from Jinja, after the issue pages and feeds were written."""
    (project / "templates" / "web").mkdir(parents=True)
    (project / "templates" / "web" / name).write_text(text, "utf-8")
    out = tmp_path / "site"
    result = run(project, "archive", "build", "-o", str(out))
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert needle in line and "fix the template" in line
    assert not out.exists() or published_bytes(out) == {}
    if "{%" in text:  # (a syntax error: `check` finds it before any page needs the file)
        checked = run(project, "check", "2024-07-01-erste")
        assert checked.exit_code == 1 and f"{name}:1: error: template error" in checked.output


def test_check_leaves_an_editors_swap_file_and_a_backup_alone(project) -> None:
    """Only what a page could load is a template: a stray file beside them (Vim's swap
    file, a .bak) must not stop `check`, which `send` asks before anything goes out."""
    web = project / "templates" / "web"
    web.mkdir(parents=True)
    (web / ".archive_index.html.swp").write_bytes(b"b0VIM 9.0\x00\xff\xfe")
    (web / "archive_index.html.bak").write_text("{% if %}", "utf-8")
    checked = run(project, "check", "2024-07-01-erste")
    assert checked.exit_code == 0, checked.output
