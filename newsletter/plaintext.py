"""The plain-text part, written from the Markdown tokens (not scraped from the HTML).

Headings are underlined (`=` for h1, `-` for h2, `~` for h3; h4 to h6 stand on their own
line), lists keep their markers, quotes get `> `, tables are aligned columns, code is
indented, and links become numbered references `[1]` listed at the end. Footnotes are
numbered apart from them, as superscripts (`Text¹`, then `¹ The note.` below a rule). Paragraphs wrap at 72 columns; URLs and other
long words are never broken. Raw HTML gives the text a browser would show: `<br>` and block
elements break the line, script and style contents are left out.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from html.parser import HTMLParser

from markdown_it.token import Token

WIDTH = 72
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def footnote_mark(number: int) -> str:
    """`¹`, `¹²`: a footnote's number, which cannot be mistaken for a link reference `[1]`."""
    return str(number).translate(_SUPERSCRIPT)


#: Elements whose content is code or styling, never text for a reader.
_DROPPED = frozenset({"script", "style", "template", "head", "title"})
#: Elements a browser shows on a line of their own: their text starts and ends a line.
# fmt: off
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
# fmt: on
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)
_DROPPED_TAG_RE = re.compile(r"<(/?)(" + "|".join(sorted(_DROPPED)) + r")\b", re.IGNORECASE)


class _HtmlText(HTMLParser):
    """The text a reader sees of raw HTML in an issue: `<br>` and block elements break the
    line, script and style contents are dropped, entities are decoded, other tags vanish."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self._dropping += 1
        elif tag == "br" or tag in _BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" or tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self._dropping = max(0, self._dropping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self.parts.append(data)


def _html_lines(markup: str) -> list[str]:
    """The lines of text in a block of raw HTML; spaces and line breaks of the source
    collapse as a browser collapses them."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return [line for line in lines if line]


@dataclass
class _Item:
    first: str
    rest: str
    used: bool = False


@dataclass
class _List:
    ordered: bool
    number: int
    items: int = 0


