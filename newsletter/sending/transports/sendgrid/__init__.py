"""SendGrid's v3 API: the neutral batch becomes one Mail Send body with a personalization
per recipient (`body.py`: `mail_body`, written fast by `prepare`), posted through the
`sendgrid` package with an explicit timeout.

Answers, as the ledger needs them:
- 202 (or 200 in sandbox mode): `accepted`, with the `X-Message-Id`.
- 429: wait until `X-RateLimit-Reset` (capped), retry. 5xx, or a connection refused before
  the request left: retry with exponential backoff. Both bounded by `max_retries`.
- other 4xx: `failed` with SendGrid's error; the send stops (the next batch would fail alike).
- an answer lost after the request went out (timeout, reset, closed): `uncertain`. There is no
  idempotency key, so it is never retried automatically.
"""

from __future__ import annotations

import errno
import functools
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import quote, urlsplit

from newsletter import __version__
from newsletter.errors import ConfigError, TransportError
from newsletter.project import sendgrid_host as host_for
from newsletter.secrets_file import secret_from_environment
from newsletter.sending.message import Batch, Message, Readers, Recipient
from newsletter.sending.transports import Capabilities, Outcome, TransportSettings, register
from newsletter.sending.transports.sendgrid.body import (
    MAX_PERSONALIZATIONS,
    SMALLEST_LIMIT,
    Shared,
    joined_request,
    personalization_json,
    readers_json,
    recipient_problem,
    shared_by_all,
    shared_by_readers,
    shared_json,
)
from newsletter.store.schema import DeliveryState

if TYPE_CHECKING:
    from newsletter.project import Project

API_KEY_ENV = "SENDGRID_API_KEY"
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


def backoff_base() -> float:
    try:
        return float(os.environ.get(BACKOFF_ENV, "1.0"))
    except ValueError:
        return 1.0


class PreparedMail(NamedTuple):
    """A batch made ready to post (`SendGridTransport.prepare`): small to pass between
    processes (its JSON as one bytes object)."""

    #: Readers in the batch, refused ones included.
    size: int
    sender: str
    #: The request's JSON; None when every reader was refused.
    body: bytes | None
    #: Index in the batch -> the failed outcome of a reader left out of the request.
    refused: dict[int, Outcome]


# --- the client -----------------------------------------------------------------------------


def _created(value: object) -> datetime | None:
    """A suppression entry's `created` (Unix seconds) as a time; None if it is none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


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


def api_key() -> str | None:
    """`SENDGRID_API_KEY` (None when unset); a ConfigError, never showing it, when it holds
    a space or a line break."""
    return secret_from_environment(API_KEY_ENV, spaces=False)


def sendgrid_host(project: Project) -> str:
    """`SENDGRID_API_HOST` (tests point it at a local server), else the region's host."""
    return host_for(project.config)


