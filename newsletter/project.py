"""A newsletter project: a folder holding `newsletter.toml`, `issues/` and optional `templates/`.

The config is validated against `SCHEMA`: a missing required key, a wrong type or an
unknown key is a one-line `ConfigError` naming the key and the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from newsletter import i18n
from newsletter.colors import THEME_COLORS, parse_color
from newsletter.durations import parse_delay
from newsletter.errors import ConfigError
from newsletter.files import NotARegularFile, read_regular
from newsletter.segments.syntax import check_config_segment

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

CONFIG_NAME = "newsletter.toml"

#: The languages we have footer and page wording for: one per catalogue (newsletter/locale/).
LANGUAGES = i18n.LANGUAGES

SENDGRID_HOSTS = {
    "global": "https://api.sendgrid.com",
    "eu": "https://api.eu.sendgrid.com",
}

# section -> key -> (type, default). A default of REQUIRED makes the key mandatory.
REQUIRED = object()
#: `[sending] transport`'s values: the transports in newsletter/sending/transports (a test
#: keeps the two the same; the config is checked without loading them).
TRANSPORT_KINDS = ("outbox", "sendgrid", "smtp")

SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "newsletter": {
        "name": (str, REQUIRED),
        "from_email": (str, REQUIRED),
        "from_name": (str, None),  # default: name
        "reply_to": (str, None),  # default: from_email
        "postal_address": (str, REQUIRED),
        "base_url": (str, None),
        "language": (str, "en"),
        "imprint_url": (str, None),  # Impressum: linked in the footer of emails and pages
        "privacy_url": (str, None),  # privacy policy: linked next to it
        "timezone": (str, "UTC"),  # IANA name: stats periods, sequence steps' send_at_hour
    },
    "database": {
        "url": (str, "sqlite:///newsletter.db"),
    },
    "sendgrid": {
        "region": (str, "global"),
        "timeout": ((int, float), 30.0),  # seconds, for every API request
        # Deprecated here (read, with a warning): they moved to [sending].
        "batch_size": (int, None),
        "concurrency": (int, None),
        "max_retries": (int, None),
        "unsubscribe_group_id": (int, None),  # optional SendGrid ASM group
    },
    "sending": {
        "transport": (str, None),  # "sendgrid" | "smtp" | "outbox"; default: SendGrid
        "batch_size": (int, 1000),  # recipients per request (capped by the transport)
        "concurrency": (int, 4),  # requests (SMTP: connections) at once
        "max_retries": (int, 5),
        # `send --resend` is refused sooner than this after the first send ("24h", "2d", "0")
        "resend_after": ((str, int), "24h"),
    },
    "smtp": {
        "host": (str, None),
        "port": (int, None),  # default: 587 (starttls), 465 (tls), 25 (none)
        "security": (str, "starttls"),  # "starttls" | "tls" | "none"
        "username": (str, None),  # the password: NEWSLETTER_SMTP_PASSWORD
        "rate": ((int, float), None),  # at most this many messages per second
        "max_per_connection": (int, 100),  # then a fresh connection
        "timeout": ((int, float), 30.0),  # seconds, per SMTP command
        "ca_file": (str, None),  # a CA certificate to trust (a private server)
    },
    "tracking": {
        "opens": (bool, False),  # the provider's open pixel
        "clicks": (bool, False),  # the provider's link rewriting
    },
    "theme": {
        "brand_color": (str, "#1a56db"),
        "background_color": (str, "#f4f4f5"),
        "text_color": (str, "#1f2937"),
        "font_family": (str, "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"),
        "logo_url": (str, None),
        "logo_alt": (str, None),
        "logo_width": (int, 120),
        "reply_prompt": (bool, True),  # a sign-off line inviting replies
        "image_width": (int, None),  # px, for body images without a size (default: the column)
        "web_font_name": (str, None),  # only with web_font_url: adds a <link> for that font
        "web_font_url": (str, None),
    },
    "replies": {
        "domain": (str, None),  # Inbound Parse domain: sends use reply+TOKEN@domain
        "forward": (bool, True),  # forward each reply to reply_to as well
        "tag": (str, None),  # e.g. "hat-geantwortet": given to a reader on their first reply
    },
    "subscribe": {
        "double_opt_in": (bool, True),
        "rate_limit_per_hour": (int, 10),  # POST /subscribe per IPv4 address or IPv6 /64
        # The served form's POST sooner than this after it was shown is a bot's (0: off).
        "min_fill_seconds": ((int, float), 2),
        # Turn away addresses at throwaway-mail domains (the disposable-email-domains list).
        "block_disposable": (bool, True),
        "redirect_url": (str, None),
        # Shown on the form, its confirmation page and mail; its hash goes with each
        # consent record. Default: a text per language naming the newsletter.
        "consent_text": (str, None),
        "require_checkbox": (bool, False),  # an unticked consent box the reader must tick
    },
    "archive": {
        "enabled": (bool, True),  # the web archive, its feeds and `archive build`
        "site_url": (str, None),  # where `archive build` output is hosted (default: base_url)
    },
    "serve": {
        "max_body_bytes": (int, 1_000_000),  # forms and the Event Webhook (413 above)
        "max_inbound_bytes": (int, 30_000_000),  # Inbound Parse, attachments included
        "confirm_max_age_days": (int, 7),  # how long a confirmation link works
        "run_sequences": (bool, False),  # `serve` also sends due sequence steps (as --sequences)
        "fetch_replies": (str, None),  # e.g. "5m": `serve` also runs `replies fetch` this often
    },
    "doctor": {
        # `newsletter doctor`: the SendGrid return-path name (em1234.example.com) that carries
        # SPF with automated security; else learned from SendGrid when SENDGRID_API_KEY is set
        "return_path": (str, None),
        "dkim_selectors": (list, None),  # e.g. ["s1", "s2"]; default for SendGrid: s1, s2
        # the SMTP provider's SPF domain, e.g. "spf.protection.outlook.com"
        "spf_include": (str, None),
    },
    "privacy": {
        "store_full_ip": (bool, False),  # else the last octet / last 80 bits are zeroed
        "keep_events_days": (int, 365),  # webhook events and automatic replies
        "keep_replies_days": (int, None),  # closed conversations (default: kept)
    },
    # `[sequences.<name>]` tables, one per sequence: their keys are in SEQUENCE_SCHEMA.
    "sequences": {},
    # `[segments.<name>]` tables, one per saved segment: `where = "tag:leser clicked:last-5"`.
    "segments": {},
}

#: (section, key) -> the smallest and largest value that makes sense. Checked where the config
#: is read: a huge number otherwise overflows a date or a socket call mid-command, and an
#: impossible port makes the SMTP transport retry instead of failing.
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("sendgrid", "timeout"): (0.1, 600),
    ("sendgrid", "unsubscribe_group_id"): (1, 2**31 - 1),
    ("sending", "max_retries"): (0, 100),
    ("sending", "concurrency"): (1, 256),
    ("smtp", "port"): (1, 65535),
    ("smtp", "rate"): (0.001, 100_000),
    ("smtp", "max_per_connection"): (1, 1_000_000),
    ("smtp", "timeout"): (0.1, 600),
    ("theme", "logo_width"): (1, 2000),
    ("theme", "image_width"): (1, 2000),
    ("subscribe", "rate_limit_per_hour"): (1, 100_000),
    ("subscribe", "min_fill_seconds"): (0, 3600),
    ("serve", "max_body_bytes"): (1, 1 << 30),
    ("serve", "max_inbound_bytes"): (1, 1 << 31),
    ("serve", "confirm_max_age_days"): (1, 365),
    ("privacy", "keep_events_days"): (1, 36_500),
}
#: The largest newsletter.toml read (a real one is a few kilobytes).
MAX_CONFIG_BYTES = 1 << 20

#: Tables inside a section (`[replies.imap]`): section -> table -> its keys. Absent tables are
#: None in `config.section("replies")["imap"]`; present ones are checked like a section.
SUBTABLES: dict[str, dict[str, dict[str, tuple[type | tuple[type, ...], Any]]]] = {
    "replies": {
        # Replies from any mailbox: `newsletter replies fetch`. The password comes from
        # NEWSLETTER_IMAP_PASSWORD.
        "imap": {
            "host": (str, REQUIRED),
            "port": (int, None),  # default: 993 (tls), 143 (starttls)
            "security": (str, "tls"),  # "tls" | "starttls"
            "username": (str, REQUIRED),
            "folder": (str, "INBOX"),
            "move_to": (str, None),  # processed messages move here; else they are flagged
            "flag": (str, "$NewsletterFetched"),  # the IMAP keyword that marks them
            "ca_file": (str, None),  # a CA certificate to trust (a private server)
            "timeout": ((int, float), 30.0),  # seconds, per IMAP command
        }
    },
}

#: A `[sequences.<name>]` table's trigger: on subscribing, on a first reply, or on a tag.
SUBSCRIBED = "subscribed"
TAGGED_PREFIX = "tagged:"
#: The trigger of a sequence that starts when a reader first replies to any email.
REPLIED = "replied"
NAME_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
#: The keys of each `[sequences.<name>]` table (`trigger = "subscribed"` or "tagged:<tag>").
SEQUENCE_SCHEMA: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "trigger": (str, REQUIRED),
    "tag": (str, None),  # with trigger "subscribed": only people with this tag
}


@dataclass(frozen=True)
class Config:
    """The validated `newsletter.toml`: `config.section("theme")["brand_color"]`."""

    path: Path
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Deprecated keys that were read (one line each, for the commands to show).
    warnings: tuple[str, ...] = ()

    def section(self, name: str) -> dict[str, Any]:
        return self.sections[name]

    # The keys every part of the tool reads, typed for convenience.
    @property
    def name(self) -> str:
        return self.sections["newsletter"]["name"]

    @property
    def from_email(self) -> str:
        return self.sections["newsletter"]["from_email"]

    @property
    def from_name(self) -> str:
        return self.sections["newsletter"]["from_name"] or self.name

    @property
    def reply_to(self) -> str:
        return self.sections["newsletter"]["reply_to"] or self.from_email

    @property
    def postal_address(self) -> str:
        return self.sections["newsletter"]["postal_address"]

    @property
    def base_url(self) -> str | None:
        url = self.sections["newsletter"]["base_url"]
        return url.rstrip("/") if url else None

    def serve_link(self, path: str, *, full_url: bool = False) -> str:
        """`path` of `newsletter serve` as a browser must ask for it; see `serve_link`."""
        return serve_link(self.base_url, path, full_url=full_url)

    @property
    def language(self) -> str:
        return self.sections["newsletter"]["language"]

    @property
    def theme(self) -> dict[str, Any]:
        return self.sections["theme"]


def serve_link(base_url: str | None, path: str, *, full_url: bool = False) -> str:
    """Where a browser finds `path` of `newsletter serve` ("subscribe", "unsubscribe/TOKEN",
    "" for its root): the absolute path under base_url's own path, or with `full_url` the
    whole URL (for pages hosted elsewhere, as the static archive is). Serve behind a reverse
    proxy at https://jens.example.com/newsletter answers /newsletter/subscribe; a link to
    /subscribe would lead to the blog's root. Without a base_url, from the root."""
    base = (base_url or "").rstrip("/")
    if full_url:
        return f"{base}/{path}"
    return f"{urlsplit(base).path}/{path}"


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        list: "a list",
    }
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def _matches(value: Any, expected: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; a config `true` must not pass as a number.
    if isinstance(value, bool):
        return expected is bool or (isinstance(expected, tuple) and bool in expected)
    return isinstance(value, expected)


def parse_config(path: Path) -> Config:
    """Read and validate a `newsletter.toml`."""

    try:
        data = read_regular(path, MAX_CONFIG_BYTES, "config file")
        raw = tomllib.loads(data.decode("utf-8-sig"))  # Windows editors add a BOM
    except NotARegularFile as exc:
        if exc.missing:
            raise ConfigError(
                f"{path}: not found; run `newsletter init` to create a project"
            ) from None
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line N, column M)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None

    sections: dict[str, dict[str, Any]] = {}
    for section in raw:
        if section not in SCHEMA:
            known = ", ".join(f"[{s}]" for s in SCHEMA)
            raise ConfigError(f"{path}: unknown section [{section}]; known sections: {known}")
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: `{section}` must be a [{section}] table")
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if section == "sequences":
            sections[section] = _sequence_tables(path, given)
            continue
        if section == "segments":
            sections[section] = _segment_tables(path, given)
            continue
        tables = SUBTABLES.get(section, {})
        values = _table_values(
            path, section, {k: v for k, v in given.items() if k not in tables}, keys
        )
        for name, table_keys in tables.items():
            label = f"{section}.{name}"
            if name not in given:
                values[name] = None
            elif not isinstance(given[name], dict):
                raise ConfigError(f"{path}: `{name}` in [{section}] must be a [{label}] table")
            else:
                values[name] = _table_values(path, label, given[name], table_keys)
        sections[section] = values

    newsletter = sections["newsletter"]
    if newsletter["language"] not in LANGUAGES:
        raise ConfigError(
            f"{path}: [newsletter] language {newsletter['language']!r} is not supported; "
            f"use one of: {', '.join(LANGUAGES)}"
        )
    if sections["sendgrid"]["region"] not in SENDGRID_HOSTS:
        raise ConfigError(
            f"{path}: [sendgrid] region {sections['sendgrid']['region']!r} is not known; "
            f"use one of: {', '.join(SENDGRID_HOSTS)}"
        )
    warnings = _move_deprecated_sending_keys(path, raw, sections)
    transport = sections["sending"]["transport"]
    if transport is not None and transport not in TRANSPORT_KINDS:
        raise ConfigError(
            f"{path}: [sending] transport {transport!r} is not known; "
            f"use one of: {', '.join(TRANSPORT_KINDS)}"
        )
    if not 1 <= sections["sending"]["batch_size"] <= 1000:
        raise ConfigError(f"{path}: [sending] batch_size must be between 1 and 1000")
    if sections["sending"]["concurrency"] < 1:
        raise ConfigError(f"{path}: [sending] concurrency must be at least 1")
    if sections["smtp"]["security"] not in ("starttls", "tls", "none"):
        raise ConfigError(
            f"{path}: [smtp] security {sections['smtp']['security']!r} is not known; "
            "use starttls, tls or none"
        )
    for key in ("from_email", "reply_to"):
        address = newsletter[key]
        if address is not None and "@" not in address:
            raise ConfigError(f"{path}: [newsletter] {key} {address!r} is not an email address")
    selectors = sections["doctor"]["dkim_selectors"]
    if selectors is not None and not all(isinstance(s, str) and s for s in selectors):
        raise ConfigError(
            f'{path}: [doctor] dkim_selectors must be a list of selector names, e.g. ["s1", "s2"]'
        )
    imap = sections["replies"]["imap"]
    if imap is not None:
        if imap["security"] not in ("tls", "starttls"):
            raise ConfigError(
                f"{path}: [replies.imap] security {imap['security']!r} is not known; "
                "use tls or starttls (a mailbox password never travels in the clear)"
            )
        if imap["port"] is not None and not 1 <= imap["port"] <= 65535:
            raise ConfigError(f"{path}: [replies.imap] port {imap['port']} must be 1 to 65535")
    wait = sections["sending"]["resend_after"]
    if wait is not None and parse_delay(wait) is None:
        raise ConfigError(
            f'{path}: [sending] resend_after {wait!r} is not a time span; write it as "24h", "2d" or "90m" (0: no wait)'
        )
    every = sections["serve"]["fetch_replies"]
    if every is not None:
        interval = parse_delay(every)
        if interval is None or interval.total_seconds() < 60:
            raise ConfigError(
                f'{path}: [serve] fetch_replies {every!r} is not an interval of a minute or more; write it as "5m", "1h"'
            )
        if imap is None:
            raise ConfigError(f"{path}: [serve] fetch_replies needs a [replies.imap] table")
    keep_replies = sections["privacy"]["keep_replies_days"]
    if keep_replies is not None and not 1 <= keep_replies <= 36500:
        raise ConfigError(f"{path}: [privacy] keep_replies_days must be between 1 and 36500")
    if sections["privacy"]["keep_events_days"] < 1:
        raise ConfigError(f"{path}: [privacy] keep_events_days must be 1 or more")
    _check_ranges(path, sections)
    if newsletter["timezone"] != "UTC":  # the default needs no time zone data
        _check_timezone(path, newsletter["timezone"])

    for key in THEME_COLORS:
        color = sections["theme"][key]
        if parse_color(color) is None:
            raise ConfigError(
                f"{path}: [theme] {key} {color!r} is not a CSS colour; "
                'write it as hex, e.g. "#1a56db", or as a CSS colour name such as "teal"'
            )
    font_name, font_url = sections["theme"]["web_font_name"], sections["theme"]["web_font_url"]
    if bool(font_name) != bool(font_url):
        given, missing = (
            ("web_font_name", "web_font_url") if font_name else ("web_font_url", "web_font_name")
        )
        raise ConfigError(
            f"{path}: [theme] {given} needs {missing} too (the font's name and where its CSS "
            "is go together); set both, or neither"
        )
    base_url = newsletter["base_url"]
    if base_url is not None and not base_url.startswith(("https://", "http://")):
        raise ConfigError(f"{path}: [newsletter] base_url {base_url!r} must start with https://")
    _check_text(path, sections)
    return Config(path=path, sections=sections, warnings=tuple(warnings))


