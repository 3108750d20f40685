"""The Markdown dialect of issues: CommonMark + tables + strikethrough + footnotes + linkify,
plus an image's size: `![Alt](https://…/a.png){width=600 height=400}` or the title
`![Alt](https://…/a.png "600x400")`.

Linkify only turns explicit URLs (`https://…`, `mailto:…`, `www.…`) into links: an article
that says "Meta.ai" or "jens@example.com" as plain text must not grow links.

HTML comments (`<!-- Notiz an mich: Honorar offen -->`) are the author's private notes:
`parse` drops them, so neither the email, its text part, the web archive nor the feeds
carry them. Outlook's conditional comments (`<!--[if mso]>…<![endif]-->`) are markup and
stay, as does all other raw HTML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Any

from linkify_it import LinkifyIt
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.attrs import attrs_plugin
from mdit_py_plugins.footnote import footnote_plugin

#: The width of the email's text column: the 600 px card less 24 px padding either side.
COLUMN_WIDTH = 552

_SIZE_TITLE_RE = re.compile(r"^\s*(\d{1,5})\s*[x×]\s*(\d{1,5})\s*$")
_PIXELS_RE = re.compile(r"^\s*(\d{1,5})\s*(?:px)?\s*$")


@dataclass(frozen=True)
class ImageSize:
    """An image's size in the email: `known` is false when only the column width was left."""

    width: int
    height: int | None
    known: bool


def image_size(token: Token, default_width: int | None = None) -> ImageSize:
    """The size to give an image token: from `{width=… height=…}`, a "WxH" title, or
    `default_width` (the config), else the column; capped at the column, height scaled."""
    width = height = None
    title = str(token.attrGet("title") or "")
    sized_title = _SIZE_TITLE_RE.match(title)
    if sized_title:
        width, height = int(sized_title.group(1)), int(sized_title.group(2))
    for name in ("width", "height"):
        given = _PIXELS_RE.match(str(token.attrGet(name) or ""))
        if given:
            if name == "width":
                width = int(given.group(1))
            else:
                height = int(given.group(1))
    known = bool(width)
    if not width:
        width, height, known = default_width or COLUMN_WIDTH, None, default_width is not None
    if width > COLUMN_WIDTH:
        height = round(height * COLUMN_WIDTH / width) if height else None
        width = COLUMN_WIDTH
    return ImageSize(width, height or None, known)


def _render_image(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    """`<img>` with `width` (and `height` when known): Outlook for Windows ignores
    `max-width`, so without them a 1200 px image overflows the card."""

    token = tokens[idx]
    size = image_size(token, env.get("image_width"))
    alt = self.renderInlineAsText(token.children or [], options, env)
    attrs = [f'src="{escape(str(token.attrGet("src") or ""))}"', f'alt="{escape(alt)}"']
    title = str(token.attrGet("title") or "")
    if title and not _SIZE_TITLE_RE.match(title):
        attrs.append(f'title="{escape(title)}"')
    attrs.append(f'width="{size.width}"')
    if size.height:
        attrs.append(f'height="{size.height}"')
    return f"<img {' '.join(attrs)}>"


class ExplicitLinkify(LinkifyIt):
    """linkify-it with fuzzy matches dropped, except `www.` hosts (linked as https)."""

    # Only explicit links are kept (see `match`): a text without a scheme's ":" or "//",
    # without "www." and without an entity that could spell them holds none, so linkify-it's
    # tests, whose fuzzy patterns take 40-60 ms to compile in each process, need not run for
    # it (a text that passes gets linkify-it's own answer).
    def pretest(self, text: str) -> bool:
        return _may_hold_explicit_link(text) and bool(super().pretest(text))

    def test(self, text: str) -> bool:
        return _may_hold_explicit_link(text) and bool(super().test(text))

    def match(self, text: str) -> list[Any] | None:
        found = super().match(text)
        if not found:
            return None
        kept = []
        for match in found:
            if match.schema:
                kept.append(match)
            elif match.raw.lower().startswith("www."):
                match.url = "https://" + match.raw
                kept.append(match)
        return kept or None


def _may_hold_explicit_link(text: str) -> bool:
    # "&": an entity (`&#58;`, `&#119;`) may become ":", "/" or "w" in the text tokens.
    return ":" in text or "/" in text or "&" in text or "www." in text.lower()


@lru_cache(maxsize=1)
def markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"linkify": True, "html": True, "typographer": False})
    md.enable(["table", "strikethrough", "linkify"])
    md.use(footnote_plugin)
    md.use(attrs_plugin, after=("image",))
    md.add_render_rule("image", _render_image)
    md.add_render_rule("footnote_ref", _footnote_ref)
    md.add_render_rule("footnote_block_open", _footnote_block_open)
    md.add_render_rule("footnote_block_close", _footnote_block_close)
    md.add_render_rule("footnote_open", _footnote_open)
    md.add_render_rule("footnote_anchor", _footnote_anchor)
    md.linkify = ExplicitLinkify().set({"fuzzy_email": False})
    return md


