"""Per-recipient fields in an issue body: `{{ subscriber.first_name | default("zusammen") }}`.

The expensive render (Markdown, MJML, premailer) runs once per issue. Before it, each
`{{ ... }}` in the body is replaced by a neutral token (letters and digits only, so it
survives markdown-it, MJML, premailer and URL escaping unchanged) and compiled once with
Jinja. After the render, the tokens become SendGrid substitution keys: one key in the
HTML part (its value HTML-escaped) and another in the text part (its value raw). Per
recipient we only evaluate the compiled expressions.

Names available in an expression:
- `subscriber.id`, `.email`, `.name`, `.first_name`, `.last_name`; then any custom field
  (`subscriber.company` finds the custom field `company` unless a built-in has that name);
  `subscriber.fields.company` always means the custom field. None and "" count as missing,
  so `default(...)` applies to them.
- `issue.title`, `issue.subject`, `issue.date`, `issue.slug`, `newsletter.name`.

At send time a missing field without a default renders as nothing (a send never stops half-way
for one subscriber); `newsletter check` warns about such expressions.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from newsletter.errors import IssueError

#: A neutral token in the rendered output; `{n}` is the expression's index.
TOKEN = "nlsubst{n}z"
TOKEN_RE = re.compile(r"nlsubst(\d+|unsub)z")
UNSUBSCRIBE_TOKEN = "nlsubstunsubz"

#: The substitution keys in the final parts. `%` and `:` survive HTML, URLs and SendGrid.
HTML_KEY = "%%nl:h:{n}%%"
TEXT_KEY = "%%nl:t:{n}%%"
UNSUBSCRIBE_HTML_KEY = HTML_KEY.format(n="unsubscribe")
UNSUBSCRIBE_TEXT_KEY = TEXT_KEY.format(n="unsubscribe")
_KEY_NAME_RE = re.compile(r"\d+|unsubscribe")
_HTML_PREFIX, _KEY_END = HTML_KEY.split("{n}")


def text_twin(key: str) -> str | None:
    """The text part's key for the same value as this HTML part's key (`%%nl:h:3%%` ->
    `%%nl:t:3%%`), or None. The two are as long and differ in one letter, which no other key
    can overlap (each starts with `%%nl:`): where both values are equal, the HTML part may
    use the text key instead."""
    if not (key.startswith(_HTML_PREFIX) and key.endswith(_KEY_END)):
        return None
    name = key[len(_HTML_PREFIX) : -len(_KEY_END)]
    return TEXT_KEY.format(n=name) if _KEY_NAME_RE.fullmatch(name) else None


#: Each substitution value is cut to this many characters: even fully escaped
#: (6 bytes per character) it stays well under SendGrid's 10,000-byte limit.
MAX_VALUE_CHARS = 500
MAX_URL_CHARS = 1500

_EXPRESSION_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_BLOCK_RE = re.compile(r"\{%|\{#")


@dataclass(frozen=True)
class Expression:
    """One `{{ ... }}` of the body, compiled once."""

    index: int
    source: str  # what is between the braces
    line: int  # line in the issue file
    template: jinja2.Template

    @property
    def token(self) -> str:
        return TOKEN.format(n=self.index)

    @property
    def html_key(self) -> str:
        return HTML_KEY.format(n=self.index)

    @property
    def text_key(self) -> str:
        return TEXT_KEY.format(n=self.index)

    @property
    def fields(self) -> list[str]:
        """The subscriber fields it reads: `subscriber.company` and `subscriber.fields.company`
        both give "company"."""
        return subscriber_fields(self.source)

    def evaluate(self, context: Mapping[str, Any]) -> str:
        """The value for one recipient; raises jinja2 errors (check reports them)."""
        return self.template.render(context)

    def value(self, context: Mapping[str, Any]) -> str:
        """The value at send time: never raises; a missing field renders as nothing."""
        try:
            value = self.template.render(context)
        except Exception:  # one subscriber's odd data must not stop a send
            return ""
        return value[:MAX_VALUE_CHARS]


@lru_cache(maxsize=1)
def expression_environment() -> jinja2.Environment:
    """The environment that compiles body expressions."""
    # Values are escaped per part afterwards (HTML-escaped in the HTML, raw in the text),
    # so the expressions themselves render without autoescape. The sandbox keeps an issue
    # file from reaching Python internals (`subscriber.__class__`).
    return SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def extract_expressions(path: Path, body: str, body_line: int) -> tuple[str, list[Expression]]:
    """Replace each `{{ ... }}` by a token; compile it. Raise IssueError on Jinja syntax errors."""
    env = expression_environment()
    block = _BLOCK_RE.search(body)
    if block:
        line = body_line + body.count("\n", 0, block.start())
        raise IssueError(
            path,
            line,
            "only {{ ... }} expressions are supported in the body, not {% ... %} or {# ... #}; "
            "use e.g. {{ subscriber.first_name | default('zusammen') }}",
        )
    expressions: list[Expression] = []
    parts: list[str] = []
    last = 0
    for match in _EXPRESSION_RE.finditer(body):
        line = body_line + body.count("\n", 0, match.start())
        source = match.group(1).strip()
        if not source:
            raise IssueError(path, line, "empty {{ }}; write e.g. {{ subscriber.first_name }}")
        try:
            template = env.from_string("{{ " + source + " }}")
        except jinja2.TemplateSyntaxError as exc:
            raise IssueError(
                path,
                line + (exc.lineno or 1) - 1,
                f"template error in {{{{ {source} }}}}: {exc.message}",
            ) from None
        expression = Expression(len(expressions), source, line, template)
        expressions.append(expression)
        parts.append(body[last : match.start()])
        parts.append(expression.token)
        last = match.end()
    parts.append(body[last:])
    rest = "".join(parts)
    # A lone `{{` or `}}` left over is an unclosed expression.
    stray = re.search(r"\{\{|\}\}", rest)
    if stray:
        line = body_line + rest.count("\n", 0, stray.start())
        raise IssueError(path, line, "unclosed {{ or stray }}; close the expression with }}")
    return rest, expressions


#: The fields every subscriber row has; anything else is a custom field.
BUILTIN_FIELDS = ("id", "email", "name", "first_name", "last_name")


def subscriber_fields(source: str) -> list[str]:
    """The subscriber field names an expression reads, in order, each once."""

    try:
        tree = expression_environment().parse("{{ " + source + " }}")
    except jinja2.TemplateSyntaxError:
        return []

    def name_of(node: nodes.Node) -> str | None:
        if isinstance(node, nodes.Getattr):
            return node.attr
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            return str(node.arg.value)
        return None

    def is_subscriber(node: nodes.Node | None) -> bool:
        return isinstance(node, nodes.Name) and node.name == "subscriber"

    found: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = name_of(node)
        inner = getattr(node, "node", None)
        if name is None or inner is None:
            continue
        direct = is_subscriber(inner) and name != "fields"  # subscriber.company
        via_fields = name_of(inner) == "fields" and is_subscriber(getattr(inner, "node", None))
        if (direct or via_fields) and name not in found:
            found.append(name)
    return found


class FieldView:
    """`subscriber.x` in an expression: built-in columns first, then custom fields.

    Missing, None and "" values are absent, so Jinja's `default()` applies to them.
    Only item lookup is offered, so a field named `items` or `keys` still works.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        self._values = {k: v for k, v in values.items() if v is not None and v != ""}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:
        return f"FieldView({sorted(self._values)})"


def subscriber_view(subscriber: Mapping[str, Any]) -> FieldView:
    custom = subscriber.get("fields") or {}
    values: dict[str, Any] = {k: v for k, v in custom.items()}
    for key in ("id", "email", "name", "first_name", "last_name"):
        if subscriber.get(key) not in (None, ""):
            values[key] = subscriber[key]
    values["fields"] = FieldView(custom)
    return FieldView(values)


def html_value(value: str) -> str:
    return html.escape(value, quote=True)


def strip_tokens(text: str) -> str:
    """Text without per-recipient tokens (for the preheader), with spacing tidied."""
    text = TOKEN_RE.sub("", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"^[\s,.;:]+", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()
