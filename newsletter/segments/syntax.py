"""The segment syntax: a search box, as GitHub's and Gmail's (see docs/segments.md).

    tag:leser -tag:test field:stadt="Bad Tölz" (clicked:last-5 OR replied:30d) received:>=3

Terms separated by spaces must all hold, `OR` joins alternatives (it binds weaker than the
space), parentheses group, and a leading `-` (or `NOT`) negates a term or a group. A quoted
part of a term may hold spaces and parentheses. `parse` turns the text into a small tree of
named tuples (immutable; cheaper to define than dataclasses, and the config load defines
them for every command); `newsletter.segments.query` turns the tree into SQL. A mistake is a
`SegmentError` naming where it is (column, counted from 1) and what the terms are.

It imports no SQLAlchemy (the config load checks segments, and commands such as `sequences
run` with nothing due must start without it). A tokenizer and a recursive-descent parser of about a hundred lines: the grammar has four
rules, and hand-made messages that point at the offending term are the point of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

from newsletter.errors import NewsletterError
from newsletter.subscriber_status import STATUSES

#: What an error about an unknown term lists.
TERM_HINT = (
    "terms are tag:, field:, status:, source:, joined:, consent:, clicked:, replied:, "
    "opened:, received: (e.g. tag:leser clicked:last-5), joined by spaces, OR, ( ) and -"
)
SOURCES = ("form", "import", "added")
ENGAGEMENTS = ("clicked", "replied", "opened")


class SegmentError(NewsletterError):
    """A segment's definition cannot be read; the message names the segment and the spot."""


# --- the tree ----------------------------------------------------------------------------


class Tag(NamedTuple):
    name: str


class Field(NamedTuple):
    name: str
    op: str  # "=" equals (an empty value: the field is empty), "~" contains
    value: str


class Status(NamedTuple):
    status: str


class Source(NamedTuple):
    source: str  # form | import | added


class Joined(NamedTuple):
    op: str  # ">", ">=", "<", "<=" with `day`; "within" with `days`
    day: date | None = None
    days: int | None = None


class Consent(NamedTuple):
    proven: bool


class Engaged(NamedTuple):
    kind: str  # clicked | replied | opened
    last_issues: int | None = None  # last-N
    days: int | None = None  # Nd
    # neither: ever


class Received(NamedTuple):
    op: str  # >=, >, <=, <, =
    issues: int  # (not `count`: a tuple's method)


class Not(NamedTuple):
    term: Node


class And(NamedTuple):
    terms: tuple[Node, ...]


class Or(NamedTuple):
    terms: tuple[Node, ...]


class Everyone(NamedTuple):
    """The empty expression: no condition."""


Node = (
    Tag
    | Field
    | Status
    | Source
    | Joined
    | Consent
    | Engaged
    | Received
    | Not
    | And
    | Or
    | Everyone
)


# --- tokens ------------------------------------------------------------------------------


class Token(NamedTuple):
    kind: str  # "(", ")", "-", "OR", "NOT", "AND", "term"
    column: int  # 1-based
    text: str  # as written
    value: str = ""  # a term with its quotes taken off
    #: Positions in `value` of characters that were inside quotes (never operators).
    quoted: frozenset[int] = frozenset()


