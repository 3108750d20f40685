"""A fake SendGrid v3 API on 127.0.0.1: real HTTP, for tests and benchmarks.

It speaks the endpoints the tool uses and enforces SendGrid's documented limits, so a
request that passes here has the shape SendGrid accepts. Nothing leaves the machine.

In a test (pytest fixture `sendgrid_server` in tests that import it, or by hand)::

    from tests.sendgrid_server import FakeSendGrid

    with FakeSendGrid(api_key="SG.test", verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
        ...
        server.messages          # every accepted /v3/mail/send payload (dict), plus "_message_id"
        server.recipients()      # the addresses of every accepted personalization, in order
        copies(server.messages[0])  # what SendGrid makes of each personalization (below)
        server.requests          # every /v3/mail/send request: {"status", "body" (dict|None)}
        server.inject("429", count=2, reset_in=1)   # next 2 mail requests: 429 + X-RateLimit-Reset
        server.inject("500", count=1)               # next request: 500 (also "502", "503")
        server.inject("400", errors=[{"message", "field"}])  # next request: 400 with these
        server.inject("drop", count=1)              # read the body, record it as sent, close the
                                                    # socket without answering (record=False: not sent)
        server.inject("delay", count=3, seconds=0.5)  # answer the next 3 after a pause
        server.delay = 0.2                          # pause before every mail request
        server.suppressions["bounces"] = [{"email": ..., "created": 1700000000, "reason": ...}]
        server.batches           # batch ids created by POST /v3/mail/batch
        server.scheduled_sends   # {batch_id: "pause" | "cancel"} from POST /v3/user/scheduled_sends

As a separate process (the kill -9 test, the benchmark)::

    python -m tests.sendgrid_server --port 0 --log FILE [--key KEY] [--sender ADDR]... [--delay S]
                                    [--log-recipients-only | --count-only]

prints `PORT <n>` on its first line of stdout once it listens, appends one JSON line per
accepted mail request to FILE (the payload plus "_message_id"), and keeps nothing in memory.
`--log-recipients-only` logs each personalization's `to` only; `--count-only` (benchmarks)
logs `{"_message_id", "recipients", "repeated"}`: how many addresses the request had, and how
many of them an earlier accepted request (or this one) had already (ignoring case; the server
keeps the addresses seen).
`GET /__fake__/state` answers {"batches", "scheduled_sends"};
`POST /__fake__/inject` with JSON {"kind", "count", ...} and `POST /__fake__/delay` with
{"seconds"} control a running process the same way as `inject()` and `delay` above.

Endpoints:
- `POST /v3/mail/send`: 401 (bad key), 403 (from address not in `verified_senders`), 413 (over
  30 MB), 400 with `{"errors": [{"message", "field", "help"}]}` for every limit broken
  (personalizations 1..1000, recipients <= 1000 and unique, substitutions < 10,000 bytes per
  personalization, custom_args < 10,000 bytes, string values, categories <= 10 unique <= 255
  chars, content text/plain first then text/html, reply_to xor reply_to_list, reserved headers,
  send_at <= 72 h ahead, asm groups); 202 with `X-Message-Id`, or 200 in sandbox mode (not recorded).
- `POST /v3/mail/batch`: 201 `{"batch_id"}`.
- `POST /v3/user/scheduled_sends` `{"batch_id", "status": "pause"|"cancel"}`: 201 and the body.
- `GET /v3/whitelabel/domains`: `server.whitelabel_domains` (see `authenticated_domain`).
- `GET /v3/suppression/{unsubscribes,bounces,spam_reports,invalid_emails}?limit=&offset=`:
  a JSON array page of `suppressions[name]` (SendGrid's shapes: `{"email", "created", ...}`).
- `DELETE /v3/suppression/{list}/{email}`: takes the address off `suppressions[name]`: 204,
  or 404 if it was not on it; noted in `suppression_requests` as `DELETE <path>`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from json.encoder import encode_basestring as _string  # json.dumps's own
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BYTES = 30 * 1024 * 1024
RESERVED_HEADERS = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}
SUPPRESSION_LISTS = ("unsubscribes", "bounces", "spam_reports", "invalid_emails")


def _error(message: str, field: str | None = None, help: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": help}


def _too_big(values: dict[str, str], limit: int = 10000) -> bool:
    """Whether compact UTF-8 JSON of `values` takes `limit` bytes or more, as SendGrid counts.
    Exact near the limit only: JSON-escaped UTF-8 takes at most 6 bytes a character (and 6
    more per pair), so a small dict needs no encoding. A benchmark sends 100,000 of them.
    A lone surrogate counts as the 3 bytes it takes, as the client counts it."""
    chars = sum(map(len, values)) + sum(map(len, values.values())) + len(values)
    if 6 * chars + 2 < limit:
        return False
    return len(json.dumps(values, ensure_ascii=False).encode("utf-8", "surrogatepass")) >= limit


# The personalizations a send writes are all alike; `_plain_recipients` proves such ones valid
# without the full checks (a benchmark sends 100,000 of them through here).
_PLAIN_KEYS = frozenset({"to", "substitutions", "headers", "custom_args"})
_PLAIN_HEADERS = frozenset({"List-Unsubscribe", "List-Unsubscribe-Post"})


def _plain_recipients(personalizations: list[Any], message_args: Any) -> int | None:
    """The number of recipients if every personalization is plain, so that the full checks
    (`_check_personalizations`) could find nothing wrong; None as soon as one is not.

    Plain: a dict with no keys but `_PLAIN_KEYS` (so no cc, bcc or send_at); `to` is a list
    of one dict whose "email" is a str with an "@"; no address repeats another, ignoring
    case; substitutions, custom_args and headers are dicts (or absent or empty); header names
    are `_PLAIN_HEADERS`; the keys and values of the substitutions, the custom_args and the
    message's custom_args are strings whose characters (plus one per pair) are together so
    few that `_too_big`'s cheap bound clears both the substitutions and the merged custom_args.
    Anything else, valid or not, is for the full checks. (Strings are taken as JSON makes
    them: a str subclass that redefined len or lower could tell the two apart.)
    """
    if type(message_args) is not dict:
        return None
    try:  # joining strings counts their characters, and raises TypeError for anything else
        base = len("".join([*message_args, *message_args.values()])) + len(message_args)
    except TypeError:
        return None
    plain_keys, plain_headers = _PLAIN_KEYS.issuperset, _PLAIN_HEADERS.issuperset
    emails = []
    for p in personalizations:
        if type(p) is not dict or not plain_keys(p):
            return None
        to = p.get("to")
        if type(to) is not list or len(to) != 1 or type(to[0]) is not dict:
            return None
        email = to[0].get("email")
        if type(email) is not str or "@" not in email:
            return None
        emails.append(email)
        subs = p.get("substitutions") or {}
        args = p.get("custom_args") or {}
        headers = p.get("headers") or {}
        if type(subs) is not dict or type(args) is not dict or type(headers) is not dict:
            return None
        if not plain_headers(headers):
            return None
        try:
            chars = len("".join([*subs, *subs.values(), *args, *args.values()]))
        except TypeError:
            return None
        if 6 * (base + chars + len(subs) + len(args)) + 2 >= 10000:
            return None
    if len(set(map(str.lower, emails))) < len(emails):  # a repeated address
        return None
    return len(emails)


def validate_mail(body: Any, now: float | None = None) -> list[dict[str, Any]]:
    """Every limit of SendGrid's Mail Send API that a request breaks (empty list: valid)."""
    errors: list[dict[str, Any]] = []
    if not isinstance(body, dict):
        return [_error("The request body must be a JSON object.")]
    now = time.time() if now is None else now
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(_error("The personalizations field is required.", "personalizations"))
        personalizations = []
    if len(personalizations) > 1000:
        errors.append(
            _error("The personalizations field must have 1000 or fewer items.", "personalizations")
        )
    message_args = body.get("custom_args") or {}
    count = _plain_recipients(personalizations, message_args)
    if count is None:  # something out of the ordinary: the full checks say what, and where
        count = _check_personalizations(personalizations, message_args, now, errors)
    if count > 1000:
        errors.append(
            _error("The total number of recipients must be 1000 or fewer.", "personalizations")
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        errors.append(_error("The from object must be provided for every email send.", "from"))
    if not body.get("subject") and not all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    ):
        errors.append(_error("The subject is required.", "subject"))
    content = body.get("content")
    if not isinstance(content, list) or not content:
        errors.append(_error("The content value must be a non-empty array.", "content"))
    else:
        types = [c.get("type") if isinstance(c, dict) else None for c in content]
        for i, c in enumerate(content):
            if not isinstance(c, dict) or not isinstance(c.get("value"), str) or not c["value"]:
                errors.append(
                    _error("The content value must be a non-empty string.", f"content.{i}.value")
                )
        if "text/plain" in types and types[0] != "text/plain":
            errors.append(_error("If present, text/plain must be first.", "content"))
        if (
            "text/html" in types
            and "text/plain" in types
            and types.index("text/html") < types.index("text/plain")
        ):
            errors.append(_error("text/html must come after text/plain.", "content"))
    if "reply_to" in body and "reply_to_list" in body:
        errors.append(_error("reply_to and reply_to_list are mutually exclusive.", "reply_to"))
    categories = body.get("categories") or []
    if len(categories) > 10:
        errors.append(_error("Too many categories: at most 10.", "categories"))
    if len(set(categories)) != len(categories):
        errors.append(_error("The categories must be unique.", "categories"))
    if any(not isinstance(c, str) or len(c) > 255 for c in categories):
        errors.append(
            _error("Each category must be a string of at most 255 characters.", "categories")
        )
    for name in body.get("headers") or {}:
        if name.lower() in RESERVED_HEADERS:
            errors.append(_error(f"The header {name} is reserved.", "headers"))
    if "send_at" in body:
        errors.extend(_check_send_at(body["send_at"], "send_at", now))
    asm = body.get("asm")
    if asm is not None:
        if not isinstance(asm, dict) or not isinstance(asm.get("group_id"), int):
            errors.append(_error("asm.group_id must be an integer.", "asm.group_id"))
        elif len(asm.get("groups_to_display") or []) > 25:
            errors.append(
                _error(
                    "asm.groups_to_display must have 25 or fewer items.", "asm.groups_to_display"
                )
            )
    return errors


