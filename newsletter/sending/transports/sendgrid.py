"""SendGrid's v3 API: the neutral batch becomes one Mail Send body with a personalization
per recipient (`mail_body`), posted through the `sendgrid` package with an explicit timeout.

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
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _string  # json.dumps's own
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast
from urllib.parse import urlsplit

from newsletter.errors import TransportError
from newsletter.personalize import text_twin
from newsletter.sending.message import (
    ONE_CLICK,
    Batch,
    Message,
    Recipient,
    clean_header,
    unsubscribe_headers,
)
from newsletter.sending.transports import Capabilities, Outcome, TransportSettings, register
from newsletter.store.schema import DeliveryState

if TYPE_CHECKING:
    from newsletter.project import Project

API_KEY_ENV = "SENDGRID_API_KEY"
#: Seconds; the first retry waits this long, then twice as long each time. Tests shorten it.
BACKOFF_ENV = "NEWSLETTER_SEND_BACKOFF"
#: Never wait longer than this for one 429, whatever X-RateLimit-Reset says.
MAX_RATE_LIMIT_WAIT = 60.0

#: SendGrid's limits (see shared/reference/sendgrid-and-email.md).
MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10000
MAX_CUSTOM_ARGS_BYTES = 10000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
_SMALLEST_LIMIT = min(MAX_SUBSTITUTION_BYTES, MAX_CUSTOM_ARGS_BYTES)

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


# --- the neutral batch as a v3 body -----------------------------------------------------------


def unique_categories(categories: tuple[str, ...] | list[str]) -> list[str]:
    unique: list[str] = []
    for category in categories:
        category = category[:MAX_CATEGORY_LENGTH]
        if category and category not in unique:
            unique.append(category)
    return unique[:MAX_CATEGORIES]


class Shared(NamedTuple):
    """What every reader of a batch has alike, written once for the request instead of in
    each personalization (`shared_by_all`): SendGrid gives each personalization the top
    level's headers and custom_args merged with its own. A bulk send's issue and send ids,
    its one-click header and the HTML copy of its unsubscribe URL were a third of each
    personalization."""

    #: custom_args every reader carries with the same value.
    ids: tuple[tuple[str, str], ...] = ()
    #: Every reader has RFC 8058's List-Unsubscribe-Post (an unsubscribe URL, no own headers).
    one_click: bool = False
    #: HTML-part keys whose value every reader has equal to their text twin's (`text_twin`:
    #: nothing in it that HTML escapes, as an unsubscribe URL): the request's parts use the
    #: text key for both, and no personalization carries the HTML key.
    html_keys: tuple[str, ...] = ()

    @property
    def id_keys(self) -> frozenset[str]:
        """The names of the lifted custom_args."""
        return frozenset(key for key, _ in self.ids)


NOTHING_SHARED = Shared()
_POST_HEADER = "List-Unsubscribe-Post"


def shared_by_all(message: Message, recipients: Sequence[Recipient]) -> Shared:
    """What `Shared` can lift out of these readers' personalizations (nothing for one reader:
    it would save no byte, and each lone reader's ids would make a request top of its own)."""
    if len(recipients) < 2:
        return NOTHING_SHARED
    one_click = all(r.unsubscribe_url and not r.headers for r in recipients) and not any(
        name.lower() == _POST_HEADER.lower() for name in message.headers
    )
    ids = []
    for key, value in recipients[0].ids.items():
        if (
            type(key) is str
            and type(value) is str
            and {r.ids.get(key) for r in recipients} == {value}
        ):
            ids.append((key, value))
    html_keys = []
    first = recipients[0].substitutions
    for key in first:
        twin = text_twin(key) if type(key) is str else None
        if twin is not None and all(
            r.substitutions.get(key, _ABSENT) == r.substitutions.get(twin, _ALSO_ABSENT)
            for r in recipients
        ):
            html_keys.append(key)
    return Shared(tuple(ids), one_click, tuple(html_keys))


_ABSENT, _ALSO_ABSENT = object(), object()


