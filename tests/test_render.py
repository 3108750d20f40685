"""Rendering the example issue and other Markdown into the HTML and text parts."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from newsletter.personalize import UNSUBSCRIBE_HTML_KEY, UNSUBSCRIBE_TEXT_KEY
from newsletter.project import Project
from newsletter.render import SAMPLE_SUBSCRIBER, RenderedIssue, render_file
from tests.conftest import CONFIG, EXAMPLE_ISSUE

UNSUBSCRIBE = "https://news.example.com/unsubscribe/TOKEN123"
INFLUENCERS = [
    "Lu do Magalu (7,2 Mio.)",
    "Lil Miquela (2,5 Mio.)",
    "Leya Love (545 K.)",
    "Aitana Lopez (325 K.)",
    "Rozy (175 K.)",
    "…",
]


@pytest.fixture
def example(project: Path) -> RenderedIssue:
    return render_file(Project.load(project), project / "issues" / EXAMPLE_ISSUE.name)


@pytest.fixture
def example_html(example: RenderedIssue) -> BeautifulSoup:
    html, _ = example.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    return BeautifulSoup(html, "html.parser")


def render_body(
    make_project: Callable[..., Path], body: str, front: str = "", **kw
) -> RenderedIssue:
    text = f"---\ntitle: Test issue\npreheader: A test\n{front}---\n{body}"
    root = make_project(issues={"test.md": text}, **kw)
    return render_file(Project.load(root), root / "issues" / "test.md")


def test_example_structure(example_html: BeautifulSoup) -> None:
    soup = example_html
    assert soup.html["lang"] == "de"
    assert soup.title.get_text() == "Meta, KI und das Ende der Creator?"
    assert [h.get_text() for h in soup.find_all("h2")] == [
        "Warum entwickelt Meta generative KI?",
        "Aber was steckt dahinter?",
        "Virtuelle Influencer und die Zukunft des Contents",
        "Was bedeutet das für Creator und Influencer?",
        "Fazit: Ein möglicher Paradigmenwechsel",
    ]
    assert soup.find("h1").get_text() == "Warum Metas KI Creator verdrängen könnte"
    items = soup.find("ul").find_all("li")
    assert [li.get_text() for li in items] == INFLUENCERS
    quote = soup.find("blockquote")
    assert quote.get_text().strip().startswith("“I think individual Creators (and Publishers)")
    # "Meta.ai" is text in the article, not a link.
    assert "Meta.ai" in soup.get_text()
    assert not [a for a in soup.find_all("a") if "meta.ai" in a.get("href", "").lower()]


def test_example_styles_inline_and_no_links(
    example: RenderedIssue, example_html: BeautifulSoup
) -> None:
    soup = example_html
    assert soup.find("link") is None
    assert "http://" not in example.html.replace("http://www.w3.org", "")
    for tag in ("h2", "p", "li", "blockquote"):
        for element in soup.find_all(tag):
            assert element.get("style"), f"<{tag}> has no inline style"
    assert "border-left:4px solid #1a56db" in soup.find("blockquote")["style"]
    # Only @media rules (or a <style media=...>) remain in <style>.
    for style in soup.find_all("style"):
        if style.get("media"):
            continue
        css = re.sub(r"/\*.*?\*/", "", style.get_text(), flags=re.S)
        outside_media = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*\s*\}", "", css).strip()
        assert outside_media == "", outside_media
    assert "prefers-color-scheme: dark" in example.html
    assert "max-width:600px" in example.html


def test_example_preheader_and_footer(example_html: BeautifulSoup) -> None:
    soup = example_html
    hidden = soup.body.find("div", class_="nl-preheader")
    assert "display:none" in hidden["style"]
    # Hidden without a tiny font in the background's colour (SpamAssassin's
    # HTML_FONT_LOW_CONTRAST), and still the first text an inbox finds.
    assert "color" not in hidden["style"] and "font-size" not in hidden["style"]
    assert soup.body.get_text().lstrip().startswith("Was 40 Milliarden Dollar")
    # The preheader, then invisible filler so inboxes show nothing after it.
    filler = "\u034f\u200c\xa0 "
    assert hidden.get_text().rstrip(filler) == "Was 40 Milliarden Dollar für Influencer bedeuten"
    assert hidden.get_text().count("\u200c") == 80
    text = soup.get_text()
    assert "Jens' Briefing" in text
    assert "Musterstraße 1, 10115 Berlin, Germany" in text
    unsubscribe = soup.find("a", string="Abmelden")
    assert unsubscribe["href"] == UNSUBSCRIBE
    view = soup.find("a", string="Im Browser ansehen")
    assert view["href"] == "https://news.example.com/issues/meta-ki-creator"


def test_example_personalized_greeting(example: RenderedIssue) -> None:
    html, text = example.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    assert (
        "Hallo Alex," in html
        and (
            "\n\nWarum Metas KI Creator verdrängen könnte\n"
            "========================================\n\nHallo Alex,"
        )
        in text
    )
    html, text = example.personalize(
        {"id": 7, "email": "x@example.com", "first_name": ""}, UNSUBSCRIBE
    )
    assert "Hallo zusammen," in html and "\nHallo zusammen,\n" in text
    # The keys are in the unpersonalized parts, once per part.
    assert UNSUBSCRIBE_HTML_KEY in example.html and UNSUBSCRIBE_TEXT_KEY in example.text
    assert "%%" not in html and "%%" not in text


def test_example_text_part(example: RenderedIssue) -> None:
    _, text = example.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    assert "Warum entwickelt Meta generative KI?\n------------------------------------\n" in text
    assert "\n".join(f"- {item}" for item in INFLUENCERS) in text
    assert "> “I think individual Creators (and Publishers) tend to overestimate" in text
    assert "<" not in text.replace("<b>", "")
    assert all(len(line) <= 72 for line in text.splitlines())
    footer = text[text.index("\n-- \n") :]
    assert "Musterstraße 1, 10115 Berlin, Germany" in footer
    assert f"Abmelden: {UNSUBSCRIBE}" in footer
    # "View in browser" moved up to the masthead.
    assert text.startswith(
        "Jens' Briefing\n2. Juli 2024\n"
        "Im Browser ansehen: https://news.example.com/issues/meta-ki-creator\n\n"
    )
    assert "Im Browser ansehen" not in footer
    for word in ("ä", "ö", "ü", "ß", "…", "“", "”"):
        assert word in text


def test_german_typography_survives(make_project: Callable[..., Path]) -> None:
    sample = "„Grüße“ – ‚äöüß‘ … ÄÖÜ ẞ"
    rendered = render_body(make_project, f"{sample}\n", front="language: de\n")
    html, text = rendered.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    assert sample in BeautifulSoup(html, "html.parser").get_text()
    assert sample in text


def test_markdown_features(make_project: Callable[..., Path]) -> None:
    body = """\