def _check_personalizations(
    personalizations: list[Any], message_args: Any, now: float, errors: list[dict[str, Any]]
) -> int:
    """Every personalization's own checks, in order, appended to `errors`; the number of
    recipients (valid addresses in to, cc and bcc)."""
    seen: set[str] = set()
    count = 0
    for i, p in enumerate(personalizations):
        where = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.append(_error("Each personalization must be an object.", where))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _error("The to array is required for all personalization objects.", f"{where}.to")
            )
            to = []
        for key in ("to", "cc", "bcc"):
            for j, r in enumerate(p.get(key) or []):
                email = r.get("email") if isinstance(r, dict) else None
                if not isinstance(email, str) or "@" not in email:
                    errors.append(
                        _error("Does not contain a valid address.", f"{where}.{key}.{j}.email")
                    )
                    continue
                count += 1
                if email.lower() in seen:
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be unique "
                            "between to, cc, and bcc.",
                            f"{where}.{key}.{j}.email",
                        )
                    )
                seen.add(email.lower())
        subs = p.get("substitutions") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in subs.items()):
            errors.append(_error("Substitution values must be strings.", f"{where}.substitutions"))
        elif _too_big(subs):
            errors.append(
                _error(
                    "The substitutions must total less than 10000 bytes.", f"{where}.substitutions"
                )
            )
        args = {**message_args, **(p.get("custom_args") or {})}
        if not all(isinstance(v, str) for v in args.values()):
            errors.append(_error("Custom arg values must be strings.", f"{where}.custom_args"))
        elif _too_big(args):
            errors.append(
                _error("The custom_args must total less than 10000 bytes.", f"{where}.custom_args")
            )
        for name in p.get("headers") or {}:
            if name.lower() in RESERVED_HEADERS:
                errors.append(_error(f"The header {name} is reserved.", f"{where}.headers"))
        if "send_at" in p:
            errors.extend(_check_send_at(p["send_at"], f"{where}.send_at", now))
    return count


