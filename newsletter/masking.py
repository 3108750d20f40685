"""Addresses out of text that is kept or logged: webhook event details (a clicked link can
carry `{{ subscriber.email | urlencode }}`), and every log line.

An address is found written plainly (`anna@example.com`) or percent-encoded once or twice
(`anna%40example.com`, `anna%2540example.com`, `j%C3%B6rg%40ex%C3%A4mple.de`), as a link
carries it. `addresses_in` decodes what it finds, so a caller can compare the addresses
with a person's in the store's one form (`store.emails.address_key`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import unquote

#: What stands where an address was.
MASK = "<address>"

# A plain address: no spaces, brackets, quotes or the separators of a URL's query.
_PLAIN = re.compile(r"[^\s<>\"'(),;:/?&=#\[\]]+@[^\s<>\"'(),;:/?&=#\[\]]+")
# A percent-encoded one: unreserved characters or %XX escapes on both sides of %40 / %2540.
_ENCODED = re.compile(
    r"(?:[A-Za-z0-9._~!$*+\-]|%[0-9A-Fa-f]{2})+(?:%40|%2540)(?:[A-Za-z0-9.\-]|%[0-9A-Fa-f]{2})+"
)


def may_hold_address(text: str) -> bool:
    """The cheap test first: most text holds neither `@` nor `%40`."""
    return "@" in text or "%40" in text or "%2540" in text


def mask_addresses(text: str) -> str:
    """The text with each address, plain or percent-encoded, replaced by `<address>`."""
    if not may_hold_address(text):
        return text
    return _ENCODED.sub(MASK, _PLAIN.sub(MASK, text))


def addresses_in(text: str) -> list[str]:
    """The addresses the text holds, decoded (`anna%40example.com` -> `anna@example.com`)."""
    if not may_hold_address(text):
        return []
    found = _PLAIN.findall(text)
    for encoded in _ENCODED.findall(text):
        decoded = encoded
        for _ in range(3):  # %2540 is encoded twice
            decoded = unquote(decoded)
        found.append(decoded)
    return found


def replace_addresses(text: str, wanted: Callable[[str], bool], replacement: str) -> str:
    """The text with every address for which `wanted(decoded_address)` is true replaced."""
    if not may_hold_address(text):
        return text

    def swap(match: re.Match[str]) -> str:
        decoded = match.group(0)
        for _ in range(3):
            decoded = unquote(decoded)
        return replacement if wanted(decoded) else match.group(0)

    return _ENCODED.sub(swap, _PLAIN.sub(swap, text))


class AddressMaskingFilter(logging.Filter):
    """On a log handler: masks addresses in every line it writes (`serve`'s log), so that no
    message, argument or exception text leaves an address in a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if may_hold_address(message):
            record.msg, record.args = mask_addresses(message), None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback's last line is the exception's text: format it here, masked.
            record.exc_text = mask_addresses(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def mask_log_addresses(*loggers: str) -> None:
    """Mask addresses in every line the handlers of the root logger and of `loggers` (ones
    that do not propagate, such as uvicorn's) write: `serve` and its background jobs."""
    for name in ("", *loggers):
        for handler in logging.getLogger(name or None).handlers:
            if not any(isinstance(f, AddressMaskingFilter) for f in handler.filters):
                handler.addFilter(AddressMaskingFilter())
