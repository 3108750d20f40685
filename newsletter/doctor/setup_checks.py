"""The setup: base_url is HTTPS and `serve` answers there; the secrets the transport, the
links and the webhooks need are set. Secret values are never shown, only whether they are set.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from newsletter.check import IMPRINT_FIX, imprint_missing
from newsletter.doctor.checks import Check, Status
from newsletter.doctor.dns_checks import transport_kind
from newsletter.errors import ConfigError
from newsletter.project import Project
from newsletter.replies.mailbox import PASSWORD_ENV as MAILBOX_PASSWORD
from newsletter.secrets_file import secret_from_environment, secrets_path
from newsletter.sending.transports import transport_class
from newsletter.tls import ca_certificate

HEALTH_TIMEOUT = 5.0


def _check(name: str, status: Status, found: str, fix: str | None = None) -> Check:
    return Check("setup", name, status, found, fix)


def setup_checks(project: Project, *, offline: bool) -> list[Check]:
    return [*_base_url(project, offline), _imprint(project), *_secrets(project)]


def _imprint(project: Project) -> Check:
    language = project.config.language
    missing = imprint_missing(project, language)
    if missing is None:
        return _check("imprint", Status.OK, project.config.section("newsletter")["imprint_url"])
    found = missing.removesuffix(f": {IMPRINT_FIX}")
    # A German newsletter may not send without it (`send` and `sequences run` refuse).
    status = Status.FAIL if language == "de" else Status.WARN
    return _check(
        "imprint", status, found, f"{IMPRINT_FIX} to [newsletter] in {project.config.path}"
    )


def _base_url(project: Project, offline: bool) -> list[Check]:
    url = project.config.base_url
    path = project.config.path
    if url is None:
        return [
            _check(
                "base_url",
                Status.FAIL,
                "not set: unsubscribe links would lead nowhere",
                f'set [newsletter] base_url = "https://..." in {path} (where `newsletter serve` '
                "is reachable)",
            ),
            _check("serve", Status.SKIP, "no base_url to ask"),
        ]
    if url.startswith("https://"):
        scheme = _check("base_url", Status.OK, url)
    else:
        scheme = _check(
            "base_url",
            Status.FAIL,
            f"{url} is not HTTPS",
            f"serve it over HTTPS (a TLS proxy in front of `newsletter serve`) and set "
            f'[newsletter] base_url = "https://{url.split("://", 1)[-1]}" in {path}',
        )
    return [scheme, _health(url, offline)]


def _health(base_url: str, offline: bool) -> Check:
    if offline:
        return _check("serve", Status.SKIP, "not asked (--offline)")
    url = f"{base_url}/healthz"
    fix = f"start `newsletter serve` where {base_url} points (behind your TLS proxy)"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        return _check("serve", Status.FAIL, f"{url} answered {exc.code}", fix)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return _check("serve", Status.FAIL, f"{url}: no answer ({reason})", fix)
    took = (time.monotonic() - started) * 1000
    if status != 200:
        return _check("serve", Status.FAIL, f"{url} answered {status}", fix)
    return _check("serve", Status.OK, f"{url} answered 200 in {took:.0f} ms")


#: Secrets `serve` needs to take a provider's events, by transport kind.
EVENT_SECRETS = {
    "sendgrid": [
        (
            "webhook key",
            "SENDGRID_WEBHOOK_PUBLIC_KEY",
            "`serve` refuses SendGrid's events (bounces, complaints, unsubscribes)",
        )
    ],
}


def _secrets_path() -> str:
    return str(secrets_path())


def _secret(name: str, variable: str, why: str, *, one_line: bool = False) -> Check:
    """Is `variable` set (and, `one_line`, without a line break, as a password must be)?"""
    if one_line:
        try:
            secret_from_environment(variable)
        except ConfigError as exc:
            return _check(name, Status.FAIL, str(exc))
    if os.environ.get(variable):
        return _check(name, Status.OK, f"{variable} is set")
    return _check(
        name,
        Status.FAIL,
        f"{variable} is not set: {why}",
        f"set {variable} in the environment or in {_secrets_path()} "
        "(`newsletter secrets init` creates that file)",
    )


def _secrets(project: Project) -> list[Check]:
    checks = [
        _secret(
            "secret key",
            "NEWSLETTER_SECRET_KEY",
            "a real send refuses to start, and `serve` cannot check unsubscribe links",
        )
    ]
    kind = transport_kind(project)
    why = transport_class(kind).unavailable(project)
    if why:
        checks.append(
            _check(
                "transport",
                Status.FAIL,
                f"the {kind} transport cannot send: {why}",
                "set it in the environment or in "
                f"{_secrets_path()} (`newsletter secrets init` creates that file)",
            )
        )
    elif kind == "smtp" and (
        bad_ca := _bad_ca_file(project, "smtp", project.config.section("smtp")["ca_file"])
    ):
        checks.append(_check("transport", Status.FAIL, f"the smtp transport cannot send: {bad_ca}"))
    else:
        checks.append(_check("transport", Status.OK, f"the {kind} transport has what it needs"))
    for name, variable, why in EVENT_SECRETS.get(kind, ()):
        checks.append(_secret(name, variable, why))
    if project.config.section("replies")["domain"]:
        checks.append(
            _secret(
                "inbound secret",
                "NEWSLETTER_INBOUND_SECRET",
                "`serve` cannot take replies from Inbound Parse",
            )
        )
    mailbox = project.config.section("replies")["imap"]
    if mailbox is not None:
        checks.append(
            _secret(
                "mailbox password", MAILBOX_PASSWORD, "`replies fetch` cannot log in", one_line=True
            )
        )
        if bad_ca := _bad_ca_file(project, "replies.imap", mailbox["ca_file"]):
            checks.append(
                _check("mailbox", Status.FAIL, f"`replies fetch` cannot connect: {bad_ca}")
            )
    return checks


def _bad_ca_file(project: Project, table: str, ca_file: str | None) -> str | None:
    """What is wrong with `[table] ca_file` (the error names the fix), or None."""
    if not ca_file:
        return None
    try:
        ca_certificate(project, table, ca_file)
    except ConfigError as exc:
        return str(exc)
    return None
