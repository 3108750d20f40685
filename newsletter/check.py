"""`newsletter check`: find what would go wrong with an issue before anyone receives it.

`check_issue` never raises for a broken issue: a file that cannot be loaded or rendered
is reported as an error finding with its file and line.
"""

from __future__ import annotations

import html as html_lib
import ipaddress
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import jinja2

from newsletter.colors import theme_contrast_problems
from newsletter.errors import IssueError, NewsletterError
from newsletter.issue import KNOWN_KEYS, load_issue
from newsletter.mail_templates import mail_template_problems
from newsletter.markdown import COLUMN_WIDTH, image_size, iter_inline, parse
from newsletter.personalize import (
    BUILTIN_FIELDS,
    TOKEN_RE,
    UNSUBSCRIBE_HTML_KEY,
    UNSUBSCRIBE_TEXT_KEY,
    extract_expressions,
    subscriber_view,
)
from newsletter.project import builtin_templates_dir
from newsletter.render import (
    HTML_TEMPLATE,
    PREHEADER_CHARS,
    SAMPLE_SUBSCRIBER,
    TEMPLATE_SUFFIXES,
    TEXT_TEMPLATE,
    render_issue,
    sample_unsubscribe_url,
    written_preheader,
)
from newsletter.scaffold import PLACEHOLDER_ADDRESS, PLACEHOLDER_EMAIL
from newsletter.step import STEP_KEYS, is_step_path

if TYPE_CHECKING:
    from markdown_it.token import Token

    from newsletter.issue import Issue
    from newsletter.personalize import Expression
    from newsletter.project import Project
    from newsletter.render import RenderedIssue

#: Gmail clips a message whose HTML is larger than about 102 KB.
GMAIL_WARN_BYTES = 90 * 1000
GMAIL_CLIP_BYTES = 102 * 1000
SUBJECT_MAX_CHARS = 78
LOCAL_HOSTS = ("localhost", "localhost.localdomain", "0.0.0.0")


@dataclass(frozen=True)
class Finding:
    severity: Literal["error", "warning"]
    message: str
    path: Path
    line: int | None
    #: An error only for sending (the Impressum of a German newsletter): `check` and `send`
    #: treat it as an error, `preview` as a warning while the author is still drafting.
    before_sending: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {self.severity}: {self.message}"


def check_issue(project: Project, path: Path) -> list[Finding]:
    """Every problem found in an issue, errors first, in file order."""
    return check_and_render(project, path)[0]


def check_and_render(project: Project, path: Path) -> tuple[list[Finding], RenderedIssue | None]:
    """`check_issue`, and the rendered issue it looked at (None if it could not render): a
    send checks and renders once."""

    path = Path(path)
    findings: list[Finding] = []
    try:
        issue = load_issue(project, path)
    except IssueError as exc:
        return [Finding("error", exc.reason, exc.path, exc.line)], None

    findings += _config(project)
    findings += _imprint(project, issue)
    findings += _web_templates(project)
    findings += _front_matter(issue)
    findings += _links_and_images(issue, project.config.theme.get("image_width"))
    rendered: RenderedIssue | None = None
    try:
        rendered = render_issue(project, issue)
    except IssueError as exc:
        findings.append(Finding("error", exc.reason, exc.path, exc.line))
    else:
        nobody = _fields_nobody_has(project, rendered)
        findings += [_nobody_finding(rendered, e, field, "error") for e, field in nobody]
        findings += _expressions(rendered, skip={e.index for e, _ in nobody})
        findings += _template_and_size(project, rendered)
    findings += _duplicate_slugs(project, issue)
    ordered = sorted(findings, key=lambda f: (f.severity != "error", str(f.path), f.line or 0))
    return ordered, rendered


