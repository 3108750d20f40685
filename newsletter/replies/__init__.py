"""Readers' replies from SendGrid Inbound Parse: decode, match to subscriber and issue, store.

We keep only what the author needs to read a reply: sender, subject, plain text (HTML is
reduced to text, never stored or shown as HTML), received time, and attachment names and
sizes (never their contents). Auto-replies are kept but marked `automatic`; "abmelden"
unsubscribes only a sender that is proven (see `verify`).

Modules, each using the ones before it: `decode` (the form to an `Inbound`), `verify` (who
wrote it), `store` (store once, unsubscribe, forward), `listing` (what `replies` shows).
"""

from newsletter.replies.decode import (
    Inbound,
    InboundAttachment,
    RawInbound,
    decode,
    html_to_text,
    is_auto_reply,
    one_line,
    strip_terminal_controls,
)
from newsletter.replies.listing import UNSUBSCRIBE_LABELS, ReplyRow, get_reply, list_replies
from newsletter.replies.store import (
    UNSUBSCRIBE_WORDS,
    StoredReply,
    forward,
    is_unsubscribe_request,
    new_text,
    normalize_subject,
    receive,
    store,
)
from newsletter.replies.verify import reply_token, sender_is_authenticated

__all__ = [
    "UNSUBSCRIBE_LABELS",
    "UNSUBSCRIBE_WORDS",
    "Inbound",
    "InboundAttachment",
    "RawInbound",
    "ReplyRow",
    "StoredReply",
    "decode",
    "forward",
    "get_reply",
    "html_to_text",
    "is_auto_reply",
    "is_unsubscribe_request",
    "list_replies",
    "new_text",
    "normalize_subject",
    "one_line",
    "receive",
    "reply_token",
    "sender_is_authenticated",
    "store",
    "strip_terminal_controls",
]