def _with_text_keys(text: str, html_keys: tuple[str, ...]) -> str:
    for key in html_keys:
        text = text.replace(key, cast("str", text_twin(key)))
    return text


def message_body(
    message: Message, *, asm_group_id: int | None = None, shared: Shared = NOTHING_SHARED
) -> dict[str, Any]:
    """Everything of a request except its personalizations; shared by every batch of a send
    (with what its readers share, `shared`)."""
    twins = shared.html_keys  # (wherever SendGrid substitutes: subject, parts, Reply-To)
    body: dict[str, Any] = {
        "from": {"email": message.from_email, "name": clean_header(message.from_name)},
        "subject": _with_text_keys(clean_header(message.subject), twins),
        # SendGrid wants text/plain first.
        "content": [
            {"type": "text/plain", "value": _with_text_keys(message.text, twins)},
            {"type": "text/html", "value": _with_text_keys(message.html, twins)},
        ],
        "categories": unique_categories(message.categories),
        # Explicit, private by default: our footer is the unsubscribe, links stay as written.
        "tracking_settings": {
            "subscription_tracking": {"enable": False},
            "click_tracking": {"enable": message.track_clicks, "enable_text": False},
            "open_tracking": {"enable": message.track_opens},
        },
    }
    if message.reply_to:
        body["reply_to"] = {"email": _with_text_keys(message.reply_to, twins)}
    headers = {k: clean_header(v) for k, v in message.headers.items()}
    if shared.one_click:
        headers[_POST_HEADER] = ONE_CLICK
    if headers:
        body["headers"] = headers
    if message.ids or shared.ids:
        body["custom_args"] = {**message.ids, **dict(shared.ids)}
    if asm_group_id is not None:
        body["asm"] = {"group_id": asm_group_id}
    if message.sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    if message.send_at is not None:
        body["send_at"] = int(message.send_at.timestamp())
    if message.schedule_id is not None:
        body["batch_id"] = message.schedule_id
    return body


def personalization(
    message: Message, recipient: Recipient, shared: Shared = NOTHING_SHARED
) -> dict[str, Any]:
    """One recipient: address, substitutions, RFC 8058 headers and the ids for webhooks
    (less what the batch's readers share, `shared`)."""
    to: dict[str, str] = {"email": recipient.email}
    name = clean_header(recipient.name) if recipient.name else ""
    if name:  # a name of only spaces or control characters is no name
        to["name"] = name
    subs = recipient.substitutions
    p: dict[str, Any] = {
        "to": [to],
        "substitutions": {k: v for k, v in subs.items() if k not in shared.html_keys},
    }
    headers = unsubscribe_headers(message, recipient)
    if shared.one_click:
        del headers[_POST_HEADER]
    if headers:
        p["headers"] = headers
    lifted = shared.id_keys
    ids = {k: v for k, v in recipient.ids.items() if k not in lifted}
    if ids:
        p["custom_args"] = ids
    return p


def mail_body(batch: Batch, *, asm_group_id: int | None = None) -> dict[str, Any]:
    """The v3 body as a dict; what is posted is `mail_json`, these same bytes made faster."""
    if not 1 <= len(batch.recipients) <= MAX_PERSONALIZATIONS:
        raise ValueError(f"a request holds 1..{MAX_PERSONALIZATIONS} personalizations")
    message = batch.message
    shared = shared_by_all(message, batch.recipients)
    body = message_body(message, asm_group_id=asm_group_id, shared=shared)
    body["personalizations"] = [personalization(message, r, shared) for r in batch.recipients]
    return body


# --- the same body as JSON, fast ------------------------------------------------------------
# A big send encodes a 600-byte personalization per reader. Building dicts for `json.dumps`
# cost twice as long as writing the JSON text directly: the shared part is encoded once per
# send, each reader's part from C-escaped strings. The bytes equal `json.dumps(mail_body())`
# (a test compares them on awkward input).


