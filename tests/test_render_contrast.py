"""WCAG AA contrast (4.5:1) for every piece of text in the email, light and dark.

Light mode is computed from the inline styles (what a mail app without <style> support
shows); dark mode from the styles Chromium computes under prefers-color-scheme: dark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup, Comment, NavigableString, Tag

from newsletter.colors import AA_CONTRAST, contrast_ratio, parse_color
from newsletter.project import Project
from newsletter.render import SAMPLE_SUBSCRIBER, render_file
from tests.browser import chromium
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.support.render import EVERYTHING

EXAMPLE_THEME = CONFIG + '\n[theme]\nbrand_color = "#0f766e"\n'


def _styles(tag: Tag) -> dict[str, str]:
    declarations = {}
    for part in str(tag.get("style") or "").split(";"):
        name, _, value = part.partition(":")
        if value.strip():
            declarations[name.strip().lower()] = value.strip().removesuffix("!important").strip()
    return declarations


def _hidden(tag: Tag) -> bool:
    return any(_styles(t).get("display") == "none" for t in [tag, *tag.parents] if t.name)


def _inline_color(tag: Tag, properties: tuple[str, ...], attribute: str | None) -> Any:
    for element in [tag, *tag.parents]:
        if not isinstance(element, Tag) or element.name == "[document]":
            continue
        styles = _styles(element)
        for name in properties:
            color = parse_color(styles[name]) if name in styles else None
            if color is not None:
                return color
        if attribute and element.get(attribute):
            color = parse_color(str(element[attribute]))
            if color is not None:
                return color
    return None


def low_contrast_inline(html: str) -> list[tuple[str, float]]:
    """(text, ratio) for each visible text whose inline colours fall below AA."""
    soup = BeautifulSoup(html, "html.parser")
    failures = []
    for string in soup.body.find_all(string=True):
        if isinstance(string, Comment) or not isinstance(string, NavigableString):
            continue
        if not string.strip() or _hidden(string.parent):
            continue
        fg = _inline_color(string.parent, ("color",), None) or (0.0, 0.0, 0.0)
        bg = _inline_color(string.parent, ("background-color", "background"), "bgcolor") or (
            1.0,
            1.0,
            1.0,
        )
        ratio = contrast_ratio(fg, bg)
        if ratio < AA_CONTRAST:
            failures.append((string.strip()[:40], round(ratio, 2)))
    return failures


def render_everything(make_project: Callable[..., Path], config: str = CONFIG) -> str:
    root = make_project(config=config, issues={"all.md": EVERYTHING})
    rendered = render_file(Project.load(root), root / "issues" / "all.md")
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, "https://news.example.com/unsubscribe/x")
    return html


@pytest.mark.parametrize("config", [CONFIG, EXAMPLE_THEME], ids=["default", "example-theme"])
def test_light_mode_contrast_from_inline_styles(
    make_project: Callable[..., Path], config: str
) -> None:
    html = render_everything(make_project, config)
    assert "durchgestrichen" in html
    assert low_contrast_inline(html) == []


def test_example_issue_contrast_from_inline_styles(project: Path) -> None:
    rendered = render_file(Project.load(project), project / "issues" / EXAMPLE_ISSUE.name)
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, "https://news.example.com/unsubscribe/x")
    assert low_contrast_inline(html) == []


DARK_CONTRAST_JS = """
() => {
  const rgba = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgba(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return getComputedStyle(el).backgroundColor;
    }
    return 'rgb(255, 255, 255)';
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.data.trim() || !el.getClientRects().length) continue;
    out.push([node.data.trim().slice(0, 40), getComputedStyle(el).color, background(el)]);
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.mark.slow
@pytest.mark.browser
def test_dark_mode_contrast_in_chromium(browser: Any, make_project: Callable[..., Path]) -> None:
    html = render_everything(make_project, EXAMPLE_THEME)
    page = browser.new_page(viewport={"width": 800, "height": 900}, color_scheme="dark")
    try:
        page.route("**/*", lambda route: route.abort())
        page.set_content(html)
        texts = page.evaluate(DARK_CONTRAST_JS)
    finally:
        page.close()
    assert any(text == "durchgestrichen" for text, _, _ in texts)
    failures = []
    for text, fg, bg in texts:
        ratio = contrast_ratio(parse_color(fg), parse_color(bg))  # type: ignore[arg-type]
        if ratio < AA_CONTRAST:
            failures.append((text, fg, bg, round(ratio, 2)))
    assert failures == []


@pytest.mark.parametrize(
    "value",
    ["#1a73e8", "#FFF", "#0b0C0d", "#abc", "#000000", "#Ff00aA", "#12", "#12345", "#1234",
     "#11223344", " #ffffff", "#ffffff ", "#gggggg", "red", "rgb(10, 20, 30)", "#"],
)  # fmt: skip
def test_parse_color_reads_hex_as_tinycss2_does(value: str) -> None:
    # parse_color reads plain #rgb/#rrggbb itself (tinycss2 is slow to import); tinycss2 is
    # the reference for every value, those included.
    from tinycss2.color3 import parse_color as css_color

    reference = css_color(value)
    expected = (
        None
        if reference is None or isinstance(reference, str) or reference.alpha < 1
        else (reference.red, reference.green, reference.blue)
    )
    assert parse_color(value) == expected
