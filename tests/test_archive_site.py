"""`newsletter archive build`: the static site, through the real CLI on issues sent through
the real CLI to the fake SendGrid. Idempotent, incremental, world-readable, relative links."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest
from bs4 import BeautifulSoup

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, TEST_SECRET
from tests.support import archive as support
from tests.support.archive import (
    ISSUES,
    SENT,
    issue_text,
    run_cli,
    sent_project,
    write_issue,
)
from tests.support.web import sent_issue

sg = support.sg  # the fake SendGrid fixture

EXPECTED = {"index.html", "404.html", "feed.xml", "feed.json", "sitemap.xml"} | {
    f"issues/{ISSUES[name][1]}/index.html" for name in SENT
}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """relative path -> (bytes, mtime_ns, mode) of every file in the folder."""
    return {
        str(p.relative_to(folder)): (
            p.read_bytes(),
            p.stat().st_mtime_ns,
            stat.S_IMODE(p.stat().st_mode),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def sent(tmp_path: Path) -> Path:
    with sent_project(tmp_path / "project", CONFIG) as root:
        return root


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text("utf-8"), "html.parser")


@pytest.mark.slow
def test_build_writes_the_site_with_relative_links(sent, tmp_path):
    out = tmp_path / "site"
    result = run_cli(sent, "archive", "build", "-o", str(out))
    assert result.exit_code == 0, result.output
    files = snapshot(out)
    assert set(files) >= EXPECTED
    assert not any(name.startswith("issues/") and name not in EXPECTED for name in files)
    assert "3 issues" in result.output.splitlines()[-1]
    for name, (_data, _mtime, mode) in files.items():
        assert mode == 0o644, f"{name} is {oct(mode)}"

    index = soup(out / "index.html")
    links = [a["href"] for a in index.select("ol.nl-archive-list a")]
    assert links == [f"issues/{ISSUES[n][1]}/" for n in reversed(SENT)]
    assert index.find("form")["action"] == "https://news.example.com/subscribe"
    assert index.find("link", rel="alternate", type="application/atom+xml")["href"] == "feed.xml"

    page = soup(out / "issues/zweite-ausgabe/index.html")
    assert page.find("form")["action"] == "https://news.example.com/subscribe"
    assert page.find("a", rel="prev")["href"] == "../../issues/erste-ausgabe/"
    assert page.find("a", rel="next")["href"] == "../../issues/dritte-ausgabe/"
    assert (
        page.find("link", rel="alternate", type="application/atom+xml")["href"] == "../../feed.xml"
    )
    assert "Du bekommst diese E-Mail" not in page.get_text()
    assert "Hallo zusammen," in page.get_text()
    # Nothing is loaded from elsewhere: no scripts, images, styles or fonts from a URL.
    for tag in page.find_all(["script", "img", "iframe"]) + index.find_all(["script", "img"]):
        assert not tag.get("src", "").startswith(("http:", "https:", "//")), tag
    for link in page.find_all("link", rel="stylesheet"):
        raise AssertionError(f"external stylesheet {link}")

    # The 404 page is shown at any depth: its links are absolute.
    missing = soup(out / "404.html")
    assert missing.find("a", string="Alle Ausgaben")["href"] == "https://news.example.com/"

    feed = feedparser.parse((out / "feed.xml").read_bytes())
    assert feed.bozo == 0
    assert [e.link for e in feed.entries][0] == "https://news.example.com/issues/dritte-ausgabe/"
    sitemap = (out / "sitemap.xml").read_text("utf-8")
    assert "<loc>https://news.example.com/issues/erste-ausgabe/</loc>" in sitemap
    for hidden in ("entwurf", "trockenlauf", "nur-outbox"):
        assert not (out / "issues" / hidden).exists()
        assert hidden not in sitemap


@pytest.mark.slow
def test_a_second_build_changes_no_file_and_a_new_issue_only_what_it_affects(sent, tmp_path, sg):
    out = tmp_path / "site"
    assert run_cli(sent, "archive", "build", "-o", str(out)).exit_code == 0
    first = snapshot(out)
    again = run_cli(sent, "archive", "build", "-o", str(out))
    assert again.exit_code == 0, again.output
    assert "0 files written" in again.output
    assert snapshot(out) == first  # same bytes, same mtimes, same modes

    write_issue(sent, "2024-11-01-vierte", issue_text("Vierte Ausgabe", "vierte-ausgabe"))
    assert run_cli(sent, "send", "2024-11-01-vierte", "--yes").exit_code == 0
    assert run_cli(sent, "archive", "build", "-o", str(out)).exit_code == 0
    after = snapshot(out)
    changed = {name for name in after if first.get(name) != after[name]}
    assert changed == {
        "issues/vierte-ausgabe/index.html",  # the new issue
        "issues/dritte-ausgabe/index.html",  # its older neighbour gains a "next" link
        "index.html",
        "feed.xml",
        "feed.json",
        "sitemap.xml",
    }


@pytest.mark.slow
def test_a_deleted_issue_file_removes_its_page(sent, tmp_path):
    out = tmp_path / "site"
    assert run_cli(sent, "archive", "build", "-o", str(out)).exit_code == 0
    (out / "mine.txt").write_text("not the archive's", "utf-8")
    (sent / "issues" / "2024-07-01-erste.md").unlink()
    result = run_cli(sent, "archive", "build", "-o", str(out))
    assert result.exit_code == 0 and "1 removed" in result.output
    assert not (out / "issues" / "erste-ausgabe").exists()
    assert (out / "mine.txt").exists()


def test_build_needs_base_url(make_project, cli):
    root = make_project(config=CONFIG.replace('base_url = "https://news.example.com"\n', ""))
    result = cli(root, "archive", "build")
    assert result.exit_code == 1
    assert "base_url is not set" in result.output and "newsletter.toml" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_build_is_off_when_the_archive_is(make_project, cli):
    root = make_project(config=CONFIG + "\n[archive]\nenabled = false\n")
    result = cli(root, "archive", "build")
    assert result.exit_code == 1 and "[archive] enabled = false" in result.output


def test_newsletter_build_output_is_world_readable(project, cli, tmp_path):
    os.umask(0o022)
    result = cli(project, "build", "2024-07-meta-ki-creator", "-o", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "b").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_and_exit_130_and_a_rerun_finishes(make_project, tmp_path):
    root = make_project()
    engine = open_engine(Project.load(root).database_url)
    reader = add_subscriber(engine, "leser@example.org")
    for n in range(120):
        slug = f"ausgabe-{n:03d}"
        write_issue(root, slug, issue_text(f"Ausgabe {n}", slug, body=f"Text {n}.\n" * 40))
        sent_issue(engine, [reader.id], slug=slug, title=f"Ausgabe {n}")
    engine.dispose()
    out = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "NEWSLETTER_"))}
    env["NEWSLETTER_SECRET_KEY"] = TEST_SECRET
    command = [sys.executable, "-m", "newsletter", "--project", str(root), "archive", "build"]
    process = subprocess.Popen(
        [*command, "-o", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("wrote issues/"), first
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "archive build" in stderr
    written_before = len(list(out.rglob("index.html")))
    assert 1 <= written_before < 121
    rerun = subprocess.run([*command, "-o", str(out)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list((out / "issues").iterdir())) == 120
    summary = rerun.stdout.strip().splitlines()[-1]
    assert "120 issues" in summary