def _config(project: Project) -> list[Finding]:
    """The example values `init` wrote must not reach readers."""

    config = project.config
    found = []
    if config.postal_address == PLACEHOLDER_ADDRESS:
        found.append(
            Finding(
                "warning",
                "[newsletter] postal_address is still the example; put in your real address",
                config.path,
                None,
            )
        )
    if config.base_url is None:
        found.append(
            Finding(
                "warning",
                "[newsletter] base_url is not set, so unsubscribe links lead nowhere; set it to "
                "where `newsletter serve` is reachable (a real send refuses without it)",
                config.path,
                None,
            )
        )

    for key, problem in theme_contrast_problems(config.theme):
        found.append(
            Finding(
                "warning",
                f"[theme] {key}: {problem}; pick a colour with more contrast",
                config.path,
                None,
            )
        )
    if config.from_email == PLACEHOLDER_EMAIL:
        found.append(
            Finding(
                "warning",
                "[newsletter] from_email is still the example; use your verified sender address",
                config.path,
                None,
            )
        )
    return found


def _web_templates(project: Project) -> list[Finding]:
    """The project's own web templates (`templates/web/`: the archive's pages, the sign-up
    pages and their mails) parse. A broken one showed only when a page or a confirmation
    mail needed it: a 500 to the reader, or an archive build stopped halfway."""
    folder = project.templates_dir / "web"
    found = []
    parser = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        # (Not an editor's swap file or a backup: only what a page could load.)
        if (
            not path.is_file()
            or path.name.startswith(".")
            or not path.name.endswith(TEMPLATE_SUFFIXES)
        ):
            continue
        try:
            parser.parse(path.read_text("utf-8"))
        except UnicodeDecodeError:
            found.append(Finding("error", "is not UTF-8 text; save it as UTF-8", path, None))
        except jinja2.TemplateSyntaxError as exc:
            found.append(
                Finding(
                    "error", f"template error: {exc.message}; fix the template", path, exc.lineno
                )
            )
    if folder.is_dir():
        # The mails a reader is sent on their own, rendered: an undefined name in one of
        # one's own shows only then (a sign-up stored, its confirmation never sent).
        reported = {f.path for f in found}
        found += [
            Finding("error", problem.reason, problem.path, problem.line)
            for problem in mail_template_problems(project)
            if problem.path not in reported
        ]
    return found


def imprint_missing(project: Project, language: str) -> str | None:
    """Why an email in `language` lacks its imprint link (None: it has one). German law
    (§ 5 DDG) asks every commercial email for an Impressum, so `send`, `sequences run` and
    `check` refuse a German one without it; elsewhere it is good practice (a warning)."""
    if project.config.section("newsletter")["imprint_url"]:
        return None
    return (
        "[newsletter] imprint_url is not set"
        + (
            ", and a German newsletter must link its Impressum in every email"
            if language == "de"
            else "; readers expect an imprint (legal notice) link in the footer"
        )
        + f": {IMPRINT_FIX}"
    )


#: How `imprint_missing` says to fix it.
IMPRINT_FIX = 'add imprint_url = "https://example.com/impressum"'


def _imprint(project: Project, issue: Issue) -> list[Finding]:
    """The imprint (`imprint_missing`); the privacy policy link is checked only when given."""
    config = project.config
    found = []
    missing = imprint_missing(project, issue.language)
    if missing:
        german = issue.language == "de"
        found.append(
            Finding(
                "error" if german else "warning",
                missing,
                config.path,
                None,
                before_sending=german,
            )
        )
    for key in ("imprint_url", "privacy_url"):
        url = config.section("newsletter")[key]
        problem = _url_problem(url, f"[newsletter] {key}") if url else None
        if problem:
            found.append(Finding(problem[0], problem[1], config.path, None))
    return found


