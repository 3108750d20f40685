"""People's names as they are stored: one line of printable text.

A name goes into email headers (`To: "Anna" <anna@...>`, SendGrid's `to.name`), so a CR
or LF in it (`Anna\r\nBcc: x@y.z` from the subscribe form) could add headers or break
a send. Every way in (the form, `subscribers add`, import) cleans names with `clean_name`.
"""

from __future__ import annotations

import re

# C0 and C1 control characters (CR, LF, tab, NUL, ESC...), DEL, and Unicode's line and
# paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")


def clean_name(value: str | None) -> str | None:
    """`value` with each run of control characters turned into one space, trimmed;
    None stays None. `"Anna\\r\\nBcc: x@y.z"` -> `"Anna Bcc: x@y.z"`."""
    if value is None or value.isprintable():  # the usual case, checked in C
        return value
    cleaned = _CONTROL.sub(" ", value)
    if cleaned != value:
        cleaned = _SPACES.sub(" ", cleaned).strip()
    return cleaned
