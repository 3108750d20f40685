"""An issue file: YAML front matter between `---` lines, then the Markdown body.

`load_issue` validates the front matter and raises `IssueError(path, line, ...)` whose
line points into the file, so `file:line` lands on the offending key.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.errors import IssueError
from newsletter.files import NotARegularFile, read_regular
from newsletter.project import LANGUAGES

if TYPE_CHECKING:
    from newsletter.project import Project

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# `2024-07-02-title.md` or `2024-07-title.md`: the date prefix is not part of the slug.
DATE_PREFIX_RE = re.compile(r"^\d{4}-\d{2}(?:-\d{2})?-")
# `2026-12-01.md`: named by its date alone, which is then the whole slug.
DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}(?:-\d{2})?$")
KNOWN_KEYS = ("title", "subject", "preheader", "date", "slug", "language", "number", "public")
# Characters MJML's XML parser rejects; a word processor's paste brings e.g. U+000B.
# (NUL is not among them: markdown-it already turns it into U+FFFD.)
CONTROL_RE = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# A line break inside a one-line value ("subject: \"Hi\\r\\nBcc: x@y.z\"", a `|` block) would
# split the Subject header, or inject another one.
LINE_BREAK_RE = re.compile("[\r\n\x85\u2028\u2029]")
FENCE = "---"
#: The largest issue file read: a long issue is tens of kilobytes.
MAX_ISSUE_BYTES = 5 << 20
#: The longest title, subject or preheader (a subject over 78 is already a `check` warning).
MAX_LINE_CHARS = 1000
#: The longest slug (the `issues.slug` column).
MAX_SLUG_CHARS = 200

# German letters that Unicode decomposition would turn into a bare vowel.
_TRANSLITERATE = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss", "ẞ": "SS"}
)


def slugify(text: str, max_length: int = 60) -> str:
    """`Grüße aus Köln – Teil 2` -> `gruesse-aus-koeln-teil-2`."""
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0] or slug[:max_length]
    return slug


def file_name_slug(path: Path) -> str:
    """The slug an issue without `slug:` gets from its file name ("" if the name gives
    none, when the title's is used): `2024-07-02-meta-ki.md` -> `meta-ki`, and
    `2026-12-01.md` -> `2026-12-01` (not `01`, which the first of every month would share)."""
    if DATE_ONLY_RE.match(path.stem):
        return path.stem
    return slugify(DATE_PREFIX_RE.sub("", path.stem))


@dataclass(frozen=True)
class Issue:
    """A validated issue file."""

    path: Path
    title: str
    subject: str
    preheader: str | None
    date: datetime.date | None
    slug: str
    language: str
    body: str
    body_line: int  # 1-based line of the body's first line in the file
    meta: dict[str, Any] = field(default_factory=dict)
    number: str | None = None  # the issue number the masthead shows ("Ausgabe 12")
    #: `public: true` publishes a send to a tag on the web archive too; `public: false` keeps
    #: even a send to the whole list off it; unset, only sends to the whole list publish.
    public: bool | None = None

    def key_line(self, key: str) -> int | None:
        """The line of a front matter key in the file, for findings about it."""
        return front_matter_key_line(self.path, key)


def front_matter_key_line(path: Path, key: str) -> int | None:
    try:
        lines = read_regular(path, MAX_ISSUE_BYTES).decode("utf-8").splitlines()
    except (NotARegularFile, UnicodeDecodeError):
        return None
    pattern = re.compile(rf"^{re.escape(key)}\s*:")
    for number, line in enumerate(lines[1:], start=2):
        if line.rstrip() in (FENCE, "..."):
            return None
        if pattern.match(line):
            return number
    return None


def split_front_matter(path: Path, text: str) -> tuple[str, str, int]:
    """Return (yaml_text, body, body_line); raise IssueError if there is no front matter."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").strip() != FENCE:
        raise IssueError(
            path,
            1,
            "no front matter; start the file with a `---` line, then `title: ...`, then `---`",
        )
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n").rstrip() in (FENCE, "..."):
            yaml_text = "".join(lines[1:index])
            body = "".join(lines[index + 1 :])
            return yaml_text, body, index + 2
    raise IssueError(path, 1, "front matter is not closed; add a `---` line after it")


