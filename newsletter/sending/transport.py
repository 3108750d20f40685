"""Transports: SendGrid's v3 API, and the outbox (one .eml per recipient).

Both take the same request body (see `payload.py`) and answer with an `Outcome`, so the
sender does not care where mail goes. SendGrid answers are classified for the ledger:

- 202 (or 200 in sandbox mode): `accepted`, with the `X-Message-Id`.
- 429: wait until `X-RateLimit-Reset` (capped), retry. 5xx, or a connection refused before
  the request left: retry with exponential backoff. Both bounded by `max_retries`.
- other 4xx: `failed` with SendGrid's error; the send stops (the next batch would fail alike).
- an answer lost after the request went out (timeout, reset, closed): `uncertain`. There is no
  idempotency key, so it is never retried automatically.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from newsletter.errors import TransportError
from newsletter.sending.payload import apply_substitutions
from newsletter.store.schema import CUSTOM_ARG_SUBSCRIBER

if TYPE_CHECKING:
    from newsletter.project import Project

#: Seconds; the first retry waits this long, then twice as long each time. Tests shorten it.
BACKOFF_ENV = "NEWSLETTER_SEND_BACKOFF"
#: Never wait longer than this for one 429, whatever X-RateLimit-Reset says.
MAX_RATE_LIMIT_WAIT = 60.0

# Errors that prove the request never reached the server: safe to retry.
_NOT_SENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EADDRNOTAVAIL,
}


@dataclass
class Outcome:
    """What became of one request: `accepted`, `failed` or `uncertain`."""

    state: str
    message_id: str | None = None
    error: str | None = None
    #: The send must stop (bad key, unverified sender, bad payload, retries exhausted).
    fatal: bool = False
    attempts: int = 1


def backoff_base() -> float:
    try:
        return float(os.environ.get(BACKOFF_ENV, "1.0"))
    except ValueError:
        return 1.0


def _not_sent(reason: object) -> bool:
    """A URLError reason that means the connection was never made."""
    if isinstance(reason, socket.gaierror | ConnectionRefusedError):
        return True
    return isinstance(reason, OSError) and reason.errno in _NOT_SENT_ERRNOS


def _field_errors(body: bytes | str | None) -> str:
    """SendGrid's `{"errors": [{"message", "field"}]}` as `field: message; ...`."""
    try:
        data = json.loads(body or b"{}")
        errors = data.get("errors") or []
        parts = []
        for e in errors:
            field = e.get("field")
            parts.append(f"{field}: {e.get('message')}" if field else str(e.get("message")))
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return text[:300] or "no details"


class SendGridTransport:
    """SendGrid's v3 API through the `sendgrid` package, with an explicit timeout."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        host: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import sendgrid

        self.host = host.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = backoff_base() if backoff is None else backoff
        self._sleep = sleep
        self._client = sendgrid.SendGridAPIClient(api_key, host=self.host)

    @classmethod
    def from_project(
        cls, project: Project, api_key: str, *, max_retries: int | None = None
    ) -> SendGridTransport:
        from newsletter.project import sendgrid_host

        section = project.config.section("sendgrid")
        return cls(
            api_key,
            sendgrid_host(project.config),
            timeout=section["timeout"],
            max_retries=section["max_retries"] if max_retries is None else max_retries,
        )

    @property
    def where(self) -> str:
        return urlsplit(self.host).netloc or self.host

    def _http_error(self, exc: Any, body: dict[str, Any] | None) -> str:
        code = exc.status_code
        if code == 401:
            return "SendGrid rejected the API key (check SENDGRID_API_KEY)"
        if code == 403:
            sender = ((body or {}).get("from") or {}).get("email", "the from address")
            return (
                f"SendGrid refused to send from {sender}: it is not a verified sender; verify it "
                "under Settings > Sender Authentication at https://app.sendgrid.com/settings/sender_auth "
                "or set a verified from_email in newsletter.toml"
            )
        if code == 400:
            return f"SendGrid rejected the request (400): {_field_errors(exc.body)}"
        if code == 413:
            return (
                "SendGrid refused the request as too large (413); shorten the issue or its images"
            )
        return f"SendGrid answered {code}: {_field_errors(exc.body)}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One API call with retries; returns the response or an `Outcome` for a failure."""
        from python_http_client.exceptions import HTTPError

        node = self._client.client
        for part in path.strip("/").split("/")[1:]:  # drop the "v3" the client adds itself
            node = node._(part)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = getattr(node, method)(request_body=body, timeout=self.timeout)
                response.attempts = attempt
                return response
            except HTTPError as exc:
                code = exc.status_code
                if code == 429 and attempt <= self.max_retries:
                    self._sleep(self._rate_limit_wait(exc.headers))
                    continue
                if code >= 500 and attempt <= self.max_retries:
                    self._sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                message = self._http_error(exc, body)
                if code == 429 or code >= 500:
                    message += f" (after {attempt} tries)"
                return Outcome("failed", error=message, fatal=True, attempts=attempt)
            except urllib.error.URLError as exc:
                if _not_sent(exc.reason):
                    if attempt <= self.max_retries:
                        self._sleep(self.backoff * 2 ** (attempt - 1))
                        continue
                    return Outcome(
                        "failed",
                        error=(
                            f"cannot reach SendGrid at {self.where} ({exc.reason}; tried {attempt} "
                            "times); check the network connection"
                        ),
                        fatal=True,
                        attempts=attempt,
                    )
                return self._lost(exc.reason, attempt)
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                return self._lost(exc, attempt)

    def _lost(self, reason: object, attempt: int) -> Outcome:
        what = "timed out" if isinstance(reason, TimeoutError) else f"was lost ({reason})"
        return Outcome(
            "uncertain",
            error=f"SendGrid's answer {what} after the request was sent; it may have been delivered",
            attempts=attempt,
        )

    def _rate_limit_wait(self, headers: Any) -> float:
        try:
            reset = float(headers.get("X-RateLimit-Reset"))
        except (TypeError, ValueError, AttributeError):
            return self.backoff
        return min(max(reset - time.time(), 0.0), MAX_RATE_LIMIT_WAIT)

    def post_mail(self, body: dict[str, Any]) -> Outcome:
        result = self._call("post", "/v3/mail/send", body)
        if isinstance(result, Outcome):
            return result
        if result.status_code in (200, 202):
            return Outcome(
                "accepted",
                message_id=result.headers.get("X-Message-Id"),
                attempts=result.attempts,
            )
        return Outcome(
            "failed", error=f"SendGrid answered {result.status_code} to /v3/mail/send", fatal=True
        )

    def create_batch(self) -> str:
        result = self._call("post", "/v3/mail/batch", None)
        if isinstance(result, Outcome):
            raise TransportError(f"could not create a SendGrid batch id: {result.error}")
        return str(json.loads(result.body)["batch_id"])

    def cancel_scheduled(self, batch_id: str, status: str = "cancel") -> None:
        result = self._call(
            "post", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": status}
        )
        if isinstance(result, Outcome):
            raise TransportError(f"SendGrid did not {status} batch {batch_id}: {result.error}")


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:80] or "recipient"