def personalization_json(
    message: Message, recipient: Recipient, shared: Shared = NOTHING_SHARED
) -> str:
    """`json.dumps(personalization(message, recipient, shared))`."""
    name = recipient.name
    if name and not (name.isprintable() and not name[0].isspace() and not name[-1].isspace()):
        name = clean_header(name)  # (printable and trimmed: nothing to clean, and faster)
    subs, ids, url = recipient.substitutions, recipient.ids, recipient.unsubscribe_url
    if url and not message.unsubscribe_mailto and not recipient.headers:
        # The common case: one template per shape of reader (the same keys in the same order
        # for everyone of a send), its values escaped in C.
        shape = (bool(name), tuple(subs), tuple(ids), shared)
        values = [recipient.email, name] if name else [recipient.email]
        try:
            known = _TEMPLATES.get(shape)
            if known is None:
                if len(_TEMPLATES) > 64:  # (the shared ids differ from send to send)
                    _TEMPLATES.clear()
                known = _TEMPLATES[shape] = _template(*shape)
            template, own_subs, own_ids = known
            values += [subs[key] for key in own_subs] if shared.html_keys else subs.values()
            values.append(f"<{url}>")
            values += [ids[key] for key in own_ids]
            return template % tuple(map(_string, values))
        except TypeError:  # a key or value that is not a string: json's own rules, below
            pass
    # Everything else (a mailto or the reader's own headers in List-Unsubscribe, a value that
    # is not a string) is rare: the dict, as json writes it.
    return json.dumps(personalization(message, recipient, shared))


_Template = tuple[str, list[str], list[str]]
_TEMPLATES: dict[tuple[bool, tuple[str, ...], tuple[str, ...], Shared], _Template] = {}


def _template(
    named: bool, subs: tuple[str, ...], ids: tuple[str, ...], shared: Shared
) -> _Template:
    """A personalization with `%s` for each (JSON-escaped) value, in `personalization_json`'s
    order: email, name, the values of the substitutions and then of the custom_args not
    `shared` (the second and third parts name them), the List-Unsubscribe value between."""

    def keys(names: tuple[str, ...] | list[str]) -> str:
        # Keys are escaped here, once; a "%" in them must survive the % formatting.
        return "{" + ", ".join(_string(k).replace("%", "%%") + ": %s" for k in names) + "}"

    own_ids = [key for key in ids if key not in shared.id_keys]
    own_subs = [key for key in subs if key not in shared.html_keys]
    out = '{"to": [{"email": %s' + (', "name": %s' if named else "") + '}], "substitutions": '
    out += keys(own_subs)
    out += ', "headers": {"List-Unsubscribe": %s'
    if not shared.one_click:
        out += ', "' + _POST_HEADER + '": "' + ONE_CLICK + '"'
    out += "}"
    if own_ids:
        out += ', "custom_args": ' + keys(own_ids)
    return out + "}", own_subs, own_ids


def mail_json(batch: Batch, *, asm_group_id: int | None = None) -> bytes:
    """`json.dumps(mail_body(batch)).encode()`."""
    if not 1 <= len(batch.recipients) <= MAX_PERSONALIZATIONS:
        raise ValueError(f"a request holds 1..{MAX_PERSONALIZATIONS} personalizations")
    message = batch.message
    shared = shared_by_all(message, batch.recipients)
    top = shared_json(message, asm_group_id=asm_group_id, shared=shared)
    return _joined(top, [personalization_json(message, r, shared) for r in batch.recipients])


def _joined(top: str, personalizations: list[str]) -> bytes:
    people = ", ".join(personalizations)
    return "".join((top, ', "personalizations": [', people, "]}")).encode("ascii")


def shared_json(
    message: Message, *, asm_group_id: int | None = None, shared: Shared = NOTHING_SHARED
) -> str:
    """`message_body` as JSON without its closing brace: every batch of a send starts so."""
    return json.dumps(message_body(message, asm_group_id=asm_group_id, shared=shared))[:-1]


def _size(value: Mapping[str, str]) -> int:
    # (A lone surrogate, which JSON text can carry, counts as the 3 bytes it takes escaped.)
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _surely_small(values: Mapping[str, str], limit: int) -> bool:
    # JSON-escaped UTF-8 is at most 6 bytes a character (+6 per pair for quotes and ": ,"):
    # below that bound the exact (slower) size does not matter.
    chars = sum(map(len, values)) + sum(map(len, values.values())) + len(values)
    return 6 * chars + 2 < limit