def _front_matter(issue: Issue) -> list[Finding]:
    found = []
    subject_line = issue.key_line("subject") or issue.key_line("title")
    if not issue.subject.strip():
        found.append(Finding("error", "the subject is empty; write one", issue.path, subject_line))
    elif len(issue.subject) > SUBJECT_MAX_CHARS:
        found.append(
            Finding(
                "warning",
                f"the subject has {len(issue.subject)} characters; mail apps cut it "
                f"after about {SUBJECT_MAX_CHARS}: shorten it",
                issue.path,
                subject_line,
            )
        )
    if "{{" in issue.subject:
        found.append(
            Finding(
                "error",
                "the subject cannot hold {{ ... }} fields; write it without them",
                issue.path,
                subject_line,
            )
        )

    known = KNOWN_KEYS + (STEP_KEYS if is_step_path(issue.path) else ())
    for key in issue.meta:
        if key not in known:
            found.append(
                Finding(
                    "warning",
                    f"unknown front matter key `{key}` is ignored; known keys: {', '.join(known)}",
                    issue.path,
                    issue.key_line(str(key)),
                )
            )
    if not issue.preheader:
        found.append(
            Finding(
                "warning",
                "no preheader; add `preheader: ...` (inboxes show it after the subject; "
                "the first paragraph is used meanwhile)",
                issue.path,
                issue.key_line("preheader") or 1,  # an empty `preheader:` line, else the top
            )
        )
    else:
        found += _preheader(issue, issue.preheader)
    return found


def _preheader(issue: Issue, preheader: str) -> list[Finding]:
    """What the mail would drop or cut of the preheader the author wrote, without a word."""
    found = []
    line = issue.key_line("preheader")
    if "{{" in preheader:
        # One preheader for all readers: the fields are left out ("Hallo, neu!").
        found.append(
            Finding(
                "error",
                "the preheader cannot hold {{ ... }} fields; write it without them",
                issue.path,
                line,
            )
        )
    shown = written_preheader(preheader)
    if len(shown) > PREHEADER_CHARS:
        found.append(
            Finding(
                "warning",
                f"the preheader has {len(shown)} characters; it is cut after "
                f"{PREHEADER_CHARS} (with …): shorten it",
                issue.path,
                line,
            )
        )
    return found


def _url_problem(url: str, kind: str) -> tuple[Literal["error", "warning"], str] | None:
    if url.startswith(("mailto:", "tel:")):
        return None
    if url.startswith("#"):
        return ("warning", f"{kind} {url!r} points inside the page; many mail apps ignore it")
    try:
        parts = urlsplit(TOKEN_RE.sub("x", url))
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        return ("error", f"{kind} {url!r} is not a valid URL; fix it")
    if not parts.scheme or not parts.netloc:
        return ("error", f"{kind} {url!r} is relative; use a full https:// URL")
    host = (parts.hostname or "").lower()
    local = host in LOCAL_HOSTS or host.endswith(".localhost")
    try:
        local = local or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an IP address
        local = local or False
    if local:
        return ("error", f"{kind} {url!r} points to this computer; readers cannot open it")
    if parts.scheme != "https":
        return ("warning", f"{kind} {url!r} is not https; use https://")
    return None


def _links_and_images(issue: Issue, image_width: int | None = None) -> list[Finding]:
    try:
        body, _ = extract_expressions(issue.path, issue.body, issue.body_line)
    except IssueError:
        return []  # reported by the render
    tokens, _ = parse(body)
    found = []
    for token, line in iter_inline(tokens):
        at = issue.body_line + line if line is not None else None
        if token.type == "image":
            src = str(token.attrGet("src") or "")
            alt = token.content or ""
            if not alt.strip():
                found.append(
                    Finding(
                        "warning",
                        f"image {src!r} has no alt text; write ![what it shows]({src})",
                        issue.path,
                        at,
                    )
                )
            if not image_size(token, image_width).known:
                found.append(
                    Finding(
                        "warning",
                        f"image {src!r} has no size, so Outlook shows it {COLUMN_WIDTH} px wide; "
                        f"write ![{alt}]({src}){{width=600 height=400}} with its real size "
                        "(or set [theme] image_width)",
                        issue.path,
                        at,
                    )
                )
            problem = _url_problem(src, "image")
            if problem:
                found.append(Finding(problem[0], problem[1], issue.path, at))
        elif token.type == "link_open":
            problem = _url_problem(str(token.attrGet("href") or ""), "link")
            if problem:
                found.append(Finding(problem[0], problem[1], issue.path, at))
        elif token.type == "html_inline":
            found += _raw_html(issue, token.content, at)
    for token in tokens:
        if token.type == "html_block" and token.map:
            found += _raw_html(issue, token.content, issue.body_line + token.map[0])
    found += _wide_tables(issue, tokens)
    return found


