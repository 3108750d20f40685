"""The mails a reader is sent on their own (the double-opt-in confirmation, the sunset's
"do you still want it?"), as `templates/web/` words them: rendering only, nothing sent
(`newsletter.transactional` sends them). In the rendering layer, so that `check` can try a
project's own templates before a reader meets a broken one.

- `MAIL_TEXT`: the names of these mails' texts (the web pages reuse them); the wording is
  the catalogue's (`newsletter.i18n`).
- `render_mail(project, name, language, **context)`: renders `templates/web/NAME` (a project
  may override it in its own `templates/web/`) with autoescaping and StrictUndefined.
- `mail_template_problems(project)`: those mails rendered with a stand-in reader (`check`,
  `serve` and `subscribers sunset --ask` look before a reader meets a broken one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)

from newsletter.errors import RenderError
from newsletter.i18n import LANGUAGES, N_, install, texts
from newsletter.project import builtin_templates_dir
from newsletter.render import template_error

if TYPE_CHECKING:
    from newsletter.project import Project

#: The mails' texts as `t.<name>` (placeholders unfilled), for templates that a project copied
#: before the built-in ones said `{{ _("Imprint") }}`; the wording is the catalogue's.
MAIL_TEXT: dict[str, str] = {
    "confirm_button": N_("Confirm subscription"),
    "confirm_subject": N_("Please confirm your subscription to “{name}”"),
    "confirm_hello": N_("Hello {person},"),
    "confirm_hello_anonymous": N_("Hello,"),
    "confirm_body": N_("please confirm with one click that you want to receive “{name}”:"),
    "confirm_ignore": N_(
        "If you did not sign up, just ignore this email; you will not hear from us again."
    ),
    "confirm_consent_intro": N_("By confirming you agree:"),
    "imprint": N_("Imprint"),
    "privacy": N_("Privacy"),
    "keep_subject": N_("Do you still want to receive “{name}”?"),
    "keep_body": N_(
        "it looks like you have not read the last issues of “{name}”. That is perfectly fine –"
        " we just do not want to send you anything you no longer want. If you would like to"
        " keep receiving the newsletter, one click is enough:"
    ),
    "keep_button": N_("Yes, keep sending"),
    "keep_otherwise": N_(
        "If you do not click, we will take you off the list in {days} days. You can sign up"
        " again at any time."
    ),
    "keep_title": N_("Thank you!"),
    "keep_lead": N_("Glad you are staying. You will keep receiving “{name}”."),
    "keep_left_lead": N_(
        "You have unsubscribed from “{name}” and no longer receive it. If you would like to"
        " read it again, please sign up again."
    ),
}


def page_environment(project: Project, language: str, *, archive: bool = False) -> Environment:
    """Jinja2 for templates/web/NAME in `language`: a project may override any page or mail by
    placing templates/web/NAME in its own folder (shared with the web pages). `archive`: the
    archive's pages and feeds (XML escaped too, trailing newlines kept)."""
    return _environment(
        str(project.templates_dir),
        str(builtin_templates_dir()),
        language,
        web_template_overrides(project),
        archive,
    )


def web_template_overrides(project: Project) -> tuple[str, ...]:
    """The file names in the project's templates/web/, for the key of a cached environment:
    Jinja notices an edit of a template it has loaded, but not a new override of a built-in
    one (`serve` would keep the built-in page until a restart)."""
    try:
        return tuple(sorted(os.listdir(project.templates_dir / "web")))
    except OSError:
        return ()


@lru_cache(maxsize=32)
def _environment(
    project_templates: str,
    builtin: str,
    language: str,
    _overrides: tuple[str, ...],
    archive: bool,
) -> Environment:
    """`_overrides` (the names in the project's templates/web/) is only part of the key."""
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(project_templates), FileSystemLoader(builtin)]),
        autoescape=select_autoescape(
            ["html", "xml"] if archive else ["html"], default_for_string=True
        ),
        undefined=StrictUndefined,
        keep_trailing_newline=archive,
        extensions=["jinja2.ext.i18n"],
    )
    install(env, language)
    return env


def rendered(name: str, render: Callable[[], str]) -> str:
    """`render()` of templates/web/NAME; a RenderError naming the template's file and line
    (a project's own, else the built-in one) if it cannot be rendered."""
    try:
        return render()
    except (TemplateError, TypeError, ValueError, AttributeError) as exc:
        raise template_error(exc, f"templates/web/{name}") from None


def render_mail(project: Project, name: str, language: str | None, **context: Any) -> str:
    """Render templates/web/NAME with the mail wording `t` of `language` (else the config's).
    A RenderError naming the template's file and line if it cannot be rendered."""
    lang = language if language in LANGUAGES else project.config.language
    return rendered(
        name,
        lambda: (
            page_environment(project, lang)
            .get_template(f"web/{name}")
            .render(
                t=texts(lang, MAIL_TEXT),
                lang=lang,
                newsletter_name=project.config.name,
                postal_address=project.config.postal_address,
                theme=project.config.theme,
                imprint_url=project.config.section("newsletter")["imprint_url"],
                privacy_url=project.config.section("newsletter")["privacy_url"],
                **context,
            )
        ),
    )


#: Each mail of templates/web/ with a stand-in for what its caller passes (`send_confirmation`,
#: `segments.sunset.ask`), for `mail_template_problems`.
_STAND_INS: dict[str, dict[str, Any]] = {
    "confirm_email": {
        "confirm_url": "https://news.example.com/confirm/stand-in",
        "subject": "Stand-in",
        "consent_text": "Stand-in",
    },
    "keep_email": {
        "keep_url": "https://news.example.com/keep/stand-in",
        "subject": "Stand-in",
        "grace_days": 14,
    },
}


def mail_template_problems(
    project: Project, mails: Iterable[str] = tuple(_STAND_INS)
) -> list[RenderError]:
    """The mails readers are sent on their own (confirmation, "still reading?") rendered once
    for a reader with a first name and once for one without, as the project's templates make
    them: an undefined variable or a bad filter in a template of one's own shows here, before
    a reader signs up, rather than as a sign-up that fails after storing them."""
    problems = []
    for mail in mails:
        context = _STAND_INS[mail]
        for name in (f"{mail}.html", f"{mail}.txt"):
            try:
                for person in ("Jörg", ""):
                    render_mail(project, name, None, person=person, **context)
            except RenderError as exc:
                problems.append(exc)
    return problems
