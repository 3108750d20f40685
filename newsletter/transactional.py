"""Transactional mail: single messages the tool sends on a reader's behalf (the double-opt-in
confirmation; the sunset's "do you still want it?" mail is `segments.sunset`'s). A core
module: the web app and the CLI call it, it imports neither. The mails' wording and
rendering are `newsletter.mail_templates`'.

- `send_confirmation(project, subscriber)`: the confirmation mail, through the project's
  transport (`newsletter.sending.single.send_transactional`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsletter.i18n import gettext_for
from newsletter.mail_templates import MAIL_TEXT, render_mail
from newsletter.sending.single import send_transactional

if TYPE_CHECKING:
    from newsletter.project import Project
    from newsletter.store.subscribers import Subscriber


def send_confirmation(
    project: Project,
    subscriber: Subscriber,
    confirm_url: str,
    consent_text: str,
    *,
    even_if_bounced: bool = False,
) -> str:
    """Mail `subscriber` the link that confirms the subscription, with the consent text they
    agree to by confirming; return where it went. `even_if_bounced`: past the provider's
    bounce list (a bounced reader asked for it; see `Message`)."""
    language = project.config.language
    person = subscriber.first_name or subscriber.name or ""
    subject = (
        gettext_for(language).gettext(MAIL_TEXT["confirm_subject"]).format(name=project.config.name)
    )
    context = {
        "confirm_url": confirm_url,
        "person": person,
        "subject": subject,
        "consent_text": consent_text,
    }
    html = render_mail(project, "confirm_email.html", language, **context)
    text = render_mail(project, "confirm_email.txt", language, **context)
    return send_transactional(
        project, subscriber.email, subject, html, text, even_if_bounced=even_if_bounced
    )
