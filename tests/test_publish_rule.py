"""Only a send to the whole list publishes an issue on the web archive, unless its front
matter says `public: true` (issue 28, item 12); `newsletter sends` says which rule applies.
Before, `send paid --tag me` put the issue on /issues/paid, / and the feeds for everyone.
Sends through the real CLI to the fake SendGrid, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from newsletter.cli import main
from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.sendgrid_server import FakeSendGrid

KEY = "SG.publish-rule-key"
PAID = "---\ntitle: Nur für Zahlende\nslug: paid\n{extra}---\n\nExklusiv für Unterstützer.\n"
OPEN = "---\ntitle: Für alle\nslug: fuer-alle\n{extra}---\n\nHallo zusammen.\n"


@pytest.fixture
def project(make_project, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        root = make_project(
            issues={
                "2024-07-01-paid.md": PAID.format(extra=""),
                "2024-07-02-fuer-alle.md": OPEN.format(extra=""),
            }
        )
        engine = open_engine(Project.load(root).database_url)
        add_subscriber(engine, "ich@example.org", tags=["me"])
        add_subscriber(engine, "leserin@example.org")
        yield root
        dispose_all()


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)


def web(root: Path) -> dict[str, str | int]:
    """What an anonymous reader sees: the issue's status, the archive and the feeds."""
    client = TestClient(create_app(Project.load(root)))
    return {
        "page": client.get("/issues/paid").status_code,
        "index": client.get("/").text,
        "atom": client.get("/feed.xml").text,
        "json": client.get("/feed.json").text,
    }


def test_a_send_to_a_tag_is_not_published(project) -> None:
    result = run(project, "send", "2024-07-01-paid", "--tag", "me", "--yes")
    assert result.exit_code == 0, result.output
    seen = web(project)
    assert seen["page"] == 404
    for where in ("index", "atom", "json"):
        assert "Nur für Zahlende" not in seen[where] and "/issues/paid" not in seen[where]

    site = project / "site"
    assert run(project, "archive", "build", "-o", str(site)).exit_code == 0
    assert not (site / "issues" / "paid").exists()
    assert "Nur für Zahlende" not in (site / "feed.xml").read_text("utf-8")

    listing = run(project, "sends")
    assert (
        "web archive: not published (sent to tag me only; add `public: true` to its front "
        "matter to publish it)" in listing.output
    ), listing.output
    [as_json] = json.loads(run(project, "sends", "--format", "json").output)
    assert as_json["published"] is False and "tag me only" in as_json["publish_rule"]


def test_public_true_publishes_a_send_to_a_tag(project) -> None:
    assert run(project, "send", "2024-07-01-paid", "--tag", "me", "--yes").exit_code == 0
    issue = project / "issues" / "2024-07-01-paid.md"
    issue.write_text(PAID.format(extra="public: true\n"), "utf-8")
    seen = web(project)
    assert seen["page"] == 200
    for where in ("index", "atom", "json"):
        assert "Nur für Zahlende" in seen[where], where
    listing = run(project, "sends")
    assert (
        "web archive: published (sent to tag me; its front matter says `public: true`)"
        in listing.output
    ), listing.output


def test_a_send_to_the_whole_list_publishes_unless_public_is_false(project) -> None:
    assert run(project, "send", "2024-07-02-fuer-alle", "--yes").exit_code == 0
    client = TestClient(create_app(Project.load(project)))
    assert client.get("/issues/fuer-alle").status_code == 200
    assert "Für alle" in client.get("/").text
    assert "web archive: published (sent to the whole list)" in run(project, "sends").output

    issue = project / "issues" / "2024-07-02-fuer-alle.md"
    issue.write_text(OPEN.format(extra="public: false\n"), "utf-8")
    assert client.get("/issues/fuer-alle").status_code == 404
    assert "Für alle" not in client.get("/").text
    assert "web archive: not published (its front matter says `public: false`)" in (
        run(project, "sends").output
    )


def test_a_dry_run_says_why_it_is_not_published(project) -> None:
    assert run(project, "send", "2024-07-02-fuer-alle", "--yes", "--dry-run").exit_code == 0
    assert "web archive: not published (a dry run)" in run(project, "sends").output


def test_public_must_be_true_or_false(project) -> None:
    issue = project / "issues" / "2024-07-01-paid.md"
    issue.write_text(PAID.format(extra="public: vielleicht\n"), "utf-8")
    result = run(project, "build", str(issue))
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert f"{issue}:4:" in line and "public: true" in line and "Traceback" not in line


def test_public_false_leaves_out_the_view_in_browser_link(project) -> None:
    """Its web version never exists, so the email does not link to it."""
    issue = project / "issues" / "2024-07-02-fuer-alle.md"
    out = project / "build"
    assert run(project, "build", str(issue), "-o", str(out)).exit_code == 0
    assert "https://news.example.com/issues/fuer-alle" in (out / "fuer-alle.txt").read_text("utf-8")
    issue.write_text(OPEN.format(extra="public: false\n"), "utf-8")
    assert run(project, "build", str(issue), "-o", str(out)).exit_code == 0
    for name in ("fuer-alle.txt", "fuer-alle.html"):
        assert "/issues/fuer-alle" not in (out / name).read_text("utf-8"), name


# `sends` says what the archive does with each send now (found by a walk through the docs):
# before, a send refused for everyone and a scheduled one both read "published".
def test_a_send_refused_for_everyone_is_not_published(project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong-key")
    refused = run(project, "send", "2024-07-02-fuer-alle", "--yes")
    assert refused.exit_code == 1
    listing = run(project, "sends").output
    assert "web archive: not published (no recipient was accepted" in listing, listing
    assert "web archive: published" not in listing
    client = TestClient(create_app(Project.load(project)))
    assert client.get("/issues/fuer-alle").status_code == 404  # what the archive does too


def test_a_scheduled_send_is_published_from_its_time(project) -> None:  # type: ignore[no-untyped-def]
    scheduled = run(project, "send", "2024-07-02-fuer-alle", "--schedule", "in 2h", "--yes")
    assert scheduled.exit_code == 0, scheduled.output
    listing = run(project, "sends").output
    assert "web archive: published (from " in listing, listing
    assert ", when it goes out; sent to the whole list)" in listing
    client = TestClient(create_app(Project.load(project)))
    assert client.get("/issues/fuer-alle").status_code == 404  # not before its time
