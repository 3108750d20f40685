"""The archive's own wording in German and English, and its date format."""

from __future__ import annotations

import datetime

TEXT: dict[str, dict[str, str]] = {
    "de": {
        "archive_title": "Alle Ausgaben",
        "archive_lead": "Alle bisherigen Ausgaben von „{name}“ zum Nachlesen.",
        "empty": "Noch ist keine Ausgabe erschienen.",
        "back_to_archive": "Alle Ausgaben",
        "previous": "Vorherige Ausgabe",
        "next": "Nächste Ausgabe",
        "subscribe_heading": "„{name}“ abonnieren",
        "web_version_note": "Du liest die Web-Version.",
        "subscribe_lead": "Trag dich ein, dann bekommst du jede neue "
        "Ausgabe per E-Mail. Du bekommst zuerst eine E-Mail, mit der du die Anmeldung "
        "bestätigst; abmelden kannst du dich jederzeit mit einem Klick.",
        "email_label": "E-Mail-Adresse",
        "name_label": "Vorname (optional)",
        "subscribe_button": "Abonnieren",
        "imprint": "Impressum",
        "feed": "Feed (Atom)",
        "site_nav": "Website",
        "nav_archive": "Archiv",
        "nav_feed": "Feed",
        "nav_subscribe": "Abonnieren",
        "pager_nav": "Weitere Ausgaben",
        "not_found_title": "Seite nicht gefunden",
        "not_found_lead": "Diese Seite gibt es nicht, oder sie ist (noch) nicht erschienen.",
    },
    "en": {
        "archive_title": "All issues",
        "archive_lead": "Every issue of “{name}” so far, to read on the web.",
        "empty": "No issue has been published yet.",
        "back_to_archive": "All issues",
        "previous": "Previous issue",
        "next": "Next issue",
        "subscribe_heading": "Subscribe to “{name}”",
        "web_version_note": "You are reading the web version.",
        "subscribe_lead": "Sign up to get every new issue by "
        "email. We first send you an email to confirm; you can unsubscribe at any time "
        "with one click.",
        "email_label": "Email address",
        "name_label": "First name (optional)",
        "subscribe_button": "Subscribe",
        "imprint": "Imprint",
        "feed": "Feed (Atom)",
        "site_nav": "Site",
        "nav_archive": "Archive",
        "nav_feed": "Feed",
        "nav_subscribe": "Subscribe",
        "pager_nav": "More issues",
        "not_found_title": "Page not found",
        "not_found_lead": "This page does not exist, or it has not been published (yet).",
    },
}

_MONTHS = {
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "en": "January February March April May June July August September October November December",
}


def wording(language: str, newsletter_name: str) -> dict[str, str]:
    """The archive's texts in `language` (de or en), the newsletter's name filled in."""
    return {k: v.format(name=newsletter_name) for k, v in TEXT[language].items()}


def format_date(day: datetime.date, language: str) -> str:
    """`2. Juli 2024` / `July 2, 2024`."""
    month = _MONTHS[language].split()[day.month - 1]
    if language == "de":
        return f"{day.day}. {month} {day.year}"
    return f"{month} {day.day}, {day.year}"
