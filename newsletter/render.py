"""Render an issue: Markdown -> Jinja2 MJML template -> mjml-python -> premailer -> HTML,
plus a plain-text part from the same Markdown tokens. (premailer's result, that is: where its
CSS is known it is replayed without premailer, see `newsletter.inline_css`; the built-in
templates' compiled code ships, see `TemplateCodeCache`.)

The render runs once per issue. Per-recipient fields stay as substitution keys in
`RenderedIssue.html` / `.text`; `substitutions()` gives one recipient's values (what
SendGrid's `substitutions` needs) and `personalize()` applies them locally.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import mjml
from markupsafe import Markup

from newsletter import __version__
from newsletter.cache import private_folder, read_entry, write_entry
from newsletter.errors import RenderError
from newsletter.i18n import N_, format_date, install, texts
from newsletter.inline_css import with_inlined_css
from newsletter.issue import Issue, load_issue
from newsletter.markdown import parse, render_html
from newsletter.personalize import (
    MAX_URL_CHARS,
    TOKEN_RE,
    UNSUBSCRIBE_HTML_KEY,
    UNSUBSCRIBE_TEXT_KEY,
    UNSUBSCRIBE_TOKEN,
    Expression,
    extract_expressions,
    html_value,
    strip_tokens,
    subscriber_view,
)
from newsletter.plaintext import render_text
from newsletter.project import builtin_templates_dir
from newsletter.step import sequences_dir

if TYPE_CHECKING:
    from newsletter.project import Project

#: Who `build` and `preview` render for.
SAMPLE_SUBSCRIBER: dict[str, Any] = {
    "id": 0,
    "email": "leser@example.com",
    "name": "Alex Beispiel",
    "first_name": "Alex",
    "last_name": "Beispiel",
    "fields": {},
}

#: The footer's and masthead's texts as `strings.<name>`, for templates that a project copied
#: before the built-in ones said `{{ _("Unsubscribe") }}`; the wording is the catalogue's.
STRINGS: dict[str, str] = {
    "unsubscribe": N_("Unsubscribe"),
    "view_in_browser": N_("View in browser"),
    "reason": N_("You are receiving this email because you subscribed to “{name}”."),
    "image": N_("Image"),
    "imprint": N_("Imprint"),
    "privacy": N_("Privacy policy"),
    "issue_number": N_("Issue {number}"),
    "reply_prompt": N_(
        "Questions, ideas, disagreement? Just reply to this email – I read every reply."
    ),
}


HTML_TEMPLATE = "email.mjml.j2"
TEXT_TEMPLATE = "email.txt.j2"
PREHEADER_CHARS = 140

_KEY_RE = re.compile(r"%%nl:[ht]:(?:\d+|unsubscribe)%%")


def apply_substitutions(text: str, substitutions: Mapping[str, str]) -> str:
    """Replace every key by its value, in one pass (as SendGrid does)."""
    return _KEY_RE.sub(lambda m: substitutions.get(m.group(0), m.group(0)), text)


def _clean_value(value: str) -> str:
    # A value must never contain a key that a second pass could expand.
    return value.replace("%%", "%")


@dataclass
class RenderedIssue:
    """An issue rendered once, with per-recipient substitution keys in html and text."""

    issue: Issue
    subject: str
    preheader: str
    html: str  # final inlined HTML, containing per-recipient keys
    text: str  # final plain text, containing per-recipient keys
    expressions: list[Expression] = field(default_factory=list, repr=False)
    context: dict[str, Any] = field(default_factory=dict, repr=False)

    def substitutions(self, subscriber: Mapping[str, Any], unsubscribe_url: str) -> dict[str, str]:
        """Key -> value for one recipient, for the HTML keys (escaped) and text keys (raw)."""
        context = {**self.context, "subscriber": subscriber_view(subscriber)}
        result: dict[str, str] = {}
        for expression in self.expressions:
            value = _clean_value(expression.value(context))
            result[expression.html_key] = html_value(value)
            result[expression.text_key] = value
        url = _clean_value(unsubscribe_url[:MAX_URL_CHARS])
        result[UNSUBSCRIBE_HTML_KEY] = html_value(url)
        result[UNSUBSCRIBE_TEXT_KEY] = url
        return result

    def personalize(self, subscriber: Mapping[str, Any], unsubscribe_url: str) -> tuple[str, str]:
        """(html, text) for one recipient."""
        subs = self.substitutions(subscriber, unsubscribe_url)
        return apply_substitutions(self.html, subs), apply_substitutions(self.text, subs)


def sample_unsubscribe_url(project: Project) -> str:
    """The unsubscribe link `build` and `preview` show (not a working token)."""
    base = project.config.base_url
    return f"{base}/unsubscribe/example" if base else "https://example.com/unsubscribe/example"


def view_url(project: Project, issue: Issue) -> str | None:
    base = project.config.base_url
    if "/" in issue.slug or is_sequence_step_file(project, issue.path):
        return None  # a sequence step (sequences/<name>/<key>) has no web page
    if issue.public is False:
        return None  # `public: false`: never on the web, so no link to it
    return f"{base}/issues/{issue.slug}" if base else None


def is_sequence_step_file(project: Project, path: Path) -> bool:
    """Whether `path` is a step in the project's `sequences/` folder: `preview` and `build`
    load it as a plain file (slug `01-willkommen`), but it is sent as a step."""
    try:
        path.resolve().relative_to(sequences_dir(project).resolve())
    except ValueError:
        return False
    return True


_environments: dict[tuple[str, str, tuple[str, ...], str], jinja2.Environment] = {}


#: Jinja's Python code for the built-in email templates (scripts/template_code.py writes it).
SHIPPED_TEMPLATE_CODE = Path(__file__).with_name("template_code.json")


class TemplateCodeCache(jinja2.BytecodeCache):
    """Compiled templates kept in the user's cache (`templates/`): each process would compile
    the email's eight templates again (15 ms of a `build`). Jinja keys an entry by the
    template's name and file and checks it against a hash of the template's source, so an
    edited template is compiled afresh; `stamp` adds what else the code depends on (Jinja's
    and this package's versions, the environment's settings). Entries are checksummed and
    only this user's own (`newsletter.cache`), so a damaged one is a miss.

    A template not in the cache whose name and source are a built-in one's gets the Python
    code Jinja generated for it from `template_code.json` (for the same stamp), so even a
    first build compiles no template: Python compiles that code (a tenth of the time). That
    holds without a usable cache folder (`folder` None) too."""

    def __init__(self, folder: Path | None, stamp: str) -> None:
        self.folder, self.stamp = folder, stamp

    def get_bucket(
        self, environment: jinja2.Environment, name: str, filename: str | None, source: str
    ) -> jinja2.bccache.Bucket:
        bucket = super().get_bucket(environment, name, filename, source)
        if bucket.code is None:
            python = shipped_template_code(self.stamp).get(f"{name}\n{bucket.checksum}")
            if python is not None:
                bucket.code = compile(python, filename or "<template>", "exec")
        return bucket

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if self.folder is None:
            return
        # The code travels as text: each byte as one latin-1 character (an exact round trip).
        text = read_entry(self.folder / f"{bucket.key}-{self.stamp}.code")
        if text:
            bucket.bytecode_from_string(text.encode("latin-1"))

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if self.folder is None:
            return
        text = bucket.bytecode_to_string().decode("latin-1")
        path = self.folder / f"{bucket.key}-{self.stamp}.code"
        write_entry(self.folder, path, text, durable=False)


@functools.cache
def shipped_template_code(stamp: str) -> dict[str, str]:
    """`name\nsha1 of its source` -> Jinja's Python code, when written for `stamp`."""
    try:
        shipped = json.loads(SHIPPED_TEMPLATE_CODE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(shipped["code"]) if shipped.get("stamp") == stamp else {}


def code_stamp(settings: Mapping[str, Any]) -> str:
    """What compiled template code depends on besides its source: Jinja's and this package's
    versions and the environment's settings."""
    described = repr(
        sorted(
            # functions and classes by name (their repr holds a per-process address)
            (name, getattr(value, "__qualname__", None) or repr(value))
            for name, value in settings.items()
        )
    )
    stamp = hashlib.sha256(f"{jinja2.__version__}|{__version__}|{described}".encode())
    return stamp.hexdigest()[:16]


def _code_cache(settings: Mapping[str, Any]) -> TemplateCodeCache:
    return TemplateCodeCache(private_folder("templates"), code_stamp(settings))


def _autoescape(name: str | None) -> bool:
    return name is None or not name.endswith(".txt.j2")


#: The settings of `template_environment`'s environments.
ENVIRONMENT_SETTINGS: dict[str, Any] = {
    "autoescape": _autoescape,
    "undefined": jinja2.StrictUndefined,
    "keep_trailing_newline": True,
    "extensions": ["jinja2.ext.i18n"],
}


def template_environment(project: Project, language: str) -> jinja2.Environment:
    """The project's templates first, then the built-in ones, speaking `language` (`_()`);
    cached (Jinja reloads on change)."""
    try:
        overrides = tuple(sorted(os.listdir(project.templates_dir)))
    except OSError:
        overrides = ()
    # Jinja notices edits to a template it loaded, not a new override beside it: the
    # list of the project's templates is part of the key.
    key = (str(project.templates_dir), str(builtin_templates_dir()), overrides, language)
    env = _environments.get(key)
    if env is None:
        if len(_environments) > 32:
            _environments.clear()
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.FileSystemLoader(key[0]), jinja2.FileSystemLoader(key[1])]
            ),
            bytecode_cache=_code_cache(ENVIRONMENT_SETTINGS),
            **ENVIRONMENT_SETTINGS,
        )
        install(env, language)
        _environments[key] = env
    return env


