"""premailer's inlining of an email, replayed from a table of what premailer made of its CSS.

premailer spends most of its time (and 0.2 s importing cssutils and requests) turning CSS text
into declarations: the <style> blocks, which come from the templates and are the same for
every issue, and the elements' `style` attributes, which MJML writes from the templates too.
The rest, matching selectors and merging, is cheap lxml work. So the table keeps, per <style>
text, the rules premailer extracts (selector, specificity, declarations) and the CSS it leaves
in the <style> (media queries), and per `style` attribute premailer's (name, value) pairs;
`replay` then does premailer's document work with lxml exactly as `Premailer.transform` does
for the options in `newsletter.inline_css`. Anything not in the table (a new template, theme
or library version; a `style=` in an issue's own HTML) is a `Miss`: premailer runs, and
`learn` adds what it made of that email's CSS to the table.

The table is filled by premailer itself (`learn`), never written by hand: the one shipped
beside this module covers the built-in templates with the default theme, for the premailer,
cssutils, cssselect and lxml versions named in its stamp (it is not used with others;
scripts/inline_table.py writes it; tests/test_inline_table.py checks that it is current and
that the replay gives premailer's bytes).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from newsletter.installed import installed_version

#: premailer's options in `newsletter.inline_css._premailer`, as the replay implements them.
OPTIONS = "no-network no-style-tags leftover-css keep-classes keep-important no-validation -hw"
SHIPPED = Path(__file__).with_name("inline_table.json")
#: premailer's FILTER_PSEUDOSELECTORS: selectors with these are matched, not left over.
_FILTER_PSEUDOSELECTORS = (":last-child", ":first-child", ":nth-child")
_SHORT_COLOR = re.compile(r"^#([0-9a-f])([0-9a-f])([0-9a-f])$", re.I)

Pairs = list[tuple[str, str]]


class Miss(Exception):
    """The email needs CSS the table does not know: premailer has to run."""


class Table:
    """premailer's results by input: `blocks` per <style> text, `styles` per style attribute,
    `floats` per inlined style of an image that may float (cssutils' `float` of it), and
    `xpaths` per CSS selector (lxml's CSSSelector translation, which premailer matches with)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.blocks: dict[str, dict[str, Any]] = data.get("blocks", {})
        self.styles: dict[str, Pairs] = data.get("styles", {})
        self.floats: dict[str, str] = data.get("floats", {})
        self.xpaths: dict[str, str] = data.get("xpaths", {})

    def as_json(self, stamp: str) -> str:
        return json.dumps(
            {
                "stamp": stamp,
                "blocks": self.blocks,
                "styles": self.styles,
                "floats": self.floats,
                "xpaths": self.xpaths,
            },
            ensure_ascii=False,
            sort_keys=True,
            indent=0,
        )

    def update(self, other: Table) -> None:
        self.blocks.update(other.blocks)
        self.styles.update(other.styles)
        self.floats.update(other.floats)
        self.xpaths.update(other.xpaths)


def parse_table(text: str, stamp: str) -> Table | None:
    """A table read back; None when it is for other libraries or options, or not a table."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("stamp") != stamp:
        return None
    return Table(data)


@functools.cache
def version_stamp() -> str | None:
    """The options and the installed premailer, cssutils, cssselect and lxml versions (from
    their dist-info folders, found without importing them); None when they cannot be told."""
    parts = [OPTIONS]
    for package in ("premailer", "cssutils", "cssselect", "lxml"):
        version = installed_version(package)
        if version is None:
            return None
        parts.append(f"{package} {version}")
    return "\n".join(parts)


@functools.cache
def shipped_table() -> Table:
    """The table that comes with the package, when it is for the installed libraries."""
    stamp = version_stamp()
    try:
        text = SHIPPED.read_text(encoding="utf-8")
    except OSError:
        return Table()
    return (parse_table(text, stamp) if stamp else None) or Table()


def replay(html: str, tables: list[Table]) -> str:
    """What `Premailer(...).transform()` returns for `html`, from the tables; `Miss` when they
    lack a <style> text or style attribute of it (or it uses something premailer's options
    handle that this replay does not)."""
    from lxml import etree  # deferred: lxml costs 5 ms at start-up; a cached email needs none

    def select(selector: str, where: Any) -> list[Any]:
        for table in tables:
            path = table.xpaths.get(selector)
            if path is not None:
                if "__lxml_internal_css" in path:
                    # (importing lxml.cssselect registers the functions such paths call)
                    import lxml.cssselect  # deferred: cssselect costs 5 ms # noqa: F401
                return list(etree.XPath(path)(where))
        raise Miss

    def block(css: str) -> dict[str, Any]:
        for table in tables:
            found = table.blocks.get(css)
            if found is not None:
                return found
        raise Miss

    def pairs_of(style: str) -> Pairs:
        for table in tables:
            found = table.styles.get(style)
            if found is not None:
                return found
        raise Miss

    stripped = html.strip()
    try:
        tree = etree.fromstring(stripped, etree.HTMLParser()).getroottree()
    except (etree.LxmlError, ValueError):
        raise Miss from None
    page = tree.getroot()
    if page is None:
        raise Miss
    # lxml adds a doctype; premailer keeps one only when the input had it (same test).
    root = tree if stripped.startswith(tree.docinfo.doctype) else page
    if not select("head", tree):  # premailer's get_or_create_head
        bodies = select("body", tree)
        if not bodies:
            raise Miss
        bodies[0].getparent().insert(0, etree.Element("head"))

    rules: list[tuple[tuple[int, ...], str, Pairs]] = []
    index = 0
    for element in select("style", page):
        media = element.attrib.get("media")
        if media and media not in ("all", "screen"):
            continue
        if element.attrib.get("data-premailer"):
            raise Miss  # premailer's own directive: let premailer read it
        css = element.text
        leftover = None
        if css:
            found = block(css)
            for important, ids, classes, elements, number, selector, declarations in found["rules"]:
                specificity = (important, ids, classes, elements, index, number)
                rules.append((specificity, selector, declarations))
            leftover = found["leftover"]
        index += 1
        if leftover is not None:
            element.text = leftover
        else:
            element.getparent().remove(element)

    rules.sort(key=lambda rule: rule[0])
    matched: dict[int, tuple[Any, list[Pairs]]] = {}
    for _specificity, selector, declarations in rules:
        if ":" in selector:
            pseudo = ":" + selector.split(":", 1)[1]
            if not (pseudo in _FILTER_PSEUDOSELECTORS or pseudo.startswith(":nth-child")):
                raise Miss  # premailer leaves these over; a table never holds one
        for item in select(selector, page):
            matched.setdefault(id(item), (item, []))[1].append(declarations)

    for item, styles in matched.values():
        merged: dict[str, str] = {}
        for declarations in styles:
            for name, value in declarations:
                merged[name] = value
        inline = item.attrib.get("style", "")
        if inline:  # the element's own style wins, as in premailer's merge_styles
            for name, value in pairs_of(inline):
                merged[name] = value
        final = "; ".join(
            f"{name}:{value}" for name, value in merged.items() if value.lower() != "unset"
        ).strip()
        if final:
            item.attrib["style"] = final
        _basic_html_attributes(item, final)

    # premailer gives a floating image align= (align_floating_images), from cssutils' reading
    # of its style; a style that cannot hold `float` needs no reading.
    for image in page.xpath("//img[@style]"):
        style = image.attrib["style"]
        if "float" in style.lower() or "\\" in style:
            side = next((t.floats[style] for t in tables if style in t.floats), None)
            if side is None:
                raise Miss
            if side in ("right", "left"):
                image.attrib["align"] = side

    out = etree.tostring(root, method="html", pretty_print=True, encoding="utf-8")
    return str(out.decode("utf-8"))


def _basic_html_attributes(element: Any, style: str) -> None:
    """premailer's `_style_to_basic_html_attributes(force=True)`: align, valign and bgcolor
    from the style, for clients that read only those."""
    if style.count("}") and style.count("{") == style.count("}"):
        style = style.split("}")[0][1:]
    attributes: dict[str, str] = {}
    for part in style.split(";"):
        pieces = part.split(":")
        if len(pieces) != 2:
            continue
        key, value = pieces[0].strip(), pieces[1]
        if key == "text-align":
            attributes["align"] = value.strip()
        elif key == "vertical-align":
            attributes["valign"] = value.strip()
        elif key == "background-color" and "transparent" not in value.lower():
            attributes["bgcolor"] = _SHORT_COLOR.sub(r"#\1\1\2\2\3\3", value.strip())
        # width and height: premailer's disable_basic_attributes leaves them to the CSS
    for key, value in attributes.items():
        element.attrib[key] = value


def learn(html: str, premailer: Any, inlined: str) -> Table:
    """What `premailer` (a Premailer with the options of `newsletter.inline_css`) makes of the
    CSS in `html`, which it turned into `inlined`: the table entries that let `replay` do this
    email without it."""
    # deferred: premailer, cssutils and cssselect cost 0.2 s at start-up; only a miss needs them
    import cssutils
    from lxml import etree
    from lxml.cssselect import CSSSelector
    from premailer.merge_style import csstext_to_pairs

    table = Table()
    for selector in ("head", "body", "style"):
        table.xpaths[selector] = CSSSelector(selector).path
    tree = etree.fromstring(html.strip(), etree.HTMLParser())
    for element in tree.iter("style"):
        css = element.text
        if not css or css in table.blocks:
            continue
        rules, leftover = premailer._parse_style_rules(css, 0)
        for _specificity, selector, _bulk in rules:
            table.xpaths[selector] = CSSSelector(selector).path
        table.blocks[css] = {
            "rules": [
                [*specificity[:4], specificity[5], selector, csstext_to_pairs(bulk, validate=False)]
                for specificity, selector, bulk in rules
            ],
            "leftover": premailer._css_rules_to_string(leftover) if leftover else None,
        }
    for style in tree.xpath("//@style"):
        if style and str(style) not in table.styles:
            table.styles[str(style)] = csstext_to_pairs(str(style))
    for style in etree.fromstring(inlined.strip(), etree.HTMLParser()).xpath("//img/@style"):
        if "float" in style.lower() or "\\" in style:
            table.floats[str(style)] = str(cssutils.parseStyle(str(style)).float)
    # JSON round trip: pairs as lists, exactly what a table read back holds.
    return Table(json.loads(table.as_json("")))