#: Keys holding a web address: each must at least parse. An unclosed `[` of an IPv6 host,
#: say, passed the load and made `send`, `archive build` and `doctor` crash halfway.
URL_KEYS = (
    ("newsletter", "base_url"),
    ("newsletter", "imprint_url"),
    ("newsletter", "privacy_url"),
    ("theme", "logo_url"),
    ("theme", "web_font_url"),
    ("subscribe", "redirect_url"),
    ("archive", "site_url"),
)
#: A host name (or a domain): letters, digits, hyphens (and, as container names have them,
#: underscores) in dot-separated labels.
HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
#: An IMAP keyword (RFC 3501's atom, with `$` as the system keywords have it).
IMAP_KEYWORD = re.compile(r"\$?[A-Za-z0-9_.:+-]{1,64}")
#: C0 and C1 control characters but tab and line breaks: a value holding one made MJML fail
#: and the error blame the built-in template instead of the key.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _check_text(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    """What the types and ranges do not catch in text values."""
    for label, table in _tables(sections):
        for key, value in table.items():
            if isinstance(value, str) and (found := _CONTROL.search(value)):
                raise ConfigError(
                    f"{path}: [{label}] {key} holds the control character "
                    f"U+{ord(found.group()):04X}; remove it"
                )
    if not sections["newsletter"]["name"].strip():
        raise ConfigError(
            f'{path}: [newsletter] name is empty; name the newsletter, e.g. name = "Jens\' Briefing"'
        )
    for section, key in URL_KEYS:
        url = sections[section][key]
        if url is not None and (why := _url_error(url)):
            raise ConfigError(f"{path}: [{section}] {key} {url!r} is not a valid URL ({why})")
    domain = sections["replies"]["domain"]
    if domain is not None and not HOST_NAME.fullmatch(domain):
        raise ConfigError(
            f"{path}: [replies] domain {domain!r} is not a domain name; write it as "
            '"reply.example.com" (an internationalised name in its xn-- form)'
        )
    imap = sections["replies"]["imap"]
    if imap is not None:
        if not _is_host(imap["host"]):
            raise ConfigError(
                f"{path}: [replies.imap] host {imap['host']!r} is not a host name; "
                'write it as "imap.example.com"'
            )
        if not 0.1 <= imap["timeout"] <= 600:  # (NaN fails too)
            raise ConfigError(
                f"{path}: [replies.imap] timeout = {imap['timeout']!r} is out of range; "
                "use a value from 0.1 to 600"
            )
        if not IMAP_KEYWORD.fullmatch(imap["flag"]):
            system = " (system flags such as \\Seen cannot mark them; or set move_to)"
            raise ConfigError(
                f"{path}: [replies.imap] flag {imap['flag']!r} is not an IMAP keyword; use "
                'letters, digits and _ . : + - (e.g. "$NewsletterFetched")'
                + (system if imap["flag"].startswith("\\") else "")
            )
    host = sections["smtp"]["host"]
    if host is not None and not _is_host(host):
        raise ConfigError(
            f'{path}: [smtp] host {host!r} is not a host name; write it as "smtp.example.com"'
        )