#: The content column on a 375 px phone (24 px padding each side), and what a table needs
#: per column beyond its text: the cell's padding (10 px each side) and a border.
PHONE_COLUMN_PX = 375 - 2 * 24
_CELL_EXTRA_PX = 21
#: The average width of a character at the tables' 15 px (system sans-serif).
_CHAR_PX = 7.5


def _wide_tables(issue: Issue, tokens: list[Token]) -> list[Finding]:
    """A table whose narrowest layout (each column as wide as its longest word) is wider than
    a phone's column: Outlook for Windows and Yahoo on Android ignore `overflow`, so there
    it widens the whole email instead of scrolling in its box."""
    found = []
    columns: dict[int, int] = {}
    column = 0
    start: int | None = None
    for token in tokens:
        if token.type == "table_open":
            columns, start = {}, token.map[0] if token.map else None
        elif token.type == "tr_open":
            column = 0
        elif token.type == "inline" and start is not None and token.children is not None:
            words = [
                w
                for c in token.children
                if c.type in ("text", "code_inline")
                for w in c.content.split()
            ]
            longest = max((len(w) for w in words), default=0)
            columns[column] = max(columns.get(column, 0), longest)
            column += 1
        elif token.type == "table_close" and start is not None:
            width = round(sum(n * _CHAR_PX + _CELL_EXTRA_PX for n in columns.values()))
            if width > PHONE_COLUMN_PX:
                found.append(
                    Finding(
                        "warning",
                        f"this table of {len(columns)} columns is at least {width} px wide, "
                        f"more than a phone's {PHONE_COLUMN_PX} px column; Outlook for Windows "
                        "and Yahoo on Android do not scroll it but widen the whole email: use "
                        "fewer columns or shorter words, or a list",
                        issue.path,
                        issue.body_line + start,
                    )
                )
            start = None
    return found


