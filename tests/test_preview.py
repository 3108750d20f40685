"""The preview app in-process (Starlette TestClient), plus its watcher on real files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter.check import check_issue
from newsletter.errors import IssueError
from newsletter.issue import load_issue
from newsletter.preview.app import LOOPBACK_HOSTS, create_preview_app
from newsletter.preview.state import resolve_subscriber
from newsletter.preview.watch import WatchedFiles
from newsletter.project import Project, builtin_templates_dir
from newsletter.render import SAMPLE_SUBSCRIBER, render_issue
from tests.conftest import EXAMPLE_ISSUE

ISSUE = """\
---
title: Grüße aus Köln
preheader: „Anführungszeichen“ – und ‚halbe‘ …
---

Hallo {{ subscriber.first_name | default("zusammen") }},

Straßenbahn, Größe, Übermut.
"""


@pytest.fixture
def example(project: Path) -> Path:
    return project / "issues" / EXAMPLE_ISSUE.name


def client_for(root: Path, issue: Path, **options: Any) -> TestClient:
    app = create_preview_app(Project.load(root), issue, watch_files=False, **options)
    return TestClient(app)


def rerender(client: TestClient) -> dict[str, Any]:
    """What the watcher does after a save: render again (and run check), then the new state."""
    hub = client.app.state.hub  # type: ignore[attr-defined]
    client.portal.call(hub.rerender)
    client.portal.call(hub.settled)
    return client.get("/state.json").json()


def page_of(client: TestClient) -> BeautifulSoup:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return BeautifulSoup(response.text, "html.parser")


@pytest.mark.slow
def test_page_shows_sender_subject_preheader_and_the_email(project: Path, example: Path) -> None:
    with client_for(project, example) as client:
        soup = page_of(client)
    assert soup.select_one("#from-name").text == "Jens"
    assert soup.select_one("#from-email").text == "jens@example.com"
    assert soup.select_one("#to").text == SAMPLE_SUBSCRIBER["email"]
    assert soup.select_one("#subject").text == "Meta, KI und das Ende der Creator?"
    assert soup.select_one("#preheader").text == "Was 40 Milliarden Dollar für Influencer bedeuten"
    email = BeautifulSoup(soup.select_one("iframe#email")["srcdoc"], "html.parser")
    assert "Warum entwickelt Meta generative KI?" in email.get_text()
    assert "Hallo Alex," in email.get_text()
    assert not soup.select_one("#error").get("class")
    # Works offline: nothing on the page loads from elsewhere.
    assert not soup.select("script[src], link[href]")


def test_email_routes_serve_what_the_pipeline_renders(project: Path, example: Path) -> None:
    proj = Project.load(project)
    with client_for(project, example) as client:
        html = client.get("/email.html")
        text = client.get("/email.txt")
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    # Same pipeline as `build`: the subject and body text come out identical.
    rendered = render_issue(proj, load_issue(proj, example))
    assert rendered.subject == "Meta, KI und das Ende der Creator?"
    assert "Menschen außerhalb der EU" in html.text
    assert "Hallo Alex," in text.text and "Menschen außerhalb der EU" in text.text
    assert "{{" not in text.text and "%%nl:" not in html.text


def test_german_typography_survives(make_project: Callable[..., Path]) -> None:
    root = make_project(issues={"gruss.md": ISSUE})
    with client_for(root, root / "issues" / "gruss.md") as client:
        soup = page_of(client)
        state = client.get("/state.json").json()
    assert soup.select_one("#subject").text == "Grüße aus Köln"
    assert soup.select_one("#preheader").text == "„Anführungszeichen“ – und ‚halbe‘ …"
    assert "Straßenbahn, Größe, Übermut." in soup.select_one("#text").text
    assert "Straßenbahn, Größe, Übermut." in BeautifulSoup(state["html"], "html.parser").get_text()


def test_findings_of_check_are_listed(make_project: Callable[..., Path]) -> None:
    no_preheader = ISSUE.replace("preheader: „Anführungszeichen“ – und ‚halbe‘ …\n", "")
    root = make_project(issues={"gruss.md": no_preheader})
    issue = root / "issues" / "gruss.md"
    expected = check_issue(Project.load(root), issue)
    assert expected, "this issue should have check findings"
    with client_for(root, issue) as client:
        soup = page_of(client)
    items = soup.select("#findings li")
    assert [li.select_one(".msg").text for li in items] == [f.message for f in expected]
    assert [li.select_one(".sev").text for li in items] == [f.severity for f in expected]
    assert "issues/gruss.md" in items[0].select_one(".where").text
    assert soup.select_one("#no-findings").has_attr("hidden")


def test_broken_yaml_shows_file_and_line_then_recovers(project: Path, example: Path) -> None:
    good = example.read_text(encoding="utf-8")
    with client_for(project, example) as client:
        example.write_text(good.replace("slug: meta-ki-creator", "slug: [meta"), encoding="utf-8")
        state = rerender(client)
        assert state["error"]["path"] == f"issues/{example.name}"
        assert state["error"]["line"] == 7  # the file's line, front matter starts at 2
        assert "YAML" in state["error"]["reason"]
        soup = page_of(client)
        assert soup.select_one("#error-where").text == f"issues/{example.name}, line 7"
        assert "YAML" in soup.select_one("#error-reason").text
        # The last good email is kept (dimmed) so the author keeps their place.
        assert "Warum entwickelt Meta" in soup.select_one("iframe#email")["srcdoc"]
        assert "stale" in soup.select_one(".stage")["class"]
        assert client.get("/email.html").status_code == 200

        example.write_text(good.replace("Wir alle nutzen", "Wir alle lieben"), encoding="utf-8")
        state = rerender(client)
        assert state["error"] is None
        assert "Wir alle lieben" in state["html"]


def test_broken_config_names_newsletter_toml_and_line(project: Path, example: Path) -> None:
    config = project / "newsletter.toml"
    with client_for(project, example) as client:
        config.write_text(config.read_text(encoding="utf-8") + "\n[theme\n", encoding="utf-8")
        state = rerender(client)
    assert state["error"]["path"] == "newsletter.toml"
    assert state["error"]["line"] == len(config.read_text(encoding="utf-8").splitlines())
    assert "TOML" in state["error"]["reason"]


def test_template_error_names_the_template(project: Path, example: Path) -> None:
    (project / "templates").mkdir()
    override = project / "templates" / "email.txt.j2"
    override.write_text("{{ issue.title }}\n", encoding="utf-8")
    with client_for(project, example) as client:
        assert client.get("/state.json").json()["error"] is None
        override.write_text("{{ issue.title }}\n{{ nicht_da }}\n", encoding="utf-8")
        state = rerender(client)
    assert state["error"]["path"].endswith("templates/email.txt.j2")
    assert state["error"]["line"] == 2
    assert "nicht_da" in state["error"]["reason"]


def test_an_issue_broken_from_the_start_still_serves_the_error(make_project) -> None:
    root = make_project(issues={"kaputt.md": "---\ntitle: [\n---\nText\n"})
    issue = root / "issues" / "kaputt.md"
    with pytest.raises(IssueError) as raised:
        load_issue(Project.load(root), issue)
    where = f"issues/kaputt.md, line {raised.value.line}"
    with client_for(root, issue) as client:
        soup = page_of(client)
        email = client.get("/email.html")
    assert soup.select_one("#error-where").text == where
    assert soup.select_one("#error-reason").text == raised.value.reason
    assert email.status_code == 503
    assert where in email.text


def read_events(client: TestClient, count: int, between: Callable[[], None] | None = None):
    """The first `count` snapshot events of /events, calling `between` after the first."""
    events = []
    with client.stream("GET", "/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        fields: dict[str, str] = {}
        for line in lines:
            if line == "":
                if fields:
                    events.append(fields)
                    fields = {}
                    if len(events) == 1 and between:
                        between()
                    if len(events) == count:
                        break
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def test_events_stream_format(project: Path, example: Path) -> None:
    with client_for(project, example) as client:
        good = example.read_text(encoding="utf-8")

        def save() -> None:
            example.write_text(good.replace("Wir alle nutzen", "Wir alle lieben"), encoding="utf-8")
            client.portal.start_task_soon(client.app.state.hub.rerender)  # type: ignore[attr-defined]

        first, second = read_events(client, 2, between=save)
        client.app.state.hub.close()  # type: ignore[attr-defined]
    assert first["event"] == second["event"] == "snapshot"
    one, two = json.loads(first["data"]), json.loads(second["data"])
    assert int(first["id"]) == one["version"] < two["version"] == int(second["id"])
    assert one["boot"] == two["boot"]
    assert "Wir alle nutzen" in one["html"] and "Wir alle lieben" in two["html"]
    assert two["subject"] == "Meta, KI und das Ende der Creator?"
    assert set(two) >= {"from_name", "from_email", "to", "preheader", "text", "findings", "error"}


def test_as_subscriber_fills_their_fields(project: Path, example: Path, cli) -> None:
    result = cli(project, "subscribers", "add", "anna@example.com", "--first-name", "Anna")
    assert result.exit_code == 0, result.output
    proj = Project.load(project)
    with client_for(
        project, example, subscriber=resolve_subscriber(proj, "anna@example.com")
    ) as client:
        soup = page_of(client)
        text = client.get("/email.txt").text
    assert soup.select_one("#to").text == "anna@example.com"
    assert "Hallo Anna," in text


def test_as_unknown_subscriber_is_a_one_line_error(project: Path, example: Path, cli) -> None:
    result = cli(project, "preview", example.name, "--no-open", "--as", "niemand@example.com")
    assert result.exit_code == 1
    assert result.output.startswith("Error: niemand@example.com: no such subscriber")
    assert len(result.output.strip().splitlines()) == 1


def test_loopback_preview_refuses_other_host_names(project: Path, example: Path) -> None:
    # A loopback preview answers only to loopback names (DNS rebinding cannot reach it).
    app = create_preview_app(
        Project.load(project), example, watch_files=False, allowed_hosts=LOOPBACK_HOSTS
    )
    with TestClient(app, base_url="http://127.0.0.1:8025") as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"host": "evil.example"}).status_code == 400


def test_watched_files(project: Path, example: Path) -> None:
    files = WatchedFiles(project, example)
    assert files.matters(example)
    assert files.matters(project / "newsletter.toml")
    assert files.matters(project / "templates" / "email.mjml.j2")
    assert files.matters(builtin_templates_dir() / "footer.mjml.j2")
    assert not files.matters(project / "issues" / "other.md")
    assert not files.matters(project / "newsletter.db")
    assert example.parent in files.folders() and project in files.folders()


@pytest.fixture
def watching(project: Path, example: Path) -> Iterator[TestClient]:
    app = create_preview_app(Project.load(project), example)  # watches for real
    with TestClient(app) as client:
        yield client


def wait_for(client: TestClient, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = client.get("/state.json").json()
        if predicate(state):
            return state
        time.sleep(0.02)
    raise AssertionError(f"no update within 5 s; last state version {state['version']}")


def test_watcher_rerenders_on_save_and_on_atomic_rename(
    watching: TestClient, example: Path
) -> None:
    good = example.read_text(encoding="utf-8")
    example.write_text(good.replace("Wir alle nutzen", "Wir alle lieben"), encoding="utf-8")
    wait_for(watching, lambda s: "Wir alle lieben" in s["html"])
    # Editors that write a temporary file and rename it over the issue.
    temporary = example.with_name(".tmp-save")
    temporary.write_text(good.replace("Wir alle nutzen", "Wir alle teilen"), encoding="utf-8")
    temporary.replace(example)
    wait_for(watching, lambda s: "Wir alle teilen" in s["html"])


def test_jinja_error_in_the_body_names_the_issue_line(project: Path, example: Path) -> None:
    good = example.read_text(encoding="utf-8")
    broken = good.replace("Heute möchte ich", "{% if %} Heute möchte ich")
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "{% if %}" in text)
    with client_for(project, example) as client:
        example.write_text(broken, encoding="utf-8")
        state = rerender(client)
        soup = page_of(client)
    assert state["error"]["path"] == f"issues/{example.name}"
    assert state["error"]["line"] == line
    assert soup.select_one("#error-where").text == f"issues/{example.name}, line {line}"


def test_a_burst_of_saves_renders_once_or_twice(watching: TestClient, example: Path) -> None:
    state = watching.app.state.hub.state  # type: ignore[attr-defined]
    good = example.read_text(encoding="utf-8")
    before = state.renders
    for n in range(10):
        example.write_text(good.replace("Wir alle nutzen", f"Entwurf {n}:"), encoding="utf-8")
    wait_for(watching, lambda s: "Entwurf 9:" in s["html"])
    time.sleep(0.3)  # anything still queued would render by now
    assert 1 <= state.renders - before <= 2


def test_a_sequence_step_previews_as_sent_without_a_web_version_link(project: Path) -> None:
    # `sequences preview welcome/01` opens the step file; it is sent without "view in
    # browser" (a welcome email has no page under /issues/), so the preview shows none.
    from newsletter.sequences.status import step_path_for_preview
    from tests.support.sequences import SEQUENCE, STEP1, write_steps

    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + SEQUENCE, encoding="utf-8")
    write_steps(project, {"01-willkommen.md": STEP1})
    step = step_path_for_preview(Project.load(project), "welcome/01")

    with client_for(project, project / "issues" / EXAMPLE_ISSUE.name) as issue:
        issue_text = issue.get("/email.txt").text
    assert "Im Browser ansehen: https://news.example.com/issues/meta-ki-creator" in issue_text
    with client_for(project, step) as welcome:
        text, html = welcome.get("/email.txt").text, welcome.get("/email.html").text
    assert "Hallo Alex, schön, dass du da bist!" in text
    assert "Im Browser ansehen" not in text
    assert "Im Browser ansehen" not in html and "/issues/" not in html


def test_a_new_german_project_previews_with_the_imprint_as_a_reminder(tmp_path, cli) -> None:
    # `init --language de` cannot know the author's Impressum. The first preview reminds of
    # it as a warning; `check` and `send` still refuse, as German law requires the link.
    assert cli(None, "init", str(tmp_path / "brief"), "--language", "de").exit_code == 0
    root = tmp_path / "brief"
    [issue] = (root / "issues").glob("*-willkommen.md")
    with client_for(root, issue) as client:
        state = rerender(client)
    imprint = [f for f in state["findings"] if "imprint_url" in f["message"]]
    assert imprint == [
        {
            "severity": "warning",
            "message": "needed before sending: [newsletter] imprint_url is not set, and a "
            "German newsletter must link its Impressum in every email: add imprint_url = "
            '"https://example.com/impressum"',
            "where": "newsletter.toml",
        }
    ]
    assert not [f for f in state["findings"] if f["severity"] == "error"]

    checked = cli(root, "check", issue.name)
    assert checked.exit_code == 1
    assert "newsletter.toml: error: [newsletter] imprint_url is not set" in checked.output
    sent = cli(root, "send", issue.name, "--yes")
    assert sent.exit_code == 1
    assert "imprint_url is not set, and a German newsletter must link its Impressum" in sent.output
    assert not (root / "outbox").exists()
