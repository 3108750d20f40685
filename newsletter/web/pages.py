"""The pages of `newsletter serve`: Jinja templates in templates/web/, wording from the
catalogue of the reader's language (`newsletter.i18n`)."""

from __future__ import annotations

from typing import Any

from newsletter.i18n import LANGUAGES, N_, NC_, texts
from newsletter.mail_templates import MAIL_TEXT, page_environment
from newsletter.project import Project

#: The pages' texts by name (placeholders unfilled): what the routes show, and `t.<name>` for
#: templates that a project copied before the built-in ones said `{{ _("Imprint") }}`.
#: A pair is (msgctxt, msgid): the same English with another German.
TEXT: dict[str, str | tuple[str, str]] = {
    # The confirmation mail's wording lives with the mail (a core module); pages use it too.
    **MAIL_TEXT,
    "unsubscribe_title": NC_("page title", "Unsubscribe"),
    "unsubscribe_lead": N_("Do you really want to unsubscribe from “{name}”?"),
    "unsubscribe_button": NC_("button", "Unsubscribe"),
    "unsubscribed_title": N_("Unsubscribed"),
    "unsubscribed_lead": N_("You will no longer receive “{name}”. Sorry to see you go!"),
    "resubscribe_hint": N_("Unsubscribed by mistake?"),
    "resubscribe_button": N_("Subscribe again"),
    "resubscribed_title": N_("Subscribed again"),
    "resubscribed_lead": N_("Welcome back! You will receive “{name}” again."),
    "bounced_lead": N_(
        "Mail to this address bounced. If it works again, we send you a link to confirm it,"
        " and you receive “{name}” again."
    ),
    "bounced_button": N_("Send me the link"),
    "keep_page_lead": N_(
        "One more click: please confirm that you want to keep receiving “{name}”."
    ),
    "invalid_title": N_("Invalid link"),
    "invalid_lead": N_(
        "This link is not valid. It may have been cut short when copied – please use the link from the email."
    ),
    "expired_lead": N_("This confirmation link has expired. Please sign up again."),
    "gone_title": N_("No longer stored"),
    "gone_lead": N_("We no longer hold any data for this link. You will not get email from us."),
    "subscribe_title": N_("Almost done"),
    "subscribe_lead": N_(
        "Thank you! We sent you an email. Please confirm your subscription there."
    ),
    "subscribe_direct_lead": N_("Thank you for subscribing!"),
    "subscribe_invalid": N_("This email address does not look right. Please check it."),
    "rate_limited": N_("Too many sign-ups from here. Please try again later."),
    "confirmed_title": N_("Subscription confirmed"),
    "confirmed_lead": N_("Thank you! You will receive “{name}” from now on."),
    "confirm_page_lead": N_("One more click: please confirm that you want to receive “{name}”."),
    "confirm_spent_lead": N_(
        "This confirmation link has been used already or is no longer valid. If you want to receive “{name}”, please sign up again."
    ),
    "signup_title": N_("Subscribe to the newsletter"),
    "signup_lead": N_("Sign up to receive “{name}” by email."),
    "signup_email": N_("Email address"),
    "signup_name": N_("Name (optional)"),
    "signup_button": NC_("sign-up page", "Subscribe"),
    "signup_checkbox_required": N_("Please tick the box if you agree."),
    "too_large": N_("The request is too large."),
    "not_found": N_("This page does not exist."),
}


def text(language: str | None, fallback: str) -> dict[str, str]:
    return texts(language if language in LANGUAGES else fallback, TEXT)


def render(project: Project, name: str, language: str | None, **context: Any) -> str:
    """Render templates/web/NAME with the wording of `language` (else the config's)."""
    lang = language if language in LANGUAGES else project.config.language
    template = page_environment(project, lang).get_template(f"web/{name}")
    newsletter = project.config.section("newsletter")
    context.setdefault("consent_text", None)
    return template.render(
        t=texts(lang, TEXT),
        lang=lang,
        newsletter_name=project.config.name,
        postal_address=project.config.postal_address,
        imprint_url=newsletter.get("imprint_url"),
        privacy_url=newsletter.get("privacy_url"),
        theme=project.config.theme,
        **context,
    )