def tokenize(source: str, where: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char.isspace():
            i += 1
            continue
        if char in "()":
            tokens.append(Token(char, i + 1, char))
            i += 1
            continue
        if char == "-" and i + 1 < n and not source[i + 1].isspace():
            tokens.append(Token("-", i + 1, "-"))
            i += 1
            continue
        start = i
        value: list[str] = []
        quoted: set[int] = set()
        while i < n and not source[i].isspace() and source[i] not in "()":
            if source[i] == '"':
                end = source.find('"', i + 1)
                if end < 0:
                    raise SegmentError(
                        f'{where}: unclosed quote (at column {i + 1}); close it with "'
                    )
                for part in source[i + 1 : end]:
                    quoted.add(len(value))
                    value.append(part)
                i = end + 1
                continue
            value.append(source[i])
            i += 1
        text = source[start:i]
        word = "".join(value)
        kind = word if not quoted and word in ("OR", "NOT", "AND") else "term"
        tokens.append(Token(kind, start + 1, text, word, frozenset(quoted)))
    return tokens


# --- parser ------------------------------------------------------------------------------


#: Parentheses and negations nest at most this deep: a person writes a handful, and
#: SQLite's parser overflows at about 40 nested NOTs (Python's stack near a thousand).
MAX_DEPTH = 32


class _Parser:
    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where
        self.tokens = tokenize(source, where)
        self.at = 0
        self.depth = 0

    def fail(self, message: str, token: Token | None = None) -> SegmentError:
        column = token.column if token is not None else len(self.source) + 1
        what, sep, fix = message.partition("; ")
        return SegmentError(f"{self.where}: {what} (at column {column}){sep}{fix}")

    def peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def parse(self) -> Node:
        if not self.tokens:
            return Everyone()
        node = self.either()
        token = self.peek()
        if token is not None:  # only a stray ")" stops `either` early
            raise self.fail("unmatched )", token)
        return node

    def either(self) -> Node:
        terms = [self.all_of()]
        while (token := self.peek()) is not None and token.kind == "OR":
            self.at += 1
            terms.append(self.all_of(after=token))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def all_of(self, after: Token | None = None) -> Node:
        terms: list[Node] = []
        while (token := self.peek()) is not None and token.kind not in ("OR", ")"):
            if token.kind == "AND":
                self.at += 1
                continue
            terms.append(self.one())
        if not terms:
            token = self.peek()
            what = f"nothing after {after.text}" if after else "an empty condition"
            raise self.fail(f"{what}; put a term there", token or after)
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def one(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.fail("the condition ends too early; put a term there")
        if token.kind in ("-", "NOT", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(
                    f"nested more than {MAX_DEPTH} levels deep; write it more simply", token
                )
            try:
                return self._nested(token)
            finally:
                self.depth -= 1
        self.at += 1
        if token.kind == ")":
            raise self.fail("unmatched )", token)
        return _term(token, self.fail)

    def _nested(self, token: Token) -> Node:
        """A negation or a parenthesised condition, starting at `token`."""
        self.at += 1
        if token.kind in ("-", "NOT"):
            following = self.peek()
            if following is None or following.kind in ("OR", ")"):
                raise self.fail(f"nothing to negate after {token.text}", following or token)
            return Not(self.one())
        inner = self.either()  # (token is "(")
        closing = self.peek()
        if closing is None or closing.kind != ")":
            raise self.fail("unclosed (; close it with )", token)
        self.at += 1
        return inner


_DAYS = re.compile(r"(\d{1,5})d")
_LAST = re.compile(r"last-(\d{1,4})")
_COMPARE = re.compile(r"(>=|<=|>|<|=)?(\d{1,6})")


def _term(token: Token, fail: Callable[[str, Token | None], SegmentError]) -> Node:
    key, colon, value = token.value.partition(":")
    key = key.lower()
    shown = token.text
    if not colon or 0 in token.quoted:
        raise fail(f'"{shown}" is not a term; {TERM_HINT}', token)

    def bad(why: str) -> SegmentError:
        return fail(f'cannot read "{shown}"; {why}', token)

    if key == "tag":
        if not value.strip():
            raise bad("no tag name (tag:NAME)")
        return Tag(value.strip())
    if key == "field":
        offset = len(key) + 1  # positions in `value` within `token.value`
        for index, char in enumerate(value):
            if char in "=~" and index + offset not in token.quoted:
                name, op, text = value[:index].strip(), char, value[index + 1 :]
                break
        else:
            raise bad("say how to compare: field:NAME=VALUE, field:NAME~TEXT or field:NAME=")
        if not name:
            raise bad("no field name (field:NAME=VALUE)")
        if op == "~" and not text:
            raise bad("nothing to look for after ~ (field:NAME~TEXT)")
        return Field(name, op, text)
    if key == "status":
        if value not in STATUSES:
            raise bad(f"unknown status, use one of {', '.join(STATUSES)}")
        return Status(value)
    if key == "source":
        if value not in SOURCES:
            raise bad(f"unknown source, use one of {', '.join(SOURCES)}")
        return Source(value)
    if key == "consent":
        if value not in ("yes", "no"):
            raise bad("use consent:yes or consent:no")
        return Consent(value == "yes")
    if key == "joined":
        if match := _DAYS.fullmatch(value):
            return Joined("within", days=int(match.group(1)))
        compare = next((o for o in (">=", "<=", ">", "<") if value.startswith(o)), None)
        if compare is None:
            raise bad("use joined:>2026-01-01, joined:<2026-01-01 or joined:30d")
        try:
            day = date.fromisoformat(value[len(compare) :])
        except ValueError:
            raise bad("the date must be YYYY-MM-DD, e.g. joined:>2026-01-01") from None
        return Joined(compare, day=day)
    if key in ENGAGEMENTS:
        if value == "ever":
            return Engaged(key)
        if value == "never":
            return Not(Engaged(key))
        if match := _LAST.fullmatch(value):
            if int(match.group(1)) < 1:
                raise bad("last-N needs N of 1 or more")
            return Engaged(key, last_issues=int(match.group(1)))
        if match := _DAYS.fullmatch(value):
            if int(match.group(1)) < 1:
                raise bad("Nd needs N of 1 or more")
            return Engaged(key, days=int(match.group(1)))
        raise bad(f"use {key}:last-5 (issues), {key}:30d (days), {key}:ever or {key}:never")
    if key == "received":
        match = _COMPARE.fullmatch(value)
        if match is None:
            raise bad("use received:>=3 (also >, <, <=, =)")
        return Received(match.group(1) or ">=", int(match.group(2)))
    raise fail(f'unknown term "{shown}"; {TERM_HINT}', token)


def parse(source: str, where: str = "--where") -> Node:
    """The tree of a segment's condition; SegmentError naming `where` (e.g. `segment
    "aktive"` or `--where`) and the column of the mistake."""
    return _Parser(source, where).parse()


def engagement_kinds(node: Node) -> set[str]:
    """The engagement terms the condition uses: clicked, replied, opened."""
    if isinstance(node, Engaged):
        return {node.kind}
    if isinstance(node, Not):
        return engagement_kinds(node.term)
    if isinstance(node, (And, Or)):
        return {kind for term in node.terms for kind in engagement_kinds(term)}
    return set()


def where_label(name: str | None) -> str:
    """How errors name a definition: `segment "aktive"` or `--where`."""
    return f'segment "{name}"' if name else "--where"


def check_config_segment(name: str, where: object) -> str | None:
    """What is wrong with one `[segments.<name>]` table's `where`, or None."""
    if not isinstance(where, str):
        return f'[segments.{name}] where must be a string, e.g. where = "tag:leser clicked:last-5"'
    if not where.strip():
        return (
            f"[segments.{name}] where is empty, which would be everyone: a send to this segment "
            'would reach the whole list; write its conditions, e.g. where = "tag:leser"'
        )
    try:
        parse(where, where_label(name))
    except SegmentError as exc:
        return str(exc)
    return None
