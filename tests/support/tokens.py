"""Tokens as the wire carries them, and tokens as links sent before public ids look."""

from __future__ import annotations

import base64
import json
from typing import Any

from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from newsletter import tokens


def carried(token: str) -> tuple[Any, Any]:
    """(subscriber, issue) exactly as the token carries them, signature unchecked: the public
    ids (strings) of a compact token, or the JSON form's values."""
    value = token.rsplit(".", 1)[0]
    if value.startswith("W"):  # the JSON form
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return data[0], data[1]
    parts = {"1": (True, True), "2": (True, False), "3": (False, True), "4": (False, False)}
    has_issue, has_subscriber = parts[value[0]]
    rest, length = value[1:], tokens.PUBLIC_ID_LENGTH
    return (rest[-length:] if has_subscriber else None, rest[:length] if has_issue else None)


def row_id_token(purpose: str, subscriber: int | None, issue: int | None, *, key: str) -> str:
    """A token naming row ids as such, as every link made before m015 does."""
    return URLSafeSerializer(key, salt=purpose).dumps([subscriber, issue])


def row_id_timed_token(purpose: str, subscriber: int, *, key: str) -> str:
    """A confirmation token naming the row id, as links made before m015 do."""
    return URLSafeTimedSerializer(key, salt=purpose).dumps([subscriber, None])