#: What template files end in: the email's (.j2) and the web pages' and mails' (templates/web).
TEMPLATE_SUFFIXES = (".j2", ".html", ".txt", ".xml")


def template_error(exc: Exception, fallback: str) -> RenderError:
    """A RenderError naming the template file and line (an email's or a web page's)."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = exc.filename or exc.name or fallback
        return RenderError(where, exc.lineno, f"template error: {exc.message}; fix the template")
    where, line = fallback, None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(TEMPLATE_SUFFIXES):
            where, line = frame.filename, frame.lineno
            break
    if isinstance(exc, jinja2.TemplateNotFound):
        return RenderError(
            where, line, f"template {exc.name!r} not found; add it to the project's templates/"
        )
    message = getattr(exc, "message", None) or str(exc)
    return RenderError(where, line, f"template error: {message}; fix the template")


def _mjml_source_name(project: Project) -> Path:
    """The template to blame for invalid MJML: the project's own, else the built-in layout."""
    for name in (HTML_TEMPLATE, "footer.mjml.j2"):
        if (project.templates_dir / name).is_file():
            return project.templates_dir / name
    return builtin_templates_dir() / HTML_TEMPLATE


def _render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
        raise template_error(exc, name) from None


def _first_paragraph(tokens: list[Any]) -> str:
    """The first paragraph's text, for a preheader. A paragraph holding personal fields
    (a greeting such as "Hallo {{ subscriber.first_name }},") says little once they are
    stripped, so the first paragraph without them is preferred."""
    fallback = ""
    for index, token in enumerate(tokens):
        if token.type == "paragraph_open":
            inline = tokens[index + 1]
            words = "".join(
                c.content if c.type in ("text", "code_inline") else " "
                for c in inline.children or []
                if c.type in ("text", "code_inline", "softbreak", "hardbreak")
            )
            text = strip_tokens(words)
            if text and not TOKEN_RE.search(words):
                return text
            fallback = fallback or text
    return fallback