_TAG_RE = re.compile(r"<(img|a)\b([^>]*)>", re.IGNORECASE)
_ATTR_RE = re.compile(r"""\b(src|href|alt|width)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)


def _raw_html(issue: Issue, html: str, first_line: int | None) -> list[Finding]:
    """The same checks for <img> and <a> written as HTML in the Markdown."""
    found = []
    for tag in _TAG_RE.finditer(html):
        at = first_line + html.count("\n", 0, tag.start()) if first_line is not None else None
        attrs = {
            m.group(1).lower(): m.group(2).strip("\"'") for m in _ATTR_RE.finditer(tag.group(2))
        }
        if tag.group(1).lower() == "img":
            if not attrs.get("alt", "").strip():
                found.append(
                    Finding(
                        "warning",
                        'an <img> has no alt text; add alt="what it shows"',
                        issue.path,
                        at,
                    )
                )
            if not attrs.get("width", "").strip():
                found.append(
                    Finding(
                        "warning",
                        'an <img> has no width, so Outlook shows it at full size; add width="600"',
                        issue.path,
                        at,
                    )
                )
            url, kind = attrs.get("src", ""), "image"
        else:
            url, kind = attrs.get("href", ""), "link"
        problem = _url_problem(url, kind) if url else None
        if problem:
            found.append(Finding(problem[0], problem[1], issue.path, at))
    return found


def fields_nobody_has(project: Project, rendered: RenderedIssue) -> list[Finding]:
    """Warnings for `build`: each custom field that no subscriber has."""
    return [
        _nobody_finding(rendered, e, field, "warning")
        for e, field in _fields_nobody_has(project, rendered)
    ]


def _nobody_finding(
    rendered: RenderedIssue,
    expression: Expression,
    field: str,
    severity: Literal["error", "warning"],
) -> Finding:
    return Finding(
        severity,
        f"{{{{ {expression.source} }}}}: no subscriber has a field `{field}`, so "
        "everyone would see nothing there; check its spelling against the "
        "columns you imported (`newsletter subscribers show EMAIL` lists them)",
        rendered.issue.path,
        expression.line,
    )


def _fields_nobody_has(project: Project, rendered: RenderedIssue) -> list[tuple[Expression, str]]:
    """(expression, field) for a custom field that no subscriber in the database has: a
    typo, or an import that named the column differently. Nothing while the list is empty."""

    wanted = {
        field
        for expression in rendered.expressions
        for field in expression.fields
        if field not in BUILTIN_FIELDS
    }
    if not wanted:
        return []
    in_use = _custom_fields_in_use(project, wanted)
    if in_use is None:
        return []
    return [
        (expression, field)
        for expression in rendered.expressions
        for field in expression.fields
        if field in wanted and field not in in_use
    ]


def _custom_fields_in_use(project: Project, names: set[str]) -> set[str] | None:
    """The names some subscriber has; None when there is no list to ask."""
    # deferred: the store brings SQLAlchemy (250 ms); `build` and `check` need it only for
    # an issue with custom fields, and a list to ask
    from newsletter.store.engine import open_engine
    from newsletter.store.subscribers import count_subscribers, custom_fields_in_use

    url = project.database_url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return None  # no database yet: checking must not create one
    try:
        engine = open_engine(url)
        if count_subscribers(engine) == 0:
            return None
        return custom_fields_in_use(engine, sorted(names))
    except NewsletterError:
        return None  # `send` reports an unreachable database in its own words


def _duplicate_slugs(project: Project, issue: Issue) -> list[Finding]:
    """Two files in issues/ with one slug share one web page, one ledger and one `stats`."""

    found = []
    for other in sorted(project.issues_dir.glob("*.md")):
        # realpath, not resolve(): a symlink loop in issues/ is skipped, not a crash.
        if os.path.realpath(other) == os.path.realpath(issue.path):
            continue
        try:
            slug = load_issue(project, other).slug
        except NewsletterError:
            continue
        if slug == issue.slug:
            found.append(
                Finding(
                    "warning",
                    f"{other.name} has the same slug `{slug}`; sends, stats and the web version "
                    "would mix them up: give one of them its own `slug:`",
                    issue.path,
                    issue.key_line("slug") or 1,
                )
            )
    return found


def _missing_field(expression: Expression, message: str) -> str:
    """`the field `company``: named from the expression, never Jinja's internals
    ("'FieldView object' has no attribute ...")."""
    fields = expression.fields
    named = [f for f in fields if f"'{f}'" in message] or fields
    return f"the field `{named[0]}`" if named else "this field"


def _expressions(rendered: RenderedIssue, skip: Collection[int] = ()) -> list[Finding]:
    """Evaluate each field for the sample subscriber (must work) and for one with no
    fields at all (should still read well: needs a default)."""
    # deferred: jinja2 costs 35 ms at start-up
    from jinja2 import UndefinedError

    found = []
    path = rendered.issue.path
    sample = {**rendered.context, "subscriber": subscriber_view(SAMPLE_SUBSCRIBER)}
    # Every subscriber has an id and an email; anything else may be missing.
    bare = {"id": SAMPLE_SUBSCRIBER["id"], "email": SAMPLE_SUBSCRIBER["email"]}
    empty = {**rendered.context, "subscriber": subscriber_view(bare)}
    for expression in rendered.expressions:
        if expression.index in skip:
            continue
        label = f"{{{{ {expression.source} }}}}"
        try:
            expression.evaluate(sample)
        except UndefinedError as exc:
            if "subscriber" in expression.source and "'subscriber'" not in str(exc):
                message = (
                    f"{label}: subscribers without {_missing_field(expression, str(exc))} "
                    'see nothing there: add | default("...")'
                )
                found.append(Finding("warning", message, path, expression.line))
            else:
                found.append(
                    Finding(
                        "error",
                        f"{label}: {exc.message}; use subscriber.<field>, issue.<key> or newsletter.name",
                        path,
                        expression.line,
                    )
                )
            continue
        except Exception as exc:
            found.append(
                Finding("error", f"{label}: {exc}; fix the expression", path, expression.line)
            )
            continue
        try:
            expression.evaluate(empty)
        except UndefinedError as exc:
            found.append(
                Finding(
                    "warning",
                    f"{label}: subscribers without {_missing_field(expression, str(exc))} "
                    'see nothing there: add | default("...")',
                    path,
                    expression.line,
                )
            )
        except Exception as exc:
            found.append(
                Finding(
                    "warning",
                    f'{label} fails for a subscriber without fields ({exc}); add | default("...")',
                    path,
                    expression.line,
                )
            )
    return found


def _template_and_size(project: Project, rendered: RenderedIssue) -> list[Finding]:
    found: list[Finding] = []
    html_where = _template_path(project, ("footer.mjml.j2", HTML_TEMPLATE))
    text_where = _template_path(project, ("footer.txt.j2", TEXT_TEMPLATE))
    address = project.config.postal_address
    if UNSUBSCRIBE_HTML_KEY not in rendered.html:
        found.append(
            _template_finding(
                html_where,
                'the HTML has no unsubscribe link; keep <a href="{{ unsubscribe_url }}"> in the footer',
            )
        )
    if address not in rendered.html and html_lib.escape(address) not in rendered.html:
        found.append(
            _template_finding(
                html_where,
                "the HTML lacks the postal address; keep {{ newsletter.postal_address }} in the footer",
            )
        )
    imprint = project.config.section("newsletter")["imprint_url"]
    if imprint and html_lib.escape(imprint) not in rendered.html:
        found.append(
            _template_finding(
                html_where,
                "the HTML has no imprint link; keep "
                '<a href="{{ newsletter.imprint_url }}"> in the footer',
            )
        )
    if imprint and imprint not in rendered.text:
        found.append(
            _template_finding(text_where, "the text part lacks {{ newsletter.imprint_url }}")
        )
    if UNSUBSCRIBE_TEXT_KEY not in rendered.text:
        found.append(
            _template_finding(
                text_where, "the text part has no unsubscribe link; keep {{ unsubscribe_url }}"
            )
        )
    if address not in rendered.text:
        found.append(
            _template_finding(
                text_where,
                "the text part lacks the postal address; keep {{ newsletter.postal_address }}",
            )
        )
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, sample_unsubscribe_url(project))
    size = len(html.encode("utf-8"))
    path = rendered.issue.path
    if size > GMAIL_CLIP_BYTES:
        found.append(
            Finding(
                "error",
                f"the HTML is {size / 1000:.0f} KB; Gmail clips messages over about 102 KB "
                "(and hides the unsubscribe link): shorten the issue or split it",
                path,
                None,
            )
        )
    elif size > GMAIL_WARN_BYTES:
        found.append(
            Finding(
                "warning",
                f"the HTML is {size / 1000:.0f} KB; Gmail clips messages over about 102 KB: "
                "consider shortening it",
                path,
                None,
            )
        )
    return found


def _template_path(project: Project, names: tuple[str, ...]) -> Path:
    """The project's template to blame: its footer, else its layout, else the built-in one."""

    for name in names:
        if (project.templates_dir / name).is_file():
            return project.templates_dir / name
    return builtin_templates_dir() / names[0]


def _template_finding(where: Path, message: str) -> Finding:
    return Finding("error", message, where, None)
