"""The rendered email in headless Chromium: a 375 px phone never scrolls sideways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.project import Project
from newsletter.render import SAMPLE_SUBSCRIBER, render_file
from tests.browser import chromium
from tests.conftest import EXAMPLE_ISSUE

pytestmark = pytest.mark.browser

WIDE_IMAGE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1600" height="400">'
    '<rect width="1600" height="400" fill="#1a56db"/></svg>'
)
WIDE_ISSUE = f"""\
---
title: Breit
preheader: Alles, was zu breit ist
---
Ein langer Link https://example.com/{"a" * 150} und ein langes Wort
Donaudampfschifffahrtsgesellschaftskapitänswitwenrentenversicherungsanstaltsgebäude.

| Spalte eins | Spalte zwei | Spalte drei | Spalte vier | Spalte fünf | Spalte sechs |
|---|---|---|---|---|---|
| {"breiter Inhalt " * 4} | {"breiter Inhalt " * 4} | x | y | z | {"w" * 40} |

```
{"eine sehr lange Codezeile " * 8}
```

![Ein breites Bild](https://example.com/wide.svg)
"""

PHOTO_1200 = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="600">'
    '<rect width="1200" height="600" fill="#0f766e"/></svg>'
)
# What the German blogger's articles hold: a comparison table, compound words, a long link.
PHONE_ISSUE = f"""\
---
title: Plattformen im Vergleich
preheader: Wer wächst, wer schrumpft
---
Mehr dazu unter https://example.com/{"pfad/" * 20}ende und in der
Rentenversicherungsanstaltsgebäudeverwaltungsvorschrift.

| Plattform | Nutzerinnen und Nutzer | Wachstum | Datenbank |
|---|---|---|---|
| Instagram | zwei Milliarden Menschen | +40 % | PostgreSQL |
| Facebook | drei Milliarden Menschen weltweit | +5 % | Postgres |
| Threads | 175 Millionen | +120 % | Cassandra |

![Ein Foto](https://example.com/photo.svg){{width=1200 height=600}}
"""

SPLIT_WORDS_JS = """
() => {
  const split = [];
  for (const cell of document.querySelectorAll('.nl-content td, .nl-content th')) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /\\S+/g;
      let m;
      while ((m = re.exec(node.data))) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (range.getClientRects().length > 1) split.push(m[0]);
      }
    }
  }
  return split;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def open_email(browser: Any, html: str, width: int) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests: list[str] = []

    def handle(route: Any) -> None:
        requests.append(route.request.url)
        if route.request.url == "https://example.com/wide.svg":
            route.fulfill(body=WIDE_IMAGE, content_type="image/svg+xml")
        else:
            route.abort()

    def handle_all(route: Any) -> None:
        if route.request.url == "https://example.com/photo.svg":
            requests.append(route.request.url)
            route.fulfill(body=PHOTO_1200, content_type="image/svg+xml")
        else:
            handle(route)

    page.route("**/*", handle_all)
    page.set_content(html, wait_until="load")
    return page, requests


def page_width(page: Any) -> int:
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("width", [375, 800])
def test_example_fits_and_fetches_nothing(browser: Any, project: Path, width: int) -> None:
    rendered = render_file(Project.load(project), project / "issues" / EXAMPLE_ISSUE.name)
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, "https://news.example.com/unsubscribe/x")
    page, requests = open_email(browser, html, width)
    try:
        assert page_width(page) <= width
        assert requests == []
        column = page.evaluate("document.querySelector('h2').getBoundingClientRect().width")
        assert column <= 600
        assert page.get_by_text("Lil Miquela (2,5 Mio.)").is_visible()
    finally:
        page.close()


@pytest.mark.slow
def test_wide_content_scrolls_inside_its_own_box_on_a_phone(
    browser: Any, make_project: Callable[..., Path]
) -> None:
    root = make_project(issues={"wide.md": WIDE_ISSUE})
    rendered = render_file(Project.load(root), root / "issues" / "wide.md")
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, "https://news.example.com/unsubscribe/x")
    page, _ = open_email(browser, html, 375)
    try:
        assert page_width(page) <= 375
        pre = page.evaluate(
            "(() => { const e = document.querySelector('pre');"
            " return [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().right]; })()"
        )
        assert pre[0] > pre[1], "the long code line should scroll inside the <pre>"
        assert pre[2] <= 375
        image = page.evaluate(
            "(() => { const e = document.querySelector('img[alt=\"Ein breites Bild\"]');"
            " return [e.naturalWidth, e.getBoundingClientRect().width]; })()"
        )
        assert image[0] == 1600 and image[1] <= 375
        table_right = page.evaluate(
            "document.querySelector('table[style*=\"overflow-x\"]').getBoundingClientRect().right"
        )
        assert table_right <= 375
    finally:
        page.close()


@pytest.mark.slow
def test_phone_keeps_words_whole_and_images_in_the_column(
    browser: Any, make_project: Callable[..., Path]
) -> None:
    root = make_project(issues={"phone.md": PHONE_ISSUE})
    rendered = render_file(Project.load(root), root / "issues" / "phone.md")
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, "https://news.example.com/unsubscribe/x")
    assert "word-break" not in html
    page, _ = open_email(browser, html, 375)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") == 375
        assert page.evaluate(SPLIT_WORDS_JS) == []
        table = page.evaluate(
            "(() => { const e = document.querySelector('.nl-content table');"
            " return [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().right]; })()"
        )
        assert table[0] > table[1], "the wide table should scroll inside its own box"
        assert table[2] <= 375
        column = page.evaluate(
            "(() => { const td = document.querySelector('td.nl-content');"
            " const s = getComputedStyle(td);"
            " return td.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight); })()"
        )
        image = page.evaluate(
            "(() => { const e = document.querySelector('img[alt=\"Ein Foto\"]');"
            " return [e.naturalWidth, e.getBoundingClientRect().width]; })()"
        )
        assert image[0] == 1200 and 0 < image[1] <= column
        # The long link and the long word wrap rather than widen the page.
        link = page.evaluate(
            "document.querySelector('.nl-content p a').getBoundingClientRect().right"
        )
        assert link <= 375
    finally:
        page.close()
