"""SendGrid v3 Mail Send request bodies, as plain dicts.

We build dicts rather than the `sendgrid.helpers.mail` classes: they are faster for
1000-personalization batches and avoid the helpers' quirks (add_personalization reverses order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from newsletter.store.schema import CUSTOM_ARG_ISSUE, CUSTOM_ARG_SEND, CUSTOM_ARG_SUBSCRIBER

#: SendGrid's limits (see shared/reference/sendgrid-and-email.md).
MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10000
MAX_CUSTOM_ARGS_BYTES = 10000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255

ONE_CLICK = "List-Unsubscribe=One-Click"


def message_base(
    *,
    from_email: str,
    from_name: str,
    reply_to: str,
    subject: str,
    text: str,
    html: str,
    categories: list[str],
    asm_group_id: int | None = None,
    sandbox: bool = False,
    send_at: int | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """Everything of a request except its personalizations; shared by every batch of a send."""
    unique: list[str] = []
    for category in categories:
        category = category[:MAX_CATEGORY_LENGTH]
        if category and category not in unique:
            unique.append(category)
    body: dict[str, Any] = {
        "from": {"email": from_email, "name": from_name},
        "reply_to": {"email": reply_to},
        "subject": subject,
        # SendGrid wants text/plain first.
        "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
        "categories": unique[:MAX_CATEGORIES],
    }
    if asm_group_id is not None:
        body["asm"] = {"group_id": asm_group_id}
    if sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    if send_at is not None:
        body["send_at"] = send_at
    if batch_id is not None:
        body["batch_id"] = batch_id
    return body


def personalization(
    *,
    email: str,
    name: str | None,
    substitutions: Mapping[str, str],
    unsubscribe_url: str,
    issue_id: int | None,
    subscriber_id: int | None,
    send_id: int | None,
) -> dict[str, Any]:
    """One recipient: address, their substitutions, RFC 8058 headers and the ids for webhooks."""
    to: dict[str, str] = {"email": email}
    if name:
        to["name"] = name
    args: dict[str, str] = {}
    if issue_id is not None:
        args[CUSTOM_ARG_ISSUE] = str(issue_id)
    if subscriber_id is not None:
        args[CUSTOM_ARG_SUBSCRIBER] = str(subscriber_id)
    if send_id is not None:
        args[CUSTOM_ARG_SEND] = str(send_id)
    p: dict[str, Any] = {
        "to": [to],
        "substitutions": dict(substitutions),
        "headers": {
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": ONE_CLICK,
        },
    }
    if args:
        p["custom_args"] = args
    return p


def _size(value: Mapping[str, str]) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _surely_small(values: Mapping[str, str], limit: int) -> bool:
    # JSON-escaped UTF-8 is at most 6 bytes a character (+6 per pair for quotes and ": ,"):
    # below that bound the exact (slower) size does not matter.
    chars = sum(len(k) + len(v) + 1 for k, v in values.items())
    return 6 * chars + 2 < limit


def personalization_problem(p: Mapping[str, Any]) -> str | None:
    """Why SendGrid would refuse this personalization (too-large fields), or None."""
    subs = p.get("substitutions") or {}
    if not _surely_small(subs, MAX_SUBSTITUTION_BYTES) and _size(subs) >= MAX_SUBSTITUTION_BYTES:
        return (
            f"the personal values for {p['to'][0]['email']} exceed SendGrid's "
            f"{MAX_SUBSTITUTION_BYTES}-byte substitution limit; shorten that subscriber's fields"
        )
    args = p.get("custom_args") or {}
    if not _surely_small(args, MAX_CUSTOM_ARGS_BYTES) and _size(args) >= MAX_CUSTOM_ARGS_BYTES:
        return f"custom_args for {p['to'][0]['email']} exceed {MAX_CUSTOM_ARGS_BYTES} bytes"
    return None


def request_body(base: Mapping[str, Any], personalizations: list[dict[str, Any]]) -> dict[str, Any]:
    if not 1 <= len(personalizations) <= MAX_PERSONALIZATIONS:
        raise ValueError(f"a request holds 1..{MAX_PERSONALIZATIONS} personalizations")
    return {**base, "personalizations": personalizations}


def apply_substitutions(value: str, substitutions: Mapping[str, str]) -> str:
    """Replace each key by its value in one pass, as SendGrid does when it sends."""
    if not substitutions:
        return value
    keys = sorted(substitutions, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    return pattern.sub(lambda m: substitutions[m.group(0)], value)