@lru_cache(maxsize=1)
def _yaml_loader() -> type:
    # deferred: yaml costs 13 ms at start-up
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that leaves an impossible date (2024-13-45) as text for us to report."""

    def timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return yaml.SafeLoader.construct_yaml_timestamp(loader, node)  # type: ignore[arg-type]
        except ValueError:
            return loader.construct_scalar(node)  # type: ignore[arg-type]

    Loader.add_constructor("tag:yaml.org,2002:timestamp", timestamp)
    return Loader


def _parse_yaml(path: Path, yaml_text: str) -> dict[str, Any]:
    # deferred: yaml costs 13 ms at start-up
    import yaml

    try:
        data = yaml.load(yaml_text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        # The YAML starts on line 2 of the file; marks are 0-based.
        last = max(1, len(yaml_text.rstrip().splitlines()))
        line = min(mark.line, last - 1) + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise IssueError(
            path,
            line,
            f"invalid YAML in the front matter: {problem}; "
            'quote values that contain ": " or start with a special character',
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IssueError(path, 2, "the front matter must be `key: value` lines (title: ...)")
    return data


def _text(path: Path, data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise IssueError(
            path, front_matter_key_line(path, key), f"`{key}` must be text, not a list or mapping"
        )
    return str(value).strip()


def one_line_problem(key: str, value: str) -> str | None:
    """Why `value` cannot be an issue's `key` (title, subject or preheader), or None: each
    becomes a one-line mail header, so no control character, no line break, and at most
    `MAX_LINE_CHARS`. `load_issue` refuses such a file, and `newsletter new` such a title,
    by this one rule."""
    if control := _control_problem(value):
        return control
    if LINE_BREAK_RE.search(value.strip()):
        return (
            f"`{key}` holds a line break; it becomes a one-line mail header: write it on one line"
        )
    if len(value.strip()) > MAX_LINE_CHARS:
        return (
            f"`{key}` has {len(value.strip()):,} characters; shorten it to at most "
            f"{MAX_LINE_CHARS:,}"
        )
    return None


def _control_problem(text: str) -> str | None:
    found = CONTROL_RE.search(text)
    if found is None:
        return None
    return (
        f"control character U+{ord(found.group()):04X} in the text; delete it "
        "(pasted text brings them along)"
    )


def _reject_control(path: Path, line: int | None, text: str) -> None:
    problem = _control_problem(text)
    if problem:
        if line is not None:
            found = CONTROL_RE.search(text)
            assert found is not None
            line += text.count("\n", 0, found.start())
        raise IssueError(path, line, problem)


def load_issue(project: Project, path: Path) -> Issue:
    """Read and validate an issue file."""

    path = Path(path)
    try:
        # Universal newlines, as read_text gives them: the parser expects "\n".
        text = read_regular(path, MAX_ISSUE_BYTES, "issue file").decode("utf-8")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    except NotARegularFile as exc:
        if exc.missing:
            raise IssueError(
                path, None, "no such file; check the path or run `newsletter new`"
            ) from None
        raise IssueError(path, None, exc.reason) from None
    except UnicodeDecodeError:
        raise IssueError(path, None, "is not UTF-8 text; save the file as UTF-8") from None
    text = text.removeprefix("\ufeff")
    _reject_control(path, 1, text)
    yaml_text, body, body_line = split_front_matter(path, text)
    data = _parse_yaml(path, yaml_text)
    for key in ("title", "subject", "preheader"):
        value = data.get(key)
        if isinstance(value, str) and CONTROL_RE.search(value):  # an escape such as "\v"
            _reject_control(path, front_matter_key_line(path, key), value)
        if isinstance(value, str) and (problem := one_line_problem(key, value)):
            raise IssueError(path, front_matter_key_line(path, key), problem)

    def line(key: str) -> int | None:
        return front_matter_key_line(path, key) or 1

    title = _text(path, data, "title")
    if not title:
        raise IssueError(
            path,
            line("title") if "title" in data else 1,
            "missing title; add `title: ...` to the front matter",
        )
    subject = _text(path, data, "subject")
    if subject is None:
        subject = title
    preheader = _text(path, data, "preheader") or None

    raw_date = data.get("date")
    date: datetime.date | None
    if raw_date is None:
        date = None
    elif isinstance(raw_date, datetime.datetime):
        date = raw_date.date()
    elif isinstance(raw_date, datetime.date):
        date = raw_date
    else:
        try:
            date = datetime.date.fromisoformat(str(raw_date).strip())
        except ValueError:
            raise IssueError(
                path,
                line("date"),
                f"bad date {raw_date!r}; write it as YYYY-MM-DD, e.g. 2024-07-02",
            ) from None

    slug = _text(path, data, "slug")
    if slug is None:
        slug = file_name_slug(path) or slugify(title)
    elif len(slug) > MAX_SLUG_CHARS:
        raise IssueError(
            path,
            line("slug"),
            f"the slug has {len(slug):,} characters; shorten it to at most {MAX_SLUG_CHARS}",
        )
    elif not SLUG_RE.match(slug):
        raise IssueError(
            path,
            line("slug"),
            f"bad slug {slug!r}; use lowercase letters, digits and single hyphens, "
            f"e.g. {slugify(slug) or 'my-issue'!r}",
        )

    number = _text(path, data, "number") or None
    if number is not None and (len(number) > 20 or LINE_BREAK_RE.search(number)):
        raise IssueError(
            path, line("number"), f"bad number {number!r}; write a short one, e.g. `number: 12`"
        )

    public = data.get("public")
    if public is not None and not isinstance(public, bool):
        raise IssueError(
            path,
            line("public"),
            f"bad public {public!r}; write `public: true` (show it in the web archive even "
            "when sent to a tag) or `public: false`",
        )

    language = _text(path, data, "language") or project.config.language
    if language not in LANGUAGES:
        raise IssueError(
            path,
            line("language"),
            f"unknown language {language!r}; use one of: {', '.join(LANGUAGES)}",
        )

    return Issue(
        path=path,
        title=title,
        subject=subject,
        preheader=preheader,
        date=date,
        slug=slug,
        language=language,
        body=body,
        body_line=body_line,
        meta=dict(data),
        number=number,
        public=public,
    )