def written_preheader(preheader: str) -> str:
    """The author's `preheader:` as every reader gets it, before it is shortened: one line
    for all readers, so its {{ ... }} fields are left out (`check` says so)."""
    return strip_tokens(re.sub(r"\{\{.*?\}\}", "", preheader))


def _shorten(text: str, limit: int = PREHEADER_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def render_issue(project: Project, issue: Issue, *, inline_css: bool = True) -> RenderedIssue:
    """Render an issue once: HTML and text with per-recipient keys.

    `inline_css=False` skips premailer (three quarters of the time): a browser applies the
    <style> rules itself, so the web archive renders without it."""
    config = project.config
    body, expressions = extract_expressions(issue.path, issue.body, issue.body_line)
    tokens, md_env = parse(body)
    content = render_html(tokens, md_env, config.theme.get("image_width"))
    preheader = _shorten(
        written_preheader(issue.preheader) if issue.preheader else _first_paragraph(tokens)
    )
    strings = texts(issue.language, STRINGS, name=config.name, number=issue.number)
    theme = dict(config.theme)
    font_family = theme["font_family"]
    if theme.get("web_font_name") and theme.get("web_font_url"):
        font_family = f"{theme['web_font_name']}, {font_family}"
    newsletter = {
        "name": config.name,
        "postal_address": config.postal_address,
        "base_url": config.base_url,
        "from_name": config.from_name,
        "from_email": config.from_email,
        "imprint_url": config.section("newsletter")["imprint_url"],
        "privacy_url": config.section("newsletter")["privacy_url"],
    }
    issue_vars = {
        "title": issue.title,
        "subject": issue.subject,
        "date": issue.date,
        "date_text": format_date(issue.date, issue.language) if issue.date else None,
        "number": issue.number,
        "slug": issue.slug,
        "language": issue.language,
        "meta": issue.meta,
    }
    context: dict[str, Any] = {
        "subject": issue.subject,
        "preheader": preheader,
        "language": issue.language,
        "issue": issue_vars,
        "newsletter": newsletter,
        "theme": theme,
        "font_family": font_family,
        "strings": strings,
        "view_url": view_url(project, issue),
        "unsubscribe_url": UNSUBSCRIBE_TOKEN,
    }
    env = template_environment(project, issue.language)
    first_block = next((t for t in tokens if t.type.endswith("_open") or t.block), None)
    context["content_has_title"] = bool(
        first_block is not None and first_block.type == "heading_open" and first_block.tag == "h1"
    )
    source = _render_template(env, HTML_TEMPLATE, {**context, "content": Markup(content)})
    fonts = (
        {theme["web_font_name"]: theme["web_font_url"]}
        if theme.get("web_font_name") and theme.get("web_font_url")
        else {}
    )
    try:
        html = mjml.mjml2html(source, fonts=fonts)
    except Exception as exc:  # mjml-python raises plain exceptions for bad markup
        raise RenderError(
            _mjml_source_name(project),
            None,
            f"MJML could not render the templates: {exc}; check that every tag is closed",
        ) from None
    # mjml gives every mj-text `word-break: break-word`, which every cell and paragraph
    # inherits: it splits ordinary words ("Plattf|orm") in a narrow table cell.
    html = html.replace("word-break:break-word;", "")

    if inline_css:
        html = with_inlined_css(html)
    if not html.lstrip().lower().startswith("<!doctype"):
        html = "<!doctype html>\n" + html

    text_body = render_text(tokens, image_label=strings["image"])
    text = _render_template(env, TEXT_TEMPLATE, {**context, "body": text_body})

    html = TOKEN_RE.sub(lambda m: _key(m.group(1), "h"), html)
    text = TOKEN_RE.sub(lambda m: _key(m.group(1), "t"), text)
    return RenderedIssue(
        issue=issue,
        subject=issue.subject,
        preheader=preheader,
        html=html,
        text=text,
        expressions=expressions,
        context={"issue": issue_vars, "newsletter": newsletter},
    )


def _key(name: str, part: str) -> str:
    return f"%%nl:{part}:{'unsubscribe' if name == 'unsub' else name}%%"


def render_file(project: Project, path: Path, *, inline_css: bool = True) -> RenderedIssue:
    """Load and render an issue file."""
    return render_issue(project, load_issue(project, path), inline_css=inline_css)


def issue_preheader(issue: Issue) -> str:
    """The preheader `render_issue` would use, without rendering (for archive listings)."""
    if issue.preheader:
        return _shorten(written_preheader(issue.preheader))
    body, _expressions = extract_expressions(issue.path, issue.body, issue.body_line)
    tokens, _env = parse(body)
    return _shorten(_first_paragraph(tokens))
