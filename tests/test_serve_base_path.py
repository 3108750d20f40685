"""`newsletter serve` behind a reverse proxy at a path (`base_url =
"https://jens.example.com/newsletter"`): every link and form action of its pages, and of
`archive build`'s static site, carries that path, and serve answers under it too (for a
proxy that passes the path on as it came). Before, serve's pages linked and posted
to /unsubscribe/TOKEN, /subscribe, /feed.xml, /issues/x: behind the proxy those went to the
blog's root, so an unsubscribe confirmation and every sign-up failed. Without a path (or
without a base_url) the links stay as they were. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.errors import ConfigError
from newsletter.project import Project
from newsletter.segments.sunset import KEEP
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, find_subscriber, get_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG, TEST_SECRET
from tests.support.web import live_server, sent_issue

SLUG = "meta-ki-creator"

#: base_url -> the path serve's pages put before their links.
BASES = {
    "https://jens.example.com/newsletter": "/newsletter",
    "https://jens.example.com/newsletter/": "/newsletter",
    "https://news.example.com": "",  # no path: as before
    None: "",  # local use without a base_url: as before
}


def config_with(base_url: str | None) -> str:
    line = 'base_url = "https://news.example.com"\n'
    assert line in CONFIG
    new = f'base_url = "{base_url}"\n' if base_url else ""
    return CONFIG.replace(line, new) + "\n[subscribe]\nrequire_checkbox = true\n"


def links_of(html: str) -> list[str]:
    """Every href, src and form action of a page."""
    soup = BeautifulSoup(html, "html.parser")
    found = [tag["href"] for tag in soup.find_all(href=True)]
    found += [tag["src"] for tag in soup.find_all(src=True)]
    found += [form["action"] for form in soup.find_all("form")]
    return found


def assert_own_links_under(html: str, prefix: str) -> None:
    """Links to serve's own pages (not an anchor, not another site) start with `prefix`/."""
    for link in links_of(html):
        if link.startswith(("#", "https://", "http://", "mailto:")):
            continue
        assert link.startswith(f"{prefix}/"), (link, prefix)


def action_of(html: str) -> str:
    forms = BeautifulSoup(html, "html.parser").find_all("form")
    assert len(forms) == 1, html
    return str(forms[0]["action"])


@pytest.fixture(params=list(BASES), ids=["path", "path-slash", "no-path", "no-base_url"])
def served(
    request: pytest.FixtureRequest,
    make_project: Callable[..., Path],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=config_with(request.param))
    example = Path(__file__).resolve().parent.parent / "issues" / "2024-07-meta-ki-creator.md"
    (root / "issues" / example.name).write_text(example.read_text("utf-8"), "utf-8")
    project = Project.load(root)
    engine = open_engine(project.database_url)
    readers = {
        status: add_subscriber(engine, f"{status}@example.de", status=status)
        for status in ("subscribed", "unsubscribed", "bounced", "unconfirmed")
    }
    readers["kept"] = add_subscriber(engine, "bleibt@example.de")
    issue_id = sent_issue(engine, [readers["subscribed"].id], slug=SLUG)

    def token(purpose: str, status: str) -> str:
        reader = readers[status]
        ref = reader.public_id or reader.id
        if purpose == tokens.CONFIRM:
            return tokens.make_timed_token(purpose, ref, key=TEST_SECRET)
        return tokens.make_token(purpose, ref, issue_id, key=TEST_SECRET)

    return {
        "client": TestClient(create_app(project, engine)),
        "prefix": BASES[request.param],
        "token": token,
    }


def test_every_page_links_and_posts_under_base_urls_path(served: dict[str, Any]) -> None:
    client, prefix, token = served["client"], served["prefix"], served["token"]

    def page(method: str, path: str, **kwargs: Any) -> str:
        response = client.request(method, path, follow_redirects=False, **kwargs)
        assert response.status_code in (200, 400, 404), (path, response.status_code)
        assert_own_links_under(response.text, prefix)
        return response.text

    # The unsubscribe link: its button, then the unsubscribed page's "subscribe again".
    out = token(tokens.UNSUBSCRIBE, "subscribed")
    assert action_of(page("GET", f"/unsubscribe/{out}")) == f"{prefix}/unsubscribe/{out}"
    assert action_of(page("POST", f"/unsubscribe/{out}")) == f"{prefix}/resubscribe/{out}"
    gone = token(tokens.UNSUBSCRIBE, "unsubscribed")
    assert action_of(page("GET", f"/resubscribe/{gone}")) == f"{prefix}/resubscribe/{gone}"
    bounced = token(tokens.UNSUBSCRIBE, "bounced")
    assert action_of(page("GET", f"/resubscribe/{bounced}")) == f"{prefix}/resubscribe/{bounced}"
    # The sunset's keep link, the double opt-in's confirmation link.
    keep = token(KEEP, "kept")
    assert action_of(page("GET", f"/keep/{keep}")) == f"{prefix}/keep/{keep}"
    confirm = token(tokens.CONFIRM, "unconfirmed")
    assert action_of(page("GET", f"/confirm/{confirm}")) == f"{prefix}/confirm/{confirm}"
    # The sign-up form, and again after the consent box was left unticked.
    assert action_of(page("GET", "/subscribe")) == f"{prefix}/subscribe"
    refused = page("POST", "/subscribe", data={"email": "neu@example.de"})
    assert action_of(refused) == f"{prefix}/subscribe"
    # Pages without a form: their links (the imprint is another site's) stay right too.
    page("GET", "/unsubscribe/kaputt")
    page("POST", f"/confirm/{confirm}")