def _address(entry: dict[str, str]) -> Address:
    local, _, domain = entry["email"].rpartition("@")
    return Address(display_name=entry.get("name") or "", username=local, domain=domain)


def build_eml(body: dict[str, Any], p: dict[str, Any], *, date: str | None = None) -> EmailMessage:
    """The complete message SendGrid would send for one personalization of `body`."""
    subs = p.get("substitutions") or {}
    parts = {c["type"]: apply_substitutions(c["value"], subs) for c in body["content"]}
    sender = body["from"]
    to = p["to"][0]
    msg = EmailMessage()
    msg["From"] = _address(sender)
    msg["To"] = _address(to)
    msg["Subject"] = apply_substitutions(p.get("subject") or body["subject"], subs)
    if body.get("reply_to"):
        msg["Reply-To"] = body["reply_to"]["email"]
    msg["Date"] = date or formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender["email"].rpartition("@")[2] or None)
    for name, value in {**(body.get("headers") or {}), **(p.get("headers") or {})}.items():
        msg[name] = value
    if body.get("categories"):
        msg["X-Categories"] = ", ".join(body["categories"])
    args = {**(body.get("custom_args") or {}), **(p.get("custom_args") or {})}
    if args:
        msg["X-Custom-Args"] = json.dumps(args, ensure_ascii=False, sort_keys=True)
    # multipart/alternative, text first: clients show the last part they understand.
    msg.set_content(parts.get("text/plain", ""), subtype="plain", charset="utf-8")
    if "text/html" in parts:
        msg.add_alternative(parts["text/html"], subtype="html", charset="utf-8")
    return msg


def write_eml(directory: Path, stem: str, msg: EmailMessage) -> Path:
    """Write `msg` as DIR/STEM.eml, never overwriting: STEM-2.eml etc. if taken."""
    directory.mkdir(parents=True, exist_ok=True)
    # An address with a non-ASCII local part needs SMTPUTF8; everything else stays 7-bit headers.
    ascii_only = all(a.username.isascii() for h in ("From", "To") for a in msg[h].addresses)
    # Long headers (List-Unsubscribe) stay on one line: some readers keep the fold's space.
    data = msg.as_bytes(policy=(SMTP if ascii_only else SMTPUTF8).clone(max_line_length=998))
    n = 1
    while True:
        path = directory / (f"{stem}.eml" if n == 1 else f"{stem}-{n}.eml")
        try:
            with open(path, "xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            n += 1


class OutboxTransport:
    """Writes each recipient's complete message as an .eml file; sends nothing."""

    name = "outbox"

    def __init__(self, directory: Path, prefix: str = "") -> None:
        self.directory = directory
        self.prefix = prefix
        self.written: list[Path] = []
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return str(self.directory)

    def post_mail(self, body: dict[str, Any]) -> Outcome:
        date = formatdate(usegmt=True)
        paths = []
        for p in body["personalizations"]:
            msg = build_eml(body, p, date=date)
            sid = (p.get("custom_args") or {}).get(CUSTOM_ARG_SUBSCRIBER)
            stem = self.prefix + "-".join(x for x in (sid, safe_name(p["to"][0]["email"])) if x)
            paths.append(write_eml(self.directory, stem, msg))
        with self._lock:
            self.written.extend(paths)
        return Outcome("accepted", message_id=paths[0].name if paths else None)
