"""The pages of `newsletter serve`: Jinja templates in templates/web/, wording in German and English."""

from __future__ import annotations

from typing import Any

from newsletter.project import LANGUAGES, Project
from newsletter.transactional import MAIL_TEXT, page_environment

TEXT: dict[str, dict[str, str]] = {
    "de": {
        "unsubscribe_title": "Newsletter abbestellen",
        "unsubscribe_lead": "Möchtest du „{name}“ wirklich abbestellen?",
        "unsubscribe_button": "Abbestellen",
        "unsubscribed_title": "Abgemeldet",
        "unsubscribed_lead": "Du bekommst „{name}“ nicht mehr. Schade, dass du gehst!",
        "resubscribe_hint": "Versehentlich abgemeldet?",
        "resubscribe_button": "Wieder anmelden",
        "resubscribed_title": "Wieder angemeldet",
        "resubscribed_lead": "Willkommen zurück! Du bekommst „{name}“ wieder.",
        "bounced_lead": "Diese Adresse ist bei uns als unzustellbar vermerkt. Melde dich bitte neu an.",
        "invalid_title": "Ungültiger Link",
        "invalid_lead": "Dieser Link ist ungültig. Vielleicht wurde er beim Kopieren gekürzt – "
        "nutze bitte den Link aus der E-Mail.",
        "expired_lead": "Dieser Bestätigungslink ist abgelaufen. Melde dich bitte noch einmal an.",
        "gone_title": "Nicht mehr gespeichert",
        "gone_lead": "Zu diesem Link sind keine Daten mehr gespeichert. Du bekommst keine E-Mails von uns.",
        "subscribe_title": "Fast geschafft",
        "subscribe_lead": "Danke! Wir haben dir eine E-Mail geschickt. Bitte bestätige darin deine Anmeldung.",
        "subscribe_direct_lead": "Danke für deine Anmeldung!",
        "subscribe_invalid": "Diese E-Mail-Adresse scheint nicht zu stimmen. Bitte prüfe sie.",
        "rate_limited": "Zu viele Anmeldungen von hier. Bitte versuche es später noch einmal.",
        "confirmed_title": "Anmeldung bestätigt",
        "confirmed_lead": "Danke! Du bekommst ab jetzt „{name}“.",
        "confirm_page_lead": "Noch ein Klick: Bestätige bitte, dass du „{name}“ bekommen möchtest.",
        "confirm_spent_lead": "Dieser Bestätigungslink ist schon benutzt oder nicht mehr gültig. "
        "Wenn du „{name}“ bekommen möchtest, melde dich bitte neu an.",
        "signup_title": "Newsletter abonnieren",
        "signup_lead": "Trag dich ein, um „{name}“ per E-Mail zu bekommen.",
        "signup_email": "E-Mail-Adresse",
        "signup_name": "Name (freiwillig)",
        "signup_button": "Anmelden",
        "signup_checkbox_required": "Bitte setze den Haken, wenn du einverstanden bist.",
        "too_large": "Die Anfrage ist zu groß.",
        "not_found": "Diese Seite gibt es nicht.",
    },
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_lead": "Do you really want to unsubscribe from “{name}”?",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "Unsubscribed",
        "unsubscribed_lead": "You will no longer receive “{name}”. Sorry to see you go!",
        "resubscribe_hint": "Unsubscribed by mistake?",
        "resubscribe_button": "Subscribe again",
        "resubscribed_title": "Subscribed again",
        "resubscribed_lead": "Welcome back! You will receive “{name}” again.",
        "bounced_lead": "Mail to this address bounced. Please sign up again.",
        "invalid_title": "Invalid link",
        "invalid_lead": "This link is not valid. It may have been cut short when copied – "
        "please use the link from the email.",
        "expired_lead": "This confirmation link has expired. Please sign up again.",
        "gone_title": "No longer stored",
        "gone_lead": "We no longer hold any data for this link. You will not get email from us.",
        "subscribe_title": "Almost done",
        "subscribe_lead": "Thank you! We sent you an email. Please confirm your subscription there.",
        "subscribe_direct_lead": "Thank you for subscribing!",
        "subscribe_invalid": "This email address does not look right. Please check it.",
        "rate_limited": "Too many sign-ups from here. Please try again later.",
        "confirmed_title": "Subscription confirmed",
        "confirmed_lead": "Thank you! You will receive “{name}” from now on.",
        "confirm_page_lead": "One more click: please confirm that you want to receive “{name}”.",
        "confirm_spent_lead": "This confirmation link has been used already or is no longer "
        "valid. If you want to receive “{name}”, please sign up again.",
        "signup_title": "Subscribe to the newsletter",
        "signup_lead": "Sign up to receive “{name}” by email.",
        "signup_email": "Email address",
        "signup_name": "Name (optional)",
        "signup_button": "Subscribe",
        "signup_checkbox_required": "Please tick the box if you agree.",
        "too_large": "The request is too large.",
        "not_found": "This page does not exist.",
    },
}


# The confirmation mail's wording lives with the mail (a core module); pages may use it too.
for _language, _words in MAIL_TEXT.items():
    TEXT[_language] = {**_words, **TEXT[_language]}


def text(language: str | None, fallback: str) -> dict[str, str]:
    return TEXT[language if language in LANGUAGES else fallback]


def render(project: Project, name: str, language: str | None, **context: Any) -> str:
    """Render templates/web/NAME with the wording `t` of `language` (else the config's)."""
    lang = language if language in LANGUAGES else project.config.language
    template = page_environment(project).get_template(f"web/{name}")
    newsletter = project.config.section("newsletter")
    context.setdefault("consent_text", None)
    return template.render(
        t=TEXT[lang],
        lang=lang,
        newsletter_name=project.config.name,
        postal_address=project.config.postal_address,
        imprint_url=newsletter.get("imprint_url"),
        privacy_url=newsletter.get("privacy_url"),
        theme=project.config.theme,
        **context,
    )