def test_the_archive_links_under_base_urls_path(served: dict[str, Any]) -> None:
    client, prefix = served["client"], served["prefix"]

    index = client.get("/")
    assert index.status_code == 200
    assert_own_links_under(index.text, prefix)
    soup = BeautifulSoup(index.text, "html.parser")
    assert soup.select_one("ol.nl-archive-list a")["href"] == f"{prefix}/issues/{SLUG}"
    assert soup.find("link", type="application/atom+xml")["href"] == f"{prefix}/feed.xml"
    assert soup.find("link", type="application/feed+json")["href"] == f"{prefix}/feed.json"
    assert soup.find("a", class_="nl-archive-home")["href"] == f"{prefix}/"
    assert action_of(index.text) == f"{prefix}/subscribe"

    issue = client.get(f"/issues/{SLUG}")
    assert issue.status_code == 200
    assert_own_links_under(issue.text, prefix)
    soup = BeautifulSoup(issue.text, "html.parser")
    assert soup.find("a", string="Archiv")["href"] == f"{prefix}/"
    assert soup.find("a", string="Feed")["href"] == f"{prefix}/feed.xml"
    assert action_of(issue.text) == f"{prefix}/subscribe"

    # The static site's form of an issue link redirects to the page under the path.
    moved = client.get(f"/issues/{SLUG}/?utm_source=feed", follow_redirects=False)
    assert moved.status_code == 308
    assert moved.headers["location"] == f"{prefix}/issues/{SLUG}?utm_source=feed"

    missing = client.get("/gibt/es/nicht")
    assert missing.status_code == 404
    assert_own_links_under(missing.text, prefix)
    soup = BeautifulSoup(missing.text, "html.parser")
    assert soup.find("a", string="Alle Ausgaben")["href"] == f"{prefix}/"
    assert soup.find("a", string="Abonnieren")["href"] == f"{prefix}/subscribe"


def test_the_static_site_posts_to_base_urls_path(
    make_project: Callable[..., Path],
    cli: Callable[..., Any],
    db: str,
    tmp_path: Path,
) -> None:
    """`archive build`: links inside the site stay relative, the sign-up form posts to
    base_url/subscribe and the 404 page (served at any depth) links absolutely, all with
    base_url's path."""
    root = make_project(config=config_with("https://jens.example.com/newsletter"))
    engine = open_engine(db)
    reader = add_subscriber(engine, "anna@example.de")
    sent_issue(engine, [reader.id], slug="erste", title="Erste Ausgabe")
    (root / "issues" / "erste.md").write_text(
        "---\ntitle: Erste Ausgabe\nslug: erste\n---\nGrüße aus Köln.\n", "utf-8"
    )
    result = cli(root, "archive", "build", "-o", str(tmp_path / "site"))
    assert result.exit_code == 0, result.output
    site = tmp_path / "site"
    base = "https://jens.example.com/newsletter"
    index = (site / "index.html").read_text("utf-8")
    soup = BeautifulSoup(index, "html.parser")
    assert soup.select_one("ol.nl-archive-list a")["href"] == "issues/erste/"
    assert soup.find("link", type="application/atom+xml")["href"] == "feed.xml"
    assert action_of(index) == f"{base}/subscribe"
    issue = (site / "issues" / "erste" / "index.html").read_text("utf-8")
    assert action_of(issue) == f"{base}/subscribe"
    assert BeautifulSoup(issue, "html.parser").find("a", string="Feed")["href"] == "../../feed.xml"
    not_found = BeautifulSoup((site / "404.html").read_text("utf-8"), "html.parser")
    assert not_found.find("a", string="Alle Ausgaben")["href"] == f"{base}/"
    assert not_found.find("a", string="Abonnieren")["href"] == f"{base}/subscribe"