@dataclass
class TextRenderer:
    width: int = WIDTH
    image_label: str = "Image"
    links: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _stack: list[object] = field(default_factory=list)
    _pending_blank: bool = False
    _blank_depth: int = 0

    # --- output -----------------------------------------------------------------
    def _prefixes(self) -> tuple[str, str]:
        """(prefix of the block's first line, prefix of its other lines)."""
        first, rest = "", ""
        for entry in self._stack:
            if entry == "quote":
                first += "> "
                rest += "> "
            elif isinstance(entry, _Item):
                first += entry.rest if entry.used else entry.first
                rest += entry.rest
        return first, rest

    def _mark_used(self) -> None:
        for entry in self._stack:
            if isinstance(entry, _Item):
                entry.used = True

    def _quote_depth(self) -> int:
        return sum(1 for e in self._stack if e == "quote")

    def _separator(self) -> None:
        if self.lines and self._pending_blank:
            # A blank line between blocks keeps `>` only where both sides are quoted.
            depth = min(self._quote_depth(), self._blank_depth)
            self.lines.append(">" * depth if depth else "")
        self._pending_blank = False

    def _blank_after(self) -> None:
        self._pending_blank = True
        self._blank_depth = self._quote_depth()

    def _emit(self, block_lines: list[str], wrap: bool = True) -> None:
        self._separator()
        first, rest = self._prefixes()
        out: list[str] = []
        for raw in block_lines:
            if wrap:
                available = max(20, self.width - len(rest))
                wrapped = textwrap.wrap(
                    raw, available, break_long_words=False, break_on_hyphens=False
                ) or [""]
            else:
                wrapped = [raw]
            out.extend(wrapped)
        for index, line in enumerate(out):
            prefix = first if index == 0 else rest
            self.lines.append((prefix + line).rstrip())
        self._mark_used()
        self._blank_after()

    # --- inline -----------------------------------------------------------------
    def _link_number(self, url: str) -> int:
        if url not in self.links:
            self.links.append(url)
        return self.links.index(url) + 1

    def inline(self, children: list[Token] | None) -> str:
        out: list[str] = []
        link_stack: list[tuple[str, int]] = []
        dropping = 0  # inside an inline <script> or <style>: its content is no text
        for token in children or []:
            kind = token.type
            if dropping and kind != "html_inline":
                continue
            if kind == "text" or kind == "code_inline":
                out.append(token.content)
            elif kind == "softbreak":
                out.append(" ")
            elif kind == "hardbreak":
                out.append("\n")
            elif kind == "link_open":
                link_stack.append((str(token.attrGet("href") or ""), len(out)))
            elif kind == "link_close" and link_stack:
                href, start = link_stack.pop()
                label = "".join(out[start:]).strip()
                if href and not _same_as_label(href, label):
                    out.append(f" [{self._link_number(href)}]")
            elif kind == "image":
                alt = token.content or "".join(c.content for c in token.children or [])
                src = str(token.attrGet("src") or "")
                label = f"[{self.image_label}: {alt}]" if alt else f"[{self.image_label}]"
                out.append(f"{label} [{self._link_number(src)}]" if src else label)
            elif kind in ("s_open", "s_close"):
                out.append("~~")  # a struck price (~~49 €~~) must not read as the price
            elif kind == "footnote_ref":
                out.append(footnote_mark(token.meta["id"] + 1))
            elif kind == "html_inline":
                if _BR_RE.fullmatch(token.content.strip()):
                    out.append("\n")  # as a Markdown hard break
                elif tag := _DROPPED_TAG_RE.match(token.content):
                    dropping = max(0, dropping + (-1 if tag.group(1) else 1))
        return "".join(out)

    # --- blocks -----------------------------------------------------------------
    def render(self, tokens: list[Token]) -> str:
        i = 0
        while i < len(tokens):
            token = tokens[i]
            kind = token.type
            if kind == "heading_open":
                text = self.inline(tokens[i + 1].children).strip()
                level = int(token.tag[1])
                if level == 1:
                    self._emit([text, "=" * len(text)], wrap=False)
                elif level == 2:
                    self._emit([text, "-" * len(text)], wrap=False)
                elif level == 3:
                    self._emit([text, "~" * len(text)], wrap=False)
                else:
                    self._emit([text])
                i += 3
                continue
            if kind == "paragraph_open":
                text = self.inline(tokens[i + 1].children)
                self._emit(text.split("\n"))
                i += 3
                continue
            if kind in ("bullet_list_open", "ordered_list_open"):
                start = int(token.attrGet("start") or 1)
                inside_item = bool(self._stack) and isinstance(self._stack[-1], _Item)
                if inside_item and i + 2 < len(tokens) and tokens[i + 2].hidden:
                    # A tight list nested in an item starts right below it.
                    self._pending_blank = False
                self._stack.append(_List(kind == "ordered_list_open", start))
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self._stack.pop()
                self._blank_after()
            elif kind == "list_item_open":
                parent = self._stack[-1]
                assert isinstance(parent, _List)
                if parent.ordered:
                    marker = f"{parent.number}. "
                    parent.number += 1
                else:
                    marker = "- "
                parent.items += 1
                following = tokens[i + 1] if i + 1 < len(tokens) else None
                if parent.items > 1 and following is not None and following.hidden:
                    # Items of a tight list follow each other without blank lines.
                    self._pending_blank = False
                self._stack.append(_Item(marker, " " * len(marker)))
            elif kind == "list_item_close":
                self._stack.pop()
            elif kind == "blockquote_open":
                self._stack.append("quote")
            elif kind == "blockquote_close":
                self._stack.pop()
                self._blank_after()
            elif kind in ("fence", "code_block"):
                code = token.content.rstrip("\n").split("\n")
                self._emit(["    " + line for line in code], wrap=False)
            elif kind == "hr":
                self._emit(["-" * 24], wrap=False)
            elif kind == "html_block":
                lines = _html_lines(token.content)
                if lines:
                    self._emit(lines)
            elif kind == "table_open":
                i = self._table(tokens, i)
                continue
            elif kind == "footnote_block_open":
                self._emit(["-" * 8], wrap=False)
            elif kind == "footnote_open":
                label = footnote_mark(token.meta["id"] + 1) + " "
                self._stack.append(_Item(label, " " * len(label)))
            elif kind == "footnote_close":
                self._stack.pop()
            i += 1
        if self.links:
            self._blank_after()
            refs = [f"[{n}] {url}" for n, url in enumerate(self.links, start=1)]
            self._emit(refs, wrap=False)
        return "\n".join(self.lines).strip("\n") + "\n"

    def _table(self, tokens: list[Token], i: int) -> int:
        rows: list[list[str]] = []
        aligns: list[str] = []
        header_rows = 0
        row: list[str] = []
        while tokens[i].type != "table_close":
            token = tokens[i]
            if token.type == "tr_open":
                row = []
            elif token.type == "tr_close":
                rows.append(row)
            elif token.type in ("th_open", "td_open"):
                style = str(token.attrGet("style") or "")
                if token.type == "th_open":
                    aligns.append(
                        "right" if "right" in style else "center" if "center" in style else "left"
                    )
                row.append(" ".join(self.inline(tokens[i + 1].children).split()))
            elif token.type == "thead_close":
                header_rows = len(rows)
            i += 1
        columns = max((len(r) for r in rows), default=0)
        aligns += ["left"] * (columns - len(aligns))
        widths = [max((len(r[c]) for r in rows if c < len(r)), default=0) for c in range(columns)]

        def cell(text: str, c: int) -> str:
            if aligns[c] == "right":
                return text.rjust(widths[c])
            if aligns[c] == "center":
                return text.center(widths[c])
            return text.ljust(widths[c])

        lines = []
        for n, r in enumerate(rows):
            r = r + [""] * (columns - len(r))
            lines.append(" | ".join(cell(t, c) for c, t in enumerate(r)).rstrip())
            if n + 1 == header_rows:
                lines.append("-+-".join("-" * w for w in widths))
        self._emit(lines, wrap=False)
        return i + 1


def _same_as_label(href: str, label: str) -> bool:
    """An autolinked URL shows itself; no reference needed."""
    bare = re.sub(r"^(https?://|mailto:)", "", href).rstrip("/")
    return label in (href, bare) or label.rstrip("/") == bare


def render_text(tokens: list[Token], image_label: str = "Image") -> str:
    return TextRenderer(image_label=image_label).render(tokens)
