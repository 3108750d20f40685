"""The archive's pages collect addresses (their sign-up form), so the privacy policy must be
at hand there (GDPR Art. 13). Before, `GET /`, `/issues/<slug>`, the 404 page and the static
site linked only the imprint. Now each links `[newsletter] privacy_url` in its footer and
next to the sign-up form, and an edited config shows on the next page `serve` answers."""

from __future__ import annotations

from pathlib import Path

from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG

PRIVACY = "https://jens.example.com/datenschutz"
IMPRINT_LINE = 'imprint_url = "https://news.example.com/impressum"\n'
WITH_PRIVACY = CONFIG.replace(IMPRINT_LINE, IMPRINT_LINE + f'privacy_url = "{PRIVACY}"\n')
ISSUE = "---\ntitle: Datenschutz für alle\nslug: datenschutz\n---\n\nGrüße aus der Straße.\n"


def sent_project(make_project, cli, config: str) -> Path:
    """A project whose one issue went to its one reader through the fake SendGrid."""
    root = make_project(config, issues={"2024-07-02-datenschutz.md": ISSUE})
    add_subscriber(open_engine(Project.load(root).database_url), "leserin@example.de")
    result = cli(root, "send", "datenschutz", "--yes")
    assert result.exit_code == 0, result.output
    return root


def privacy_links(html: str) -> dict[str, list[str]]:
    """Where the page links the privacy policy: 'footer' and 'form' (the sign-up section)."""
    soup = BeautifulSoup(html, "html.parser")
    found: dict[str, list[str]] = {"footer": [], "form": []}
    for link in soup.find_all("a", href=PRIVACY):
        where = "form" if link.find_parent(class_="nl-archive-subscribe") else "footer"
        if where == "footer":
            assert link.find_parent(class_="nl-archive-legal"), link
        found[where].append(link.get_text(" ", strip=True))
    return found


def test_served_archive_pages_link_the_privacy_policy(make_project, cli, sg) -> None:
    root = sent_project(make_project, cli, WITH_PRIVACY)
    client = TestClient(create_app(Project.load(root)))
    index, issue = client.get("/"), client.get("/issues/datenschutz")
    missing = client.get("/issues/gibt-es-nicht")
    assert (index.status_code, issue.status_code, missing.status_code) == (200, 200, 404)
    with_form = {
        "footer": ["Datenschutz"],
        "form": ["Wie wir mit deinen Daten umgehen (Datenschutzerklärung)"],
    }
    assert privacy_links(index.text) == with_form
    assert privacy_links(issue.text) == with_form
    assert privacy_links(missing.text) == {"footer": ["Datenschutz"], "form": []}


def test_the_static_site_links_the_privacy_policy(make_project, cli, sg, tmp_path) -> None:
    root = sent_project(make_project, cli, WITH_PRIVACY)
    site = tmp_path / "site"
    result = cli(root, "archive", "build", "-o", str(site), "--quiet")
    assert result.exit_code == 0, result.output
    for page in ("index.html", "issues/datenschutz/index.html"):
        links = privacy_links((site / page).read_text("utf-8"))
        assert links["footer"] == ["Datenschutz"] and len(links["form"]) == 1, page
    assert privacy_links((site / "404.html").read_text("utf-8"))["footer"] == ["Datenschutz"]


def test_privacy_url_added_while_serve_runs_shows_on_the_next_page(make_project, cli, sg) -> None:
    root = sent_project(make_project, cli, CONFIG)
    client = TestClient(create_app(Project.load(root)))
    for path in ("/", "/issues/datenschutz"):
        assert privacy_links(client.get(path).text) == {"footer": [], "form": []}, path

    (root / "newsletter.toml").write_text(WITH_PRIVACY, encoding="utf-8")
    for path in ("/", "/issues/datenschutz"):
        links = privacy_links(client.get(path).text)
        assert links["footer"] == ["Datenschutz"] and len(links["form"]) == 1, path