@pytest.fixture
def behind_proxy(
    make_project: Callable[..., Path], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any, Any]:
    """serve with base_url at /newsletter, run under uvicorn on loopback, asked the way a
    proxy that passes the path on as it came asks it."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=config_with("https://jens.example.com/newsletter"))
    example = Path(__file__).resolve().parent.parent / "issues" / "2024-07-meta-ki-creator.md"
    (root / "issues" / example.name).write_text(example.read_text("utf-8"), "utf-8")
    project = Project.load(root)
    engine = open_engine(project.database_url)
    return project, engine, add_subscriber(engine, "jörg.weiß@example.de", name="Jörg Weiß")


def test_a_proxy_that_passes_the_path_on_reaches_every_page(
    behind_proxy: tuple[Any, Any, Any],
) -> None:
    """A reader follows the pages' own links and forms: each reaches serve through the
    /newsletter path, and the forms do what they say."""
    project, engine, jörg = behind_proxy
    issue_id = sent_issue(engine, [jörg.id], slug=SLUG)
    out = tokens.make_token(
        tokens.UNSUBSCRIBE, jörg.public_id or jörg.id, issue_id, key=TEST_SECRET
    )
    with live_server(create_app(project, engine)) as server:
        client = httpx.Client(base_url=server)

        asked = client.get(f"/newsletter/unsubscribe/{out}")
        assert asked.status_code == 200
        done = client.post(action_of(asked.text))
        assert done.status_code == 200 and "Abgemeldet" in done.text
        assert get_subscriber(engine, jörg.id).status == "unsubscribed"
        back = client.post(action_of(done.text))
        assert back.status_code == 200 and "Willkommen zurück" in back.text
        assert get_subscriber(engine, jörg.id).status == "subscribed"

        form = client.get("/newsletter/subscribe")
        assert form.status_code == 200
        signed_up = client.post(
            action_of(form.text), data={"email": "grüße@example.de", "consent": "yes"}
        )
        assert signed_up.status_code == 200 and "Fast geschafft" in signed_up.text
        assert find_subscriber(engine, "grüße@example.de") is not None

        for start in ("/newsletter", "/newsletter/", f"/newsletter/issues/{SLUG}"):
            page = client.get(start)
            assert page.status_code == 200, start
            for link in links_of(page.text):
                if link.startswith("/"):
                    assert client.get(link).status_code == 200, (start, link)
        moved = client.get(f"/newsletter/issues/{SLUG}/")
        assert moved.status_code == 308
        assert moved.headers["location"] == f"/newsletter/issues/{SLUG}"
        assert client.get("/newsletter/healthz").text == "ok\n"
        # A proxy that takes the prefix off reaches the same pages.
        assert client.get("/subscribe").status_code == 200
        assert client.get("/newsletter-alt/subscribe").status_code == 404


def test_a_trailing_slash_is_redirected_under_base_urls_path(served: dict[str, Any]) -> None:
    """/subscribe/ (typed, or linked from elsewhere) goes to /newsletter/subscribe; Starlette's
    own redirect went to /subscribe, the blog's root behind the proxy."""
    client, prefix, token = served["client"], served["prefix"], served["token"]
    out = token(tokens.UNSUBSCRIBE, "subscribed")
    for path, target in [
        ("/subscribe/?lang=en", "subscribe?lang=en"),
        ("/feed.xml/", "feed.xml"),
        (f"/unsubscribe/{out}/", f"unsubscribe/{out}"),
    ]:
        moved = client.get(path, follow_redirects=False)
        assert moved.status_code == 307, path
        # (Where the browser goes: without a path, the same place as before.)
        where = moved.request.url.join(moved.headers["location"])
        assert where.raw_path.decode() == f"{prefix}/{target}"
    assert client.get("/gibt-es-nicht/", follow_redirects=False).status_code == 404


@pytest.mark.parametrize("path", ["/issues", "/subscribe/neu", "/webhooks"])
def test_a_base_path_that_begins_like_one_of_serves_own_pages_is_refused(
    make_project, tmp_path, monkeypatch, cli, path
):
    """Behind a proxy at /issues, a request for /issues/x could be the archive's page or
    the proxy's path, and was taken apart twice (a 404): serve refuses such a base_url."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    config = CONFIG.replace(
        'base_url = "https://news.example.com"', f'base_url = "https://jens.example.com{path}"'
    )
    root = make_project(config)
    with pytest.raises(ConfigError, match=r"begins like one of serve's own pages"):
        create_app(Project.load(root))
    create_app(Project.load(make_project(CONFIG.replace(
        'base_url = "https://news.example.com"', 'base_url = "https://jens.example.com/newsletter"'
    ), name="fine")))  # fmt: skip