@register
class SendGridTransport:
    """SendGrid's v3 API through the `sendgrid` package, with an explicit timeout."""

    kind: ClassVar[str] = "sendgrid"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch=MAX_PERSONALIZATIONS,
        keeps_ledger=True,
        can_schedule=True,
        has_sandbox=True,
        reports_delivery=True,
        suppression_lists=True,
        prepares=True,
    )
    accepted_label: ClassVar[str] = "accepted by SendGrid"

    def __init__(
        self,
        api_key: str,
        host: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asm_group_id: int | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = backoff_base() if backoff is None else backoff
        self.asm_group_id = asm_group_id
        self._sleep = sleep
        self._api_key = api_key
        self._opener = urllib.request.build_opener()
        #: A message, and the tops of its requests (`shared_json`) by what the batch's
        #: readers share.
        self._tops: tuple[Message | None, dict[Shared, str]] = (None, {})

    @functools.cached_property
    def _client(self) -> Any:
        """The `sendgrid` package's client, for every call but the mail sends (importing the
        package, with the cryptography it loads for event webhooks, took 40-50 ms of each send)."""
        import sendgrid  # deferred: sendgrid costs 90 ms at start-up (see above)

        return sendgrid.SendGridAPIClient(self._api_key, host=self.host)

    @functools.cached_property
    def _mail_headers(self) -> dict[str, str]:
        """The headers of a mail send: the client's own (`sendgrid` package's key, agent and
        accept headers), without importing it."""
        return {
            "Authorization": f"Bearer {self._api_key}",
            "User-Agent": f"newsletter/{__version__};python",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    @classmethod
    def unavailable(cls, project: Project) -> str | None:
        try:
            key = api_key()
            sendgrid_host(project)
        except ConfigError as exc:
            return str(exc)
        return None if key else f"{API_KEY_ENV} is not set"

    @classmethod
    def from_project(cls, project: Project, settings: TransportSettings) -> SendGridTransport:
        key = api_key()
        if not key:
            raise TransportError(f"{API_KEY_ENV} is not set; export your SendGrid API key")
        section = project.config.section("sendgrid")
        return cls(
            key,
            sendgrid_host(project),
            timeout=section["timeout"],
            # A web request is waiting for a transactional mail: few retries.
            max_retries=min(settings.max_retries, 2)
            if settings.transactional
            else settings.max_retries,
            asm_group_id=None if settings.transactional else section["unsubscribe_group_id"],
        )

    @property
    def where(self) -> str:
        return urlsplit(self.host).netloc or self.host

    def refuse(self, recipient: Recipient) -> str | None:
        # `send` checks the same as it encodes; this is for callers that must know before.
        return recipient_problem(recipient)

    def close(self) -> None:
        pass

    def send(self, batch: Batch) -> list[Outcome]:
        """One request for the batch (see `prepare`)."""
        return self.send_prepared(self.prepare(batch))

    def prepare(self, batch: Batch) -> PreparedMail:
        """The request's JSON, and the readers left out of it: one over SendGrid's size
        limits fails alone (`recipient_problem`), checked as their JSON is written, where
        short text proves them within the limits. No I/O: a big send runs this in worker
        processes (`capabilities.prepares`)."""
        message = batch.message
        shared = shared_by_all(message, batch.recipients)
        top, lifted = self._top(message, shared)
        parts: list[str] = []
        refused: dict[int, Outcome] = {}
        for index, recipient in enumerate(batch.recipients):
            try:
                part = personalization_json(message, recipient, shared)
                # Each limit is on a piece of this text (and the lifted ids), and its escaped
                # ASCII is never shorter than the UTF-8 SendGrid counts: shorter text is
                # within both.
                big = len(part) + lifted >= SMALLEST_LIMIT
                problem = recipient_problem(recipient) if big else None
            except (TypeError, ValueError) as exc:
                # Nothing went out for them: failed (and tried again on --resume), alone.
                problem = f"the personal values for {recipient.email} cannot be sent ({exc})"
            if problem:
                refused[index] = Outcome(DeliveryState.FAILED, error=problem)
                continue
            parts.append(part)
        body = joined_request(top, parts) if parts else None
        return PreparedMail(len(batch.recipients), message.from_email, body, refused)

    def prepare_readers(self, readers: Readers) -> PreparedMail | None:
        """`prepare` of the same readers as a `Batch` (a bulk send's, see `Readers`), the
        same bytes written faster (`readers_json`); None when they need the general way."""
        message = readers.message
        shared = shared_by_readers(readers)
        if shared is None:
            return None
        top, lifted = self._top(message, shared)
        written = readers_json(readers, shared, lifted)
        if written is None:
            return None
        parts, problems = written
        refused = {
            index: Outcome(DeliveryState.FAILED, error=problem)
            for index, problem in problems.items()
        }
        body = joined_request(top, parts) if parts else None
        return PreparedMail(len(readers.readers), message.from_email, body, refused)

    def _top(self, message: Message, shared: Shared) -> tuple[str, int]:
        """The request's JSON up to its personalizations, and how long the JSON of the ids
        lifted into it is (they still count towards each reader's custom_args limit)."""
        tops = self._tops  # (one read: sender threads prepare side by side)
        if tops[0] is not message:
            tops = self._tops = (message, {})
        top = tops[1].get(shared)
        if top is None:
            # Every batch of a send shares its message (and mostly what its readers share):
            # encode that part once.
            if len(tops[1]) > 8:
                tops[1].clear()
            top = tops[1][shared] = shared_json(
                message, asm_group_id=self.asm_group_id, shared=shared
            )
        return top, len(json.dumps(dict(shared.ids))) if shared.ids else 0

    def send_prepared(self, prepared: PreparedMail) -> list[Outcome]:
        """Post a prepared request: one outcome per reader of its batch, in order."""
        count, refused = prepared.size, prepared.refused
        if prepared.body is None:
            return [refused[index] for index in range(count)]
        outcome = self.post_mail(prepared.body, sender=prepared.sender)
        if not refused:
            return [outcome] * count
        return [refused.get(index, outcome) for index in range(count)]

    def _http_error(self, exc: Any, sender: str | None) -> str:
        code = exc.status_code
        if code == 401:
            return "SendGrid rejected the API key (check SENDGRID_API_KEY)"
        if code == 403:
            return (
                f"SendGrid refused to send from {sender or 'the from address'}: it is not a verified sender; verify it "
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

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | bytes | None,
        query: dict[str, Any] | None = None,
        *,
        sender: str | None = None,
    ) -> Any:
        """One API call with retries; returns the response or an `Outcome` for a failure.
        A `bytes` body is JSON already (a mail send): it is posted as it is."""
        # deferred: python_http_client costs 40 ms at start-up; only an API call needs it
        from python_http_client.exceptions import HTTPError

        node: Any = None
        if not isinstance(body, bytes):
            node = self._client.client
            for part in path.strip("/").split("/")[1:]:  # drop the "v3" the client adds itself
                node = node._(part)
        if isinstance(body, dict):
            sender = (body.get("from") or {}).get("email")
        attempt = 0
        while True:
            attempt += 1
            try:
                if isinstance(body, bytes):
                    response = self._post_json(path, body)
                else:
                    kwargs: dict[str, Any] = {"timeout": self.timeout}
                    if body is not None or method == "post":
                        kwargs["request_body"] = body
                    if query is not None:
                        kwargs["query_params"] = query
                    response = getattr(node, method)(**kwargs)
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
                message = self._http_error(exc, sender)
                if code == 429 or code >= 500:
                    message += f" (after {attempt} tries)"
                return Outcome(DeliveryState.FAILED, error=message, fatal=True, attempts=attempt)
            except urllib.error.URLError as exc:
                if _not_sent(exc.reason):
                    if attempt <= self.max_retries:
                        self._sleep(self.backoff * 2 ** (attempt - 1))
                        continue
                    return Outcome(
                        DeliveryState.FAILED,
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
            DeliveryState.UNCERTAIN,
            error=f"SendGrid's answer {what} after the request was sent; it may have been delivered",
            attempts=attempt,
        )

    def _rate_limit_wait(self, headers: Any) -> float:
        try:
            reset = float(headers.get("X-RateLimit-Reset"))
        except (TypeError, ValueError, AttributeError):
            return self.backoff
        return min(max(reset - time.time(), 0.0), MAX_RATE_LIMIT_WAIT)

    def _post_json(self, path: str, data: bytes) -> Any:
        """POST JSON bytes with the client's headers (`_mail_headers`) and the `sendgrid`
        package's errors.

        Not through the client's fluent call: it formats the whole payload into a debug log
        line on every request, logging on or off (4 ms for a 1000-reader request, a tenth of
        a big send's time)."""
        # deferred: python_http_client costs 40 ms at start-up; only an API call needs it
        from python_http_client.client import Response
        from python_http_client.exceptions import handle_error

        request = urllib.request.Request(
            f"{self.host}{path}", data=data, headers=self._mail_headers, method="POST"
        )
        try:
            return Response(self._opener.open(request, timeout=self.timeout))
        except urllib.error.HTTPError as exc:
            raise handle_error(exc) from None

    def post_mail(self, body: dict[str, Any] | bytes, *, sender: str | None = None) -> Outcome:
        """Post one ready v3 body, a dict or its JSON (`mail_json`; then say the `sender`, for
        a refusal's message). The bare client the benchmark compares against uses it too."""
        result = self._call("post", "/v3/mail/send", body, sender=sender)
        if isinstance(result, Outcome):
            return result
        if result.status_code in (200, 202):
            return Outcome(
                DeliveryState.ACCEPTED,
                message_id=result.headers.get("X-Message-Id"),
                attempts=result.attempts,
                where=self.where,
            )
        return Outcome(
            DeliveryState.FAILED,
            error=f"SendGrid answered {result.status_code} to /v3/mail/send",
            fatal=True,
        )

    # --- scheduling (capabilities.can_schedule) ---

    def create_schedule(self) -> str:
        """A batch id that groups a scheduled send so that it can be cancelled."""
        result = self._call("post", "/v3/mail/batch", None)
        if isinstance(result, Outcome):
            raise TransportError(f"could not create a SendGrid batch id: {result.error}")
        return str(json.loads(result.body)["batch_id"])

    def cancel_schedule(self, schedule_id: str) -> None:
        result = self._call(
            "post", "/v3/user/scheduled_sends", {"batch_id": schedule_id, "status": "cancel"}
        )
        if isinstance(result, Outcome):
            raise TransportError(f"SendGrid did not cancel batch {schedule_id}: {result.error}")

    # --- suppression lists (capabilities.suppression_lists) ---

    def lift_bounce(self, email: str) -> None:
        """Take `email` off SendGrid's bounce and invalid-address lists, which drop every
        later mail to it (DELETE /v3/suppression/{bounces,invalid_emails}/{email}); an
        address not on them is fine."""
        for name in ("bounces", "invalid_emails"):
            self._lift(name, email)

    def _lift(self, name: str, email: str) -> None:
        # deferred: python_http_client costs 40 ms at start-up; only an API call needs it
        from python_http_client.exceptions import HTTPError

        endpoint = getattr(self._client.client.suppression, name)._(quote(email, safe="@"))
        try:
            endpoint.delete(timeout=self.timeout)
        except HTTPError as exc:
            if exc.status_code == 404:
                return
            if exc.status_code == 403:
                raise TransportError(
                    "SendGrid refused to change its bounce list (403); give the API key the "
                    "Suppressions permission"
                ) from None
            raise TransportError(
                f"SendGrid answered {exc.status_code} when asked to drop a bounce"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"cannot reach SendGrid ({reason})") from None

    def suppressions(self, name: str, page_size: int) -> dict[str, datetime | None]:
        """Every address on one of SendGrid's suppression lists, page by page, with when
        SendGrid put it there (its `created`, None if it says none)."""
        # deferred: python_http_client costs 40 ms at start-up; only an API call needs it
        from python_http_client.exceptions import HTTPError

        endpoint = getattr(self._client.client.suppression, name)
        addresses: dict[str, datetime | None] = {}
        offset = 0
        while True:
            try:
                response = endpoint.get(
                    query_params={"limit": page_size, "offset": offset}, timeout=self.timeout
                )
            except HTTPError as exc:
                if exc.status_code == 401:
                    raise TransportError(
                        "SendGrid rejected the API key (check SENDGRID_API_KEY)"
                    ) from None
                if exc.status_code == 403:
                    raise TransportError(
                        f"SendGrid refused to read the {name} list (403); give the API key "
                        "the Suppressions read permission"
                    ) from None
                raise TransportError(
                    f"SendGrid answered {exc.status_code} for the {name} list; try again later"
                ) from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise TransportError(
                    f"cannot reach SendGrid ({reason}); check the network or SENDGRID_API_HOST"
                ) from None
            try:
                page = json.loads(response.body or b"[]")
            except ValueError:
                raise TransportError(f"SendGrid sent a {name} page that is not JSON") from None
            if not isinstance(page, list):
                raise TransportError(f"SendGrid sent a {name} page that is not a list")
            for item in page:
                if isinstance(item, dict) and isinstance(item.get("email"), str):
                    addresses[item["email"]] = _created(item.get("created"))
            if len(page) < page_size:
                return addresses
            offset += page_size