def _tables(sections: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every table of the config with its label: sections, `[replies.imap]`, and the
    `[sequences.<name>]` and `[segments.<name>]` tables."""
    for section, values in sections.items():
        if section in ("sequences", "segments"):
            for name, table in values.items():
                yield f"{section}.{name}", table
            continue
        yield section, {k: v for k, v in values.items() if not isinstance(v, dict)}
        for name, table in values.items():
            if isinstance(table, dict):
                yield f"{section}.{name}", table


def _url_error(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError as exc:
        return str(exc)
    return None


def _is_host(host: str) -> bool:
    """A host name (an internationalised one too: the socket layer encodes it) or an IP
    address."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        return HOST_NAME.fullmatch(host.encode("idna").decode("ascii")) is not None
    except UnicodeError:  # (a label over 63 characters, say)
        return False


def _table_values(
    path: Path, label: str, given: dict[str, Any], keys: dict[str, tuple[Any, Any]]
) -> dict[str, Any]:
    """One table's values, checked against its keys and filled with their defaults."""
    for key in given:
        if key not in keys:
            known = ", ".join(keys)
            raise ConfigError(f"{path}: unknown key `{key}` in [{label}]; known keys: {known}")
    values: dict[str, Any] = {}
    for key, (expected, default) in keys.items():
        if key not in given:
            if default is REQUIRED:
                raise ConfigError(
                    f'{path}: missing required key `{key}` in [{label}]; add {key} = "..."'
                )
            values[key] = default
            continue
        value = given[key]
        if not _matches(value, expected):
            raise ConfigError(
                f"{path}: [{label}] {key} must be {_type_name(expected)}, "
                f"not {type(value).__name__} {value!r}"
            )
        values[key] = value
    return values


#: Keys that moved from [sendgrid] to [sending].
MOVED_TO_SENDING = ("batch_size", "concurrency", "max_retries")


def _move_deprecated_sending_keys(
    path: Path, raw: dict[str, Any], sections: dict[str, dict[str, Any]]
) -> list[str]:
    """Old `[sendgrid] batch_size/concurrency/max_retries` still work, with a warning; a key
    given under [sending] wins."""
    warnings = []
    given = raw.get("sending", {})
    for key in MOVED_TO_SENDING:
        old = sections["sendgrid"][key]
        if old is None:
            continue
        if key not in given:
            sections["sending"][key] = old
        warnings.append(
            f"{path}: [sendgrid] {key} is deprecated; move it to [sending] {key}"
            + (" (the [sending] value is used)" if key in given else "")
        )
    return warnings


def _sequence_tables(path: Path, given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`[sequences.<name>]` tables, each checked against SEQUENCE_SCHEMA."""
    tables: dict[str, dict[str, Any]] = {}
    for name, table in given.items():
        label = f"sequences.{name}"
        if not isinstance(table, dict):
            raise ConfigError(
                f'{path}: [sequences] {name} must be a [{label}] table with trigger = "subscribed"'
            )
        for key in table:
            if key not in SEQUENCE_SCHEMA:
                known = ", ".join(SEQUENCE_SCHEMA)
                raise ConfigError(f"{path}: unknown key `{key}` in [{label}]; known keys: {known}")
        values: dict[str, Any] = {}
        for key, (expected, default) in SEQUENCE_SCHEMA.items():
            if key not in table:
                if default is REQUIRED:
                    raise ConfigError(
                        f'{path}: missing required key `{key}` in [{label}]; add {key} = "subscribed"'
                    )
                values[key] = default
                continue
            if not _matches(table[key], expected):
                raise ConfigError(
                    f"{path}: [{label}] {key} must be {_type_name(expected)}, "
                    f"not {type(table[key]).__name__} {table[key]!r}"
                )
            values[key] = table[key]
        problem = check_sequence_table(name, values)
        if problem:
            raise ConfigError(f"{path}: [{label}] {problem}")
        tables[name] = values
    return tables


def _segment_tables(path: Path, given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`[segments.<name>]` tables, each with a `where` in the segment syntax (parsed here, so
    a mistake shows when any command loads the config)."""
    tables: dict[str, dict[str, Any]] = {}
    for name, table in given.items():
        label = f"segments.{name}"
        if not isinstance(table, dict):
            raise ConfigError(
                f'{path}: [segments] {name} must be a [{label}] table with where = "…"'
            )
        unknown = [key for key in table if key != "where"]
        if unknown:
            raise ConfigError(f"{path}: unknown key `{unknown[0]}` in [{label}]; known keys: where")
        if "where" not in table:
            raise ConfigError(
                f'{path}: missing required key `where` in [{label}]; add where = "tag:NAME"'
            )
        problem = check_config_segment(name, table["where"])
        if problem:
            raise ConfigError(f"{path}: {problem}")
        tables[name] = {"where": table["where"]}
    return tables


def check_sequence_table(name: str, values: dict[str, Any]) -> str | None:
    """Why a `[sequences.<name>]` table is unusable (for ConfigError), or None."""
    if not NAME_RE.match(name):
        return (
            f"{name!r} is not a usable sequence name; use lowercase letters, digits and "
            "hyphens, the same as its folder in sequences/"
        )
    trigger = values["trigger"]
    if trigger in (SUBSCRIBED, REPLIED):
        if values["tag"] is not None and not values["tag"].strip():
            return 'tag is empty; remove it or give a tag, e.g. tag = "kunden"'
        return None
    if trigger.startswith(TAGGED_PREFIX):
        if not trigger[len(TAGGED_PREFIX) :].strip():
            return 'trigger "tagged:" needs a tag, e.g. trigger = "tagged:kunden"'
        if values["tag"] is not None:
            return 'tag goes with trigger = "subscribed"; with "tagged:<tag>" the tag is in the trigger'
        return None
    return f'unknown trigger {trigger!r}; use "subscribed", "replied" or "tagged:<tag>"'


def _check_ranges(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    for (section, key), (low, high) in RANGES.items():
        value = sections[section][key]
        if value is not None and not low <= value <= high:  # NaN fails too
            raise ConfigError(
                f"{path}: [{section}] {key} = {value!r} is out of range; "
                f"use a value from {low} to {high}"
            )


def _check_timezone(path: Path, name: str) -> None:
    # deferred: zoneinfo costs 2 ms at start-up (sysconfig); most projects keep UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, "Europe"
        raise ConfigError(
            f"{path}: [newsletter] timezone {name!r} is not a known time zone; "
            'use an IANA name such as "Europe/Berlin" or "UTC"'
        ) from None


@dataclass(frozen=True)
class Project:
    """A project folder and its validated config."""

    root: Path
    config: Config

    @classmethod
    def load(cls, root: Path) -> Project:
        root = root.resolve()
        return cls(root=root, config=parse_config(root / CONFIG_NAME))

    @classmethod
    def find(cls, explicit: Path | None = None, start: Path | None = None) -> Project:
        """`--project DIR`, else the nearest folder upwards holding newsletter.toml."""
        # (Not is_file: a folder or a pipe of that name gets its own error from the load.)
        if explicit is not None:
            if not (explicit / CONFIG_NAME).exists():
                raise ConfigError(
                    f"{explicit}: no {CONFIG_NAME} here; run `newsletter init {explicit}` first"
                )
            return cls.load(explicit)
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_NAME).exists():
                return cls.load(folder)
        raise ConfigError(
            f"{here}: no {CONFIG_NAME} in this folder or above; "
            "run `newsletter init` or pass --project DIR"
        )

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        """The project's own templates, which override built-in ones of the same name."""
        return self.root / "templates"

    @property
    def database_url(self) -> str:
        """`NEWSLETTER_DATABASE_URL`, else `[database] url`; a relative SQLite path is
        relative to the project folder."""
        url = os.environ.get("NEWSLETTER_DATABASE_URL") or self.config.section("database")["url"]
        prefix = "sqlite:///"
        if url.startswith(prefix) and url != "sqlite:///:memory:":
            path = Path(url[len(prefix) :])
            if not path.is_absolute():
                return prefix + str(self.root / path)
        return url

    def issue_path(self, name: str | Path) -> Path:
        """Resolve an ISSUE argument: a path, or a name in issues/ with or without `.md`."""
        given = Path(name)
        candidates = [given, self.root / given]
        if given.suffix != ".md":
            candidates += [Path(f"{given}.md"), self.issues_dir / f"{given}.md"]
        candidates.append(self.issues_dir / given)
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        raise ConfigError(f"{name}: no such issue; give a file path or a name in {self.issues_dir}")


def project_timezone(project: Project) -> ZoneInfo:
    """`[newsletter] timezone`: the days of `joined:>2026-01-01` start at midnight there."""
    from zoneinfo import ZoneInfo  # deferred: zoneinfo costs 2 ms at start-up (sysconfig)

    name = project.config.section("newsletter").get("timezone") or "UTC"
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):  # the config load checked it; be safe anyway
        return ZoneInfo("UTC")


def builtin_templates_dir() -> Path:
    """The built-in templates: inside the installed wheel, else the source checkout's."""
    packaged = Path(__file__).parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


def sendgrid_host(config: Config) -> str:
    """`SENDGRID_API_HOST` (tests point it at a local server), else the region's host."""
    given = os.environ.get("SENDGRID_API_HOST")
    if not given:
        return SENDGRID_HOSTS[config.section("sendgrid")["region"]]
    why = _url_error(given)
    if why is None and (not given.startswith(("https://", "http://")) or given[-3:] == "://"):
        why = "it must start with https://"
    if why:
        # (Else a request to nowhere counted as "may have been delivered".)
        raise ConfigError(
            f"SENDGRID_API_HOST {given!r} is not a URL ({why}); unset it to use SendGrid's "
            "own host, or give one such as https://api.sendgrid.com"
        )
    return given