def parse(body: str) -> tuple[list[Token], dict[str, Any]]:
    """Tokens plus the environment (footnotes live there); HTML comments left out."""
    env: dict[str, Any] = {}
    tokens = markdown().parse(body, env)
    return _without_comments(tokens), env


#: An HTML comment as a browser ends it: at `-->` (or `--!>`), at once for `<!-->` and
#: `<!--->`, or, never closed, at the end of its HTML block.
_COMMENT_RE = re.compile(r"<!--(?:-?>|(?P<inside>[\s\S]*?)(?:--!?>|\Z))")


def _drop_comment(match: re.Match[str]) -> str:
    inside = match.group("inside") or ""
    # Outlook's conditional comments (`<!--[if mso]>`, `<!--<![endif]-->`) are markup.
    return match.group(0) if inside.startswith(("[if", "<![endif]")) else ""


def _without_comments(tokens: list[Token]) -> list[Token]:
    kept = []
    for token in tokens:
        if token.type == "html_block" and "<!--" in token.content:
            token.content = _COMMENT_RE.sub(_drop_comment, token.content)
            if not token.content.strip():
                continue  # a block that was only a note: gone (it must not count as content)
        elif token.type == "inline" and token.children:
            token.children = [
                child
                for child in token.children
                if child.type != "html_inline" or _COMMENT_RE.sub(_drop_comment, child.content)
            ]
        kept.append(token)
    return kept


# Footnotes for mail clients: Gmail, Outlook and Yahoo ignore `id` targets (so anchors
# also carry `name`), and Outlook and Yahoo drop the styling of a <section>.
def _footnote_ref(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    n = tokens[idx].meta["id"] + 1
    sub = tokens[idx].meta.get("subId", 0)
    ref = f"fnref{n}" + (f"-{sub}" if sub else "")
    return f'<sup class="footnote-ref"><a href="#fn{n}" id="{ref}" name="{ref}">{n}</a></sup>'


def _footnote_block_open(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    return '<hr class="footnotes-sep">\n<div class="footnotes">\n<ol class="footnotes-list">\n'


def _footnote_block_close(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    return "</ol>\n</div>\n"


def _footnote_open(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    n = tokens[idx].meta["id"] + 1
    return f'<li id="fn{n}" class="footnote-item"><a name="fn{n}"></a>'


def _footnote_anchor(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    n = tokens[idx].meta["id"] + 1
    sub = tokens[idx].meta.get("subId", 0)
    ref = f"fnref{n}" + (f"-{sub}" if sub else "")
    # ↩ with U+FE0E, so iOS does not draw it as an emoji.
    return f' <a href="#{ref}" class="footnote-backref">\u21a9\ufe0e</a>'


def render_html(tokens: list[Token], env: dict[str, Any], image_width: int | None = None) -> str:
    """HTML of the tokens; `image_width` is the config's width for images without a size."""
    md = markdown()
    env["image_width"] = image_width
    return md.renderer.render(tokens, md.options, env)


def iter_inline(tokens: list[Token]) -> Any:
    """(inline child token, its 0-based line in the body) for every inline token."""
    for token in tokens:
        if token.type == "inline" and token.children:
            line = token.map[0] if token.map else None
            for child in token.children:
                yield child, line
                if line is not None and child.type in ("softbreak", "hardbreak"):
                    line += 1
