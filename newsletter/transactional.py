"""Transactional mail: single messages the tool sends on a reader's behalf (the double-opt-in
confirmation, the sunset's "do you still want it?" mail; later, welcome mails). A core module: the web app and the CLI call it, it
imports neither.

- `MAIL_TEXT`: the wording of these mails, per language (the web pages reuse it).
- `render_mail(project, name, language, **context)`: renders `templates/web/NAME` (a project
  may override it in its own `templates/web/`) with autoescaping and StrictUndefined.
- `send_confirmation(project, subscriber)`: the confirmation mail, through the project's
  transport (`newsletter.sending.single.send_transactional`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from newsletter.project import LANGUAGES, builtin_templates_dir

if TYPE_CHECKING:
    from newsletter.project import Project
    from newsletter.store.subscribers import Subscriber

MAIL_TEXT: dict[str, dict[str, str]] = {
    "de": {
        "confirm_button": "Anmeldung bestätigen",
        "confirm_subject": "Bitte bestätige deine Anmeldung zu „{name}“",
        "confirm_hello": "Hallo {person},",
        "confirm_hello_anonymous": "Hallo,",
        "confirm_body": "bitte bestätige mit einem Klick, dass du „{name}“ bekommen möchtest:",
        "confirm_ignore": "Wenn du dich nicht angemeldet hast, ignoriere diese E-Mail einfach; "
        "dann bekommst du nichts weiter von uns.",
        "confirm_consent_intro": "Du stimmst damit zu:",
        "imprint": "Impressum",
        "privacy": "Datenschutz",
        "keep_subject": "Möchtest du „{name}“ weiter bekommen?",
        "keep_body": "du hast die letzten Ausgaben von „{name}“ offenbar nicht gelesen. Das ist "
        "völlig in Ordnung – wir möchten dir nur nichts schicken, was du nicht mehr willst. "
        "Wenn du den Newsletter weiter bekommen möchtest, genügt ein Klick:",
        "keep_button": "Ja, bitte weiter senden",
        "keep_otherwise": "Wenn du nicht klickst, tragen wir dich in {days} Tagen aus. Du kannst "
        "dich jederzeit wieder anmelden.",
        "keep_title": "Danke!",
        "keep_lead": "Schön, dass du dabei bleibst. Du bekommst „{name}“ weiterhin.",
        "keep_left_lead": "Du bist von „{name}“ abgemeldet und bekommst ihn nicht mehr. Wenn du "
        "ihn wieder lesen möchtest, melde dich bitte neu an.",
    },
    "en": {
        "confirm_button": "Confirm subscription",
        "confirm_subject": "Please confirm your subscription to “{name}”",
        "confirm_hello": "Hello {person},",
        "confirm_hello_anonymous": "Hello,",
        "confirm_body": "please confirm with one click that you want to receive “{name}”:",
        "confirm_ignore": "If you did not sign up, just ignore this email; "
        "you will not hear from us again.",
        "confirm_consent_intro": "By confirming you agree:",
        "imprint": "Imprint",
        "privacy": "Privacy",
        "keep_subject": "Do you still want to receive “{name}”?",
        "keep_body": "it looks like you have not read the last issues of “{name}”. That is "
        "perfectly fine – we just do not want to send you anything you no longer want. If you "
        "would like to keep receiving the newsletter, one click is enough:",
        "keep_button": "Yes, keep sending",
        "keep_otherwise": "If you do not click, we will take you off the list in {days} days. "
        "You can sign up again at any time.",
        "keep_title": "Thank you!",
        "keep_lead": "Glad you are staying. You will keep receiving “{name}”.",
        "keep_left_lead": "You have unsubscribed from “{name}” and no longer receive it. If you "
        "would like to read it again, please sign up again.",
    },
}


def page_environment(project: Project) -> Environment:
    """Jinja2 for templates/web/NAME: a project may override any page or mail by placing
    templates/web/NAME in its own folder (shared with the web pages)."""
    return _environment(str(project.templates_dir), str(builtin_templates_dir()))


@lru_cache(maxsize=8)
def _environment(project_templates: str, builtin: str) -> Environment:
    return Environment(
        loader=ChoiceLoader([FileSystemLoader(project_templates), FileSystemLoader(builtin)]),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
    )


def render_mail(project: Project, name: str, language: str | None, **context: Any) -> str:
    """Render templates/web/NAME with the mail wording `t` of `language` (else the config's)."""
    lang = language if language in LANGUAGES else project.config.language
    return (
        page_environment(project)
        .get_template(f"web/{name}")
        .render(
            t=MAIL_TEXT[lang],
            lang=lang,
            newsletter_name=project.config.name,
            postal_address=project.config.postal_address,
            theme=project.config.theme,
            imprint_url=project.config.section("newsletter")["imprint_url"],
            privacy_url=project.config.section("newsletter")["privacy_url"],
            **context,
        )
    )


def send_confirmation(
    project: Project, subscriber: Subscriber, confirm_url: str, consent_text: str
) -> str:
    """Mail `subscriber` the link that confirms the subscription, with the consent text they
    agree to by confirming; return where it went."""
    from newsletter.sending.single import send_transactional

    language = project.config.language
    person = subscriber.first_name or subscriber.name or ""
    subject = MAIL_TEXT[language]["confirm_subject"].format(name=project.config.name)
    context = {
        "confirm_url": confirm_url,
        "person": person,
        "subject": subject,
        "consent_text": consent_text,
    }
    html = render_mail(project, "confirm_email.html", language, **context)
    text = render_mail(project, "confirm_email.txt", language, **context)
    return send_transactional(project, subscriber.email, subject, html, text)