def _check_send_at(value: Any, field: str, now: float) -> list[dict[str, Any]]:
    if not isinstance(value, int) or isinstance(value, bool):
        return [_error("send_at must be a Unix timestamp.", field)]
    if value > now + 72 * 3600:
        return [_error("send_at cannot be more than 72 hours in the future.", field)]
    return []


def copies(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What SendGrid makes of each personalization of a mail request: its `to`, its headers
    and custom_args (the request's top-level ones merged with the personalization's own, which
    win), and its subject, reply-to address, text and html with the substitutions made."""
    out = []
    for p in body["personalizations"]:
        subs = p.get("substitutions") or {}
        content = {c["type"]: c["value"] for c in body.get("content") or []}
        out.append(
            {
                "to": p["to"],
                "headers": {**(body.get("headers") or {}), **(p.get("headers") or {})},
                "custom_args": {**(body.get("custom_args") or {}), **(p.get("custom_args") or {})},
                "subject": substituted(p.get("subject") or body.get("subject") or "", subs),
                "reply_to": substituted((body.get("reply_to") or {}).get("email") or "", subs),
                "text": substituted(content.get("text/plain", ""), subs),
                "html": substituted(content.get("text/html", ""), subs),
            }
        )
    return out


def substituted(text: str, subs: dict[str, str]) -> str:
    # Every key in one pass, the longest first where keys overlap.
    if not subs:
        return text
    keys = sorted(subs, key=len, reverse=True)
    return re.sub("|".join(map(re.escape, keys)), lambda m: subs[m.group(0)], text)


_ONE_TO = '{"to": [{"email": %s}]}'
_ONE_NAMED_TO = '{"to": [{"email": %s, "name": %s}]}'


def _recipients_json(message_id: str, personalizations: list[dict[str, Any]]) -> str:
    """A `--log-recipients-only` line: JSON that reads back as `{"_message_id": message_id,
    "personalizations": [{"to": p["to"]}, ...]}`, as json.dumps wrote it before, but cheaper (a
    benchmark logs 100,000 recipients): a `to` of one address, with a name or not, is a
    template filled with json's own C string escaper; any other `to` goes through json.dumps."""
    parts = []
    for p in personalizations:
        to = p["to"]
        try:
            if len(to) == 1 and len(to[0]) == 2:
                parts.append(_ONE_NAMED_TO % (_string(to[0]["email"]), _string(to[0]["name"])))
                continue
            if len(to) == 1 and len(to[0]) == 1:
                parts.append(_ONE_TO % _string(to[0]["email"]))
                continue
        except (KeyError, TypeError):  # other keys, or a value that is not a string
            pass
        parts.append('{"to": ' + json.dumps(to, ensure_ascii=False) + "}")
    people = ", ".join(parts)
    return f'{{"_message_id": {_string(message_id)}, "personalizations": [{people}]}}'


class FakeSendGrid:
    """The server; see the module docstring."""

    def __init__(
        self,
        api_key: str = "SG.test-key",
        verified_senders: list[str] | tuple[str, ...] = ("jens@example.com",),
        log_path: Path | str | None = None,
        port: int = 0,
        delay: float = 0.0,
        log_recipients_only: bool = False,
        count_only: bool = False,
    ) -> None:
        self.api_key = api_key
        self.log_recipients_only = log_recipients_only
        self.count_only = count_only
        self._seen: set[str] = set()
        self.verified_senders = {s.lower() for s in verified_senders}
        self.log_path = Path(log_path) if log_path else None
        self.delay = delay
        self.messages: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.batches: list[str] = []
        self.scheduled_sends: dict[str, str] = {}
        self.suppressions: dict[str, list[dict[str, Any]]] = {
            name: [] for name in SUPPRESSION_LISTS
        }
        self.suppression_requests: list[str] = []
        #: What `GET /v3/whitelabel/domains` lists: SendGrid's authenticated domains, e.g.
        #: `authenticated_domain("example.com", "em1234", "u1.wl2.sendgrid.net")`.
        self.whitelabel_domains: list[dict[str, Any]] = []
        self._faults: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        # A lone surrogate (JSON text can carry one) is written as its \uXXXX escape, which
        # reads back as the same character: the line stays valid JSON in a UTF-8 file.
        self._log = (
            open(self.log_path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            if self.log_path
            else None
        )
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeSendGrid:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._log:
            self._log.close()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, kind: str, count: int = 1, **params: Any) -> None:
        """Fault for the next `count` mail requests: "429" (reset_in=seconds), "500"/"502"/"503",
        "drop" (record=True), "delay" (seconds=...)."""
        with self._lock:
            for _ in range(count):
                self._faults.append({"kind": kind, **params})

    def next_fault(self) -> dict[str, Any] | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def record(self, body: dict[str, Any], message_id: str) -> None:
        if self._log is None:
            if self.log_recipients_only:
                entry = {
                    "_message_id": message_id,
                    "personalizations": [{"to": p["to"]} for p in body["personalizations"]],
                }
            else:
                entry = {**body, "_message_id": message_id}
            with self._lock:
                self.messages.append(entry)
            return
        if self.count_only:
            addresses = [to["email"].lower() for p in body["personalizations"] for to in p["to"]]
            with self._lock:
                before = len(self._seen)
                self._seen.update(addresses)
                repeated = len(addresses) - (len(self._seen) - before)
            count = {"_message_id": message_id, "recipients": len(addresses), "repeated": repeated}
            line = json.dumps(count)
        elif self.log_recipients_only:
            line = _recipients_json(message_id, body["personalizations"])
        else:
            line = json.dumps({**body, "_message_id": message_id}, ensure_ascii=False)
        with self._lock:
            self._log.write(line + "\n")
            self._log.flush()

    def recipients(self) -> list[str]:
        """Every accepted personalization's first `to` address, in the order received."""
        return [p["to"][0]["email"] for m in self.messages for p in m["personalizations"]]


def authenticated_domain(domain: str, return_path: str, target: str) -> dict[str, Any]:
    """One entry of `GET /v3/whitelabel/domains` as SendGrid shows a domain authenticated
    with automated security: the return-path CNAME and two DKIM CNAMEs, all to `target`."""
    return {
        "id": 1,
        "domain": domain,
        "subdomain": return_path,
        "username": "jens",
        "default": True,
        "automatic_security": True,
        "valid": True,
        "dns": {
            "mail_cname": {
                "valid": True,
                "type": "cname",
                "host": f"{return_path}.{domain}",
                "data": target,
            },
            "dkim1": {
                "valid": True,
                "type": "cname",
                "host": f"s1._domainkey.{domain}",
                "data": f"s1.domainkey.{target}",
            },
            "dkim2": {
                "valid": True,
                "type": "cname",
                "host": f"s2._domainkey.{domain}",
                "data": f"s2.domainkey.{target}",
            },
        },
    }


def _handler_for(server: FakeSendGrid) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(
            self, status: int, body: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(
                401,
                {
                    "errors": [
                        _error("The provided authorization grant is invalid, expired, or revoked")
                    ]
                },
            )
            return False

        def _read_json(self) -> tuple[bytes, Any]:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                return raw, json.loads(raw or b"null")
            except ValueError:
                return raw, None

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            if parts.path == "/__fake__/state":
                self._send(
                    200, {"batches": server.batches, "scheduled_sends": server.scheduled_sends}
                )
                return
            if parts.path == "/v3/whitelabel/domains":
                if self._authorized():
                    self._send(200, server.whitelabel_domains)
                return
            name = parts.path.removeprefix("/v3/suppression/")
            if not parts.path.startswith("/v3/suppression/") or name not in SUPPRESSION_LISTS:
                self._send(404, {"errors": [_error("not found")]})
                return
            if not self._authorized():
                return
            query = parse_qs(parts.query)
            limit = int(query.get("limit", ["500"])[0])
            offset = int(query.get("offset", ["0"])[0])
            server.suppression_requests.append(self.path)
            self._send(200, server.suppressions[name][offset : offset + limit])

        def do_DELETE(self) -> None:  # noqa: N802
            # DELETE /v3/suppression/<list>/<email>: 204, or 404 if the address is not on it.
            path = unquote(urlsplit(self.path).path)
            name, _, address = path.removeprefix("/v3/suppression/").partition("/")
            if not path.startswith("/v3/suppression/") or name not in SUPPRESSION_LISTS:
                self._send(404, {"errors": [_error("not found")]})
                return
            if not self._authorized():
                return
            server.suppression_requests.append(f"DELETE {path}")
            kept = [e for e in server.suppressions[name] if e.get("email") != address]
            if len(kept) == len(server.suppressions[name]):
                self._send(404, {"errors": [_error("not found")]})
                return
            server.suppressions[name] = kept
            self.send_response(204)
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            if path == "/__fake__/inject":
                _, body = self._read_json()
                body = dict(body)
                server.inject(body.pop("kind"), body.pop("count", 1), **body)
                self._send(200, {"ok": True})
                return
            if path == "/__fake__/delay":
                _, body = self._read_json()
                server.delay = float(body["seconds"])
                self._send(200, {"ok": True})
                return
            if path == "/v3/mail/send":
                self._mail_send()
                return
            raw, body = self._read_json()
            if path == "/v3/mail/batch":
                if not self._authorized():
                    return
                batch_id = uuid.uuid4().hex
                server.batches.append(batch_id)
                self._send(201, {"batch_id": batch_id})
            elif path == "/v3/user/scheduled_sends":
                if not self._authorized():
                    return
                if (
                    not isinstance(body, dict)
                    or body.get("status") not in ("pause", "cancel")
                    or not body.get("batch_id")
                ):
                    self._send(
                        400,
                        {
                            "errors": [
                                _error("batch_id and status pause|cancel are required", "status")
                            ]
                        },
                    )
                    return
                server.scheduled_sends[body["batch_id"]] = body["status"]
                self._send(201, body)
            else:
                self._send(404, {"errors": [_error("not found")]})

        def _mail_send(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            fault = server.next_fault()
            entry: dict[str, Any] = {"body": body, "status": None}
            with server._lock:
                if server.log_path is None:
                    server.requests.append(entry)
            if server.delay:
                time.sleep(server.delay)
            if fault and fault["kind"] == "delay":
                time.sleep(float(fault.get("seconds", 1.0)))
                fault = None
            if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                entry["status"] = 401
                self._authorized()
                return
            if length > MAX_BYTES:
                entry["status"] = 413
                self._send(413, {"errors": [_error("The request is larger than 30 MB.")]})
                return
            if fault and fault["kind"] == "429":
                entry["status"] = 429
                reset = int(time.time() + float(fault.get("reset_in", 1)))
                self._send(
                    429,
                    {"errors": [_error("too many requests")]},
                    {
                        "X-RateLimit-Limit": "600",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(reset),
                    },
                )
                return
            if fault and fault["kind"] == "400":
                entry["status"] = 400
                self._send(400, {"errors": fault.get("errors") or [_error("bad request")]})
                return
            if fault and fault["kind"] in ("500", "502", "503"):
                entry["status"] = int(fault["kind"])
                self._send(int(fault["kind"]), {"errors": [_error("internal error")]})
                return
            errors = validate_mail(body)
            if errors:
                entry["status"] = 400
                self._send(400, {"errors": errors})
                return
            sender = body["from"]["email"].lower()
            if sender not in server.verified_senders:
                entry["status"] = 403
                self._send(
                    403,
                    {
                        "errors": [
                            _error(
                                "The from address does not match a verified Sender Identity. Mail "
                                "cannot be sent until this error is resolved. Visit "
                                "https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ "
                                "to see the Sender Identity requirements",
                                "from",
                            )
                        ]
                    },
                )
                return
            if ((body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"):
                entry["status"] = 200
                self._send(200)
                return
            message_id = uuid.uuid4().hex[:22]
            if fault and fault["kind"] == "drop":
                entry["status"] = "dropped"
                if fault.get("record", True):
                    server.record(body, message_id)
                self.close_connection = True
                return
            server.record(body, message_id)
            entry["status"] = 202
            self._send(202, None, {"X-Message-Id": message_id})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake SendGrid v3 API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--log", required=True, help="append accepted mail requests here (JSON lines)"
    )
    parser.add_argument("--key", default="SG.test-key")
    parser.add_argument("--sender", action="append", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument(
        "--log-recipients-only", action="store_true", help="log only each personalization's `to`"
    )
    parser.add_argument(
        "--count-only", action="store_true", help="log only how many recipients, and repeats"
    )
    args = parser.parse_args(argv)
    server = FakeSendGrid(
        api_key=args.key,
        verified_senders=args.sender or ["jens@example.com"],
        log_path=args.log,
        port=args.port,
        delay=args.delay,
        log_recipients_only=args.log_recipients_only,
        count_only=args.count_only,
    )
    print(f"PORT {server.port}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    sys.exit(main())