def recipient_problem(recipient: Recipient) -> str | None:
    """Why SendGrid would refuse this recipient (too-large fields), or None."""
    subs = recipient.substitutions
    if not _surely_small(subs, MAX_SUBSTITUTION_BYTES) and _size(subs) >= MAX_SUBSTITUTION_BYTES:
        return (
            f"the personal values for {recipient.email} exceed SendGrid's "
            f"{MAX_SUBSTITUTION_BYTES}-byte substitution limit; shorten that subscriber's fields"
        )
    args = recipient.ids
    if not _surely_small(args, MAX_CUSTOM_ARGS_BYTES) and _size(args) >= MAX_CUSTOM_ARGS_BYTES:
        return f"custom_args for {recipient.email} exceed {MAX_CUSTOM_ARGS_BYTES} bytes"
    return None


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


def sendgrid_host(project: Project) -> str:
    """`SENDGRID_API_HOST` (tests point it at a local server), else the region's host."""
    from newsletter.project import sendgrid_host as host_for

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
        import sendgrid

        self.host = host.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = backoff_base() if backoff is None else backoff
        self.asm_group_id = asm_group_id
        self._sleep = sleep
        self._client = sendgrid.SendGridAPIClient(api_key, host=self.host)
        self._opener = urllib.request.build_opener()
        #: A message, and the tops of its requests (`shared_json`) by what the batch's
        #: readers share.
        self._tops: tuple[Message | None, dict[Shared, str]] = (None, {})

    @classmethod
    def unavailable(cls, project: Project) -> str | None:
        if os.environ.get(API_KEY_ENV):
            return None
        return f"{API_KEY_ENV} is not set"

    @classmethod
    def from_project(cls, project: Project, settings: TransportSettings) -> SendGridTransport:
        key = os.environ.get(API_KEY_ENV)
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
        # The ids lifted to the top still count towards each reader's custom_args limit.
        lifted = len(json.dumps(dict(shared.ids))) if shared.ids else 0
        parts: list[str] = []
        refused: dict[int, Outcome] = {}
        for index, recipient in enumerate(batch.recipients):
            try:
                part = personalization_json(message, recipient, shared)
                # Each limit is on a piece of this text (and the lifted ids), and its escaped
                # ASCII is never shorter than the UTF-8 SendGrid counts: shorter text is
                # within both.
                big = len(part) + lifted >= _SMALLEST_LIMIT
                problem = recipient_problem(recipient) if big else None
            except (TypeError, ValueError) as exc:
                # Nothing went out for them: failed (and tried again on --resume), alone.
                problem = f"the personal values for {recipient.email} cannot be sent ({exc})"
            if problem:
                refused[index] = Outcome(DeliveryState.FAILED, error=problem)
                continue
            parts.append(part)
        body = _joined(top, parts) if parts else None
        return PreparedMail(len(batch.recipients), message.from_email, body, refused)

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
        from python_http_client.exceptions import HTTPError

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
        """POST JSON bytes with the `sendgrid` client's headers and its errors.

        Not through the client's fluent call: it formats the whole payload into a debug log
        line on every request, logging on or off (4 ms for a 1000-reader request, a tenth of
        a big send's time)."""
        from python_http_client.client import Response
        from python_http_client.exceptions import handle_error

        client = self._client.client
        request = urllib.request.Request(
            f"{client.host}{path}",
            data=data,
            headers={**client.request_headers, "Content-Type": "application/json"},
            method="POST",
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

    def suppressions(self, name: str, page_size: int) -> list[str]:
        """Every address on one of SendGrid's suppression lists, page by page."""
        from python_http_client.exceptions import HTTPError

        endpoint = getattr(self._client.client.suppression, name)
        addresses: list[str] = []
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
            addresses += [
                item["email"]
                for item in page
                if isinstance(item, dict) and isinstance(item.get("email"), str)
            ]
            if len(page) < page_size:
                return addresses
            offset += page_size