Plain www.example.org and https://example.com/a?b=1 and Meta.ai and jens@example.com.

| Name | Zahl |
|:-----|-----:|
| Äpfel | 3 |

~~alt~~ and a note[^1].

![Ein Bild](https://example.com/bild.png)

```
code   kept
```

[^1]: The footnote text.
"""
    rendered = render_body(make_project, body)
    soup = BeautifulSoup(rendered.html, "html.parser")
    hrefs = [a["href"] for a in soup.find_all("a", href=True)]
    assert "https://www.example.org" in hrefs
    assert "https://example.com/a?b=1" in hrefs
    assert not any("meta.ai" in h.lower() or h.startswith("mailto:jens") for h in hrefs)
    table = soup.find("table", style=re.compile("overflow-x:auto"))
    assert table is not None and "display:block" in table["style"]
    assert soup.find("s").get_text() == "alt"
    assert "The footnote text." in soup.get_text()
    image = soup.find("img", alt="Ein Bild")
    assert image["src"] == "https://example.com/bild.png"
    assert "max-width:100%" in image["style"] and "height:auto" in image["style"]
    pre = soup.find("pre")
    assert "overflow-x:auto" in pre["style"] and "code   kept" in pre.get_text()

    text = rendered.text
    assert "Name  | Zahl\n------+-----\nÄpfel |    3" in text
    assert "[Bild: Ein Bild] [1]" in text and "[1] https://example.com/bild.png" in text
    assert "    code   kept" in text


def test_text_links_are_numbered_references(make_project: Callable[..., Path]) -> None:
    long_url = "https://example.com/" + "a" * 90
    body = f"Read [the article](https://example.com/one) and [more](https://example.com/two), then [again](https://example.com/one).\n\nAlso {long_url} here.\n"
    text = render_body(make_project, body).text
    assert "Read the article [1] and more [2], then again [1]." in text
    assert "[1] https://example.com/one\n[2] https://example.com/two" in text
    assert long_url in text  # never broken across lines


def test_headings_lists_quotes_in_text(make_project: Callable[..., Path]) -> None:
    body = "# Title\n\n### Small\n\n1. one\n2. two\n   - inner\n\n> quoted\n> line\n"
    text = render_body(make_project, body).text
    assert "Title\n=====\n" in text
    assert "Small\n~~~~~\n" in text and "###" not in text
    assert "1. one\n2. two\n   - inner" in text
    assert "> quoted line" in text


RAW_HTML_BODY = """\
Zeile eins<br>Zeile zwei<br/>Zeile drei

<style>p { color: #333 }</style>

<script>alert("weg")</script>

<details><summary>Mehr</summary>Versteckt</details>

Inline <script>var geheim = 1;</script>Ende &amp; <b>fett</b>.

<div>
  <p>Größe &amp; Maß</p>
  <p>Zweiter „Absatz“</p>
</div>
"""


def test_raw_html_in_the_text_part(make_project: Callable[..., Path], cli) -> None:
    root = make_project(issues={"roh.md": f"---\ntitle: Roh\npreheader: p\n---\n{RAW_HTML_BODY}"})
    result = cli(root, "build", "roh")
    assert result.exit_code == 0, result.output
    text = (root / "build" / "roh.txt").read_text("utf-8")
    body = text.split("Roh\n===\n\n", 1)[1].split("\n\nFragen, Ideen", 1)[0]
    # Before: "Zeile einsZeile zwei", the CSS and the script in the text, "MehrVersteckt",
    # "&amp;" and the <div>'s indentation.
    assert body == (
        "Zeile eins\nZeile zwei\nZeile drei\n\n"
        "Mehr\nVersteckt\n\n"
        "Inline Ende & fett.\n\n"
        "Größe & Maß\nZweiter „Absatz“"
    )


def test_english_footer(make_project: Callable[..., Path]) -> None:
    rendered = render_body(make_project, "Hello.\n", front="language: en\n")
    soup = BeautifulSoup(rendered.html, "html.parser")
    assert soup.html["lang"] == "en"
    assert soup.find("a", string="Unsubscribe")["href"] == UNSUBSCRIBE_HTML_KEY
    assert soup.find("a", string="View in browser")
    assert "Unsubscribe: " + UNSUBSCRIBE_TEXT_KEY in rendered.text


def test_no_view_in_browser_without_base_url(make_project: Callable[..., Path]) -> None:
    config = CONFIG.replace('base_url = "https://news.example.com"\n', "")
    rendered = render_body(make_project, "Hello.\n", config=config)
    assert "Im Browser ansehen" not in rendered.html
    assert "Im Browser ansehen" not in rendered.text
    assert UNSUBSCRIBE_HTML_KEY in rendered.html


def test_preheader_falls_back_to_first_paragraph(make_project: Callable[..., Path]) -> None:
    text = (
        '---\ntitle: T\n---\nHallo {{ subscriber.first_name | default("du") }}, hier ist **neu**.\n'
    )
    root = make_project(issues={"t.md": text})
    rendered = render_file(Project.load(root), root / "issues" / "t.md")
    assert rendered.preheader == "Hallo, hier ist neu."
    assert "nlsubst" not in rendered.html


def test_preheader_skips_a_personal_greeting(make_project: Callable[..., Path]) -> None:
    text = (
        "---\ntitle: T\n---\n"
        'Hallo {{ subscriber.first_name | default("zusammen") }},\n\n'
        "Heute geht es um „KI“ und Creator.\n"
    )
    root = make_project(issues={"t.md": text})
    rendered = render_file(Project.load(root), root / "issues" / "t.md")
    assert rendered.preheader == "Heute geht es um „KI“ und Creator."


def test_theme_from_config(make_project: Callable[..., Path]) -> None:
    config = (
        CONFIG
        + """
[theme]
brand_color = "#ff6601"
background_color = "#eeeeef"
text_color = "#111111"
font_family = "Georgia, serif"
logo_url = "https://news.example.com/logo.png"
logo_alt = "Jens Logo"
logo_width = 90
"""
    )
    rendered = render_body(make_project, "A [link](https://example.com).\n\n> q\n", config=config)
    soup = BeautifulSoup(rendered.html, "html.parser")
    assert "color:#ff6601" in soup.find("a", string="link")["style"]
    assert "#ff6601" in soup.find("blockquote")["style"]
    assert "#eeeeef" in soup.body["style"]
    assert "Georgia, serif" in rendered.html
    logo = soup.find("img", alt="Jens Logo")
    assert logo["src"] == "https://news.example.com/logo.png" and logo["width"] == "90"
    assert soup.find("link") is None


def test_web_font_only_when_configured(make_project: Callable[..., Path]) -> None:
    config = (
        CONFIG
        + '\n[theme]\nweb_font_name = "Inter"\nweb_font_url = "https://fonts.example.com/inter.css"\n'
    )
    soup = BeautifulSoup(render_body(make_project, "Hi.\n", config=config).html, "html.parser")
    assert [link["href"] for link in soup.find_all("link")] == [
        "https://fonts.example.com/inter.css"
    ]


def test_project_template_overrides_builtin(make_project: Callable[..., Path]) -> None:
    footer = """\
<mj-section><mj-column><mj-text css-class="custom-footer">
  <p>Eigener Fuß: {{ newsletter.postal_address }} <a href="{{ unsubscribe_url }}">Tschüss</a></p>
</mj-text></mj-column></mj-section>
"""
    rendered = render_body(make_project, "Hi.\n", templates={"footer.mjml.j2": footer})
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find("a", string="Tschüss")["href"] == UNSUBSCRIBE
    assert "Eigener Fuß: Musterstraße 1" in soup.get_text()
    assert "Abmelden" not in html  # the built-in footer is gone
    assert "Abmelden: " in rendered.text  # the text footer was not overridden


def test_personalization_escaping_and_fields(make_project: Callable[..., Path]) -> None:
    body = (
        'Hi {{ subscriber.first_name | default("du") }} from {{ subscriber.company | default("?") }} '
        "({{ subscriber.fields.plan | upper }}) {{ subscriber.email }}\n\n"
        "[Profil](https://example.com/p?id={{ subscriber.id }})\n"
    )
    rendered = render_body(make_project, body)
    person = {
        "id": 42,
        "email": "tom@example.com",
        "name": None,
        "first_name": '<b>Tom & "Jerry"</b>',
        "last_name": None,
        "fields": {"company": "ACME <Ltd>", "plan": "pro"},
    }
    html, text = rendered.personalize(person, UNSUBSCRIBE)
    soup = BeautifulSoup(html, "html.parser")
    assert 'Hi <b>Tom & "Jerry"</b> from ACME <Ltd> (PRO) tom@example.com' in soup.get_text()
    assert soup.find("b") is None
    assert 'Hi <b>Tom & "Jerry"</b> from ACME <Ltd> (PRO) tom@example.com' in text
    assert soup.find("a", string="Profil")["href"] == "https://example.com/p?id=42"
    # A subscriber without the fields: defaults apply; no default renders empty, never crashes.
    html, text = rendered.personalize({"id": 1, "email": "a@example.com"}, UNSUBSCRIBE)
    assert "\nHi du from ? () a@example.com" in text


def test_substitution_values_cannot_inject_keys(make_project: Callable[..., Path]) -> None:
    rendered = render_body(make_project, "Hi {{ subscriber.first_name }}.\n")
    person = {"id": 1, "email": "a@example.com", "first_name": UNSUBSCRIBE_HTML_KEY + "x" * 20_000}
    subs = rendered.substitutions(person, UNSUBSCRIBE)
    assert all(len(v.encode()) < 10_000 for v in subs.values())
    html, _ = rendered.personalize(person, UNSUBSCRIBE)
    assert html.count(UNSUBSCRIBE) == 1


def test_render_makes_no_network_access(
    example: RenderedIssue, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("rendering tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    again = render_file(Project.load(project), project / "issues" / EXAMPLE_ISSUE.name)
    assert again.html == example.html


def test_new_override_is_picked_up_by_a_running_process(make_project: Callable[..., Path]) -> None:
    root = make_project(issues={"t.md": "---\ntitle: T\n---\nHi.\n"})
    project = Project.load(root)
    assert "Abmelden" in render_file(project, root / "issues" / "t.md").html
    (root / "templates").mkdir()
    (root / "templates" / "footer.mjml.j2").write_text(
        '<mj-section><mj-column><mj-text><a href="{{ unsubscribe_url }}">Weg</a> '
        "{{ newsletter.postal_address }}</mj-text></mj-column></mj-section>\n",
        encoding="utf-8",
    )
    html = render_file(project, root / "issues" / "t.md").html
    assert "Weg</a>" in html and "Abmelden" not in html


def test_subject_title_and_preheader_are_escaped_once(make_project: Callable[..., Path]) -> None:
    text = '---\ntitle: "Tom & Jerry\'s <Show> „Grüße“"\npreheader: "A & B <c>"\n---\nBody.\n'
    root = make_project(issues={"t.md": text})
    rendered = render_file(Project.load(root), root / "issues" / "t.md")
    soup = BeautifulSoup(rendered.html, "html.parser")
    assert soup.title.get_text() == "Tom & Jerry's <Show> „Grüße“"
    assert soup.find("h1").get_text() == "Tom & Jerry's <Show> „Grüße“"
    assert (
        soup.body.find("div", class_="nl-preheader").get_text().rstrip("\u034f\u200c\xa0 ")
        == "A & B <c>"
    )
    assert "\n\nTom & Jerry's <Show> „Grüße“\n" in rendered.text


def test_body_expressions_are_sandboxed(make_project: Callable[..., Path]) -> None:
    rendered = render_body(make_project, "X{{ subscriber.__class__ }}{{ subscriber._values }}X\n")
    html, text = rendered.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    assert "\nXX\n" in text
    assert "FieldView" not in html and "leser@example.com" not in html


def test_images_get_a_width_capped_at_the_column(make_project: Callable[..., Path]) -> None:
    body = (
        "![Wide](https://example.com/wide.png){width=1200 height=800}\n\n"
        '![Titled](https://example.com/small.png "300x200")\n\n'
        "![Unsized](https://example.com/unsized.png)\n"
    )
    rendered = render_body(make_project, body)
    soup = BeautifulSoup(rendered.html, "html.parser")
    sizes = {img["alt"]: (img.get("width"), img.get("height")) for img in soup.find_all("img")}
    assert sizes == {
        "Wide": ("552", "368"),  # 1200x800 scaled to the 552 px column
        "Titled": ("300", "200"),
        "Unsized": ("552", None),
    }
    assert not soup.find("img", title=True)  # a size in the title is no tooltip
    for img in soup.find_all("img"):
        assert "max-width:100%" in img["style"].replace(" ", "")
    config = CONFIG + "\n[theme]\nimage_width = 400\n"
    rendered = render_body(make_project, body, config=config)
    soup = BeautifulSoup(rendered.html, "html.parser")
    assert soup.find("img", alt="Unsized")["width"] == "400"


def test_footnotes_work_in_mail_clients(make_project: Callable[..., Path]) -> None:
    body = (
        "Meta investiert[^geld] in KI, sagt [The Verge](https://www.theverge.com/x).[^zitat]\n\n"
        "#### Vierte Ebene\n\n"
        "###### Sechste Ebene\n\n"
        "[^geld]: Bis zu 40 Milliarden Dollar, laut [Meta](https://about.meta.com/).\n"
        "[^zitat]: Ein Interview.\n"
    )
    rendered = render_body(make_project, body)
    soup = BeautifulSoup(rendered.html, "html.parser")
    assert soup.find("section") is None
    # Every in-page link lands on an anchor that has a `name` (Gmail, Outlook, Yahoo).
    targets = [a["href"][1:] for a in soup.find_all("a", href=re.compile("^#"))]
    assert len(targets) == 4
    for target in targets:
        assert soup.find("a", attrs={"name": target}) is not None, target
    assert "footnotes" in soup.find("div", class_="footnotes")["class"]

    text = rendered.text
    assert "[^" not in text
    assert "Meta investiert¹ in KI, sagt The Verge [1].²" in text
    assert "¹ Bis zu 40 Milliarden Dollar, laut Meta [2]." in text
    assert "² Ein Interview." in text
    assert "[1] https://www.theverge.com/x\n[2] https://about.meta.com/" in text
    assert "\nVierte Ebene\n" in text and "\nSechste Ebene\n" in text and "#" not in text


def test_unsubscribe_link_is_never_click_tracked(example_html: BeautifulSoup) -> None:
    [link] = example_html.find_all("a", href=UNSUBSCRIBE)
    assert link["clicktracking"] == "off"  # SendGrid's switch: it never rewrites this link


def test_imprint_and_privacy_links_in_both_footers(make_project: Callable[..., Path]) -> None:
    config = CONFIG.replace(
        'imprint_url = "https://news.example.com/impressum"\n',
        'imprint_url = "https://jens.example/impressum"\n'
        'privacy_url = "https://jens.example/datenschutz"\n',
    )
    rendered = render_body(make_project, "Text.\n", config=config)
    html, text = rendered.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    footer = BeautifulSoup(html, "html.parser").find(class_="nl-footer-text")
    links = {a.get_text(): a["href"] for a in footer.find_all("a")}
    assert links["Impressum"] == "https://jens.example/impressum"
    assert links["Datenschutz"] == "https://jens.example/datenschutz"
    assert "Impressum: https://jens.example/impressum\n" in text
    assert "Datenschutz: https://jens.example/datenschutz\n" in text
    english = render_body(make_project, "Text.\n", front="language: en\n", config=config)
    assert "Imprint: https://jens.example/impressum" in english.text
    assert "Privacy policy: https://jens.example/datenschutz" in english.text
