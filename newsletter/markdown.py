"""The Markdown dialect of issues: CommonMark + tables + strikethrough + footnotes + linkify.

Linkify only turns explicit URLs (`https://…`, `mailto:…`, `www.…`) into links: an article
that says "Meta.ai" or "jens@example.com" as plain text must not grow links.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from linkify_it import LinkifyIt
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.footnote import footnote_plugin


class ExplicitLinkify(LinkifyIt):
    """linkify-it with fuzzy matches dropped, except `www.` hosts (linked as https)."""

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


@lru_cache(maxsize=1)
def markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"linkify": True, "html": True, "typographer": False})
    md.enable(["table", "strikethrough", "linkify"])
    md.use(footnote_plugin)
    md.linkify = ExplicitLinkify().set({"fuzzy_email": False})
    return md


def parse(body: str) -> tuple[list[Token], dict[str, Any]]:
    """Tokens plus the environment (footnotes live there)."""
    env: dict[str, Any] = {}
    tokens = markdown().parse(body, env)
    return tokens, env


def render_html(tokens: list[Token], env: dict[str, Any]) -> str:
    md = markdown()
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
