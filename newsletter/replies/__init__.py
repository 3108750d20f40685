"""Readers' replies (SendGrid Inbound Parse, or a mailbox over IMAP): decode, match to
subscriber and issue, store, and keep as conversations the author answers.

We keep only what the author needs to read a reply: sender, subject, plain text (HTML is
reduced to text, never stored or shown as HTML), received time, and attachment names and
sizes (never their contents). Auto-replies are kept but marked `automatic`; "abmelden"
unsubscribes only a sender that is proven (see `verify`).

Modules, each using the ones before it: `decode` (the form or raw MIME to an `Inbound`),
`verify` (who wrote it), `threads` (conversations: what `replies` lists and shows), `store`
(store once, unsubscribe, forward, file into its thread), `bounces` (delivery reports),
`mailbox` (`replies fetch` over IMAP), `answer` (`replies answer`).
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
from newsletter.replies.threads import UNSUBSCRIBE_LABELS
from newsletter.replies.verify import reply_token, sender_is_authenticated

__all__ = [
    "UNSUBSCRIBE_LABELS",
    "UNSUBSCRIBE_WORDS",
    "Inbound",
    "InboundAttachment",
    "RawInbound",
    "StoredReply",
    "decode",
    "forward",
    "html_to_text",
    "is_auto_reply",
    "is_unsubscribe_request",
    "new_text",
    "normalize_subject",
    "one_line",
    "receive",
    "reply_token",
    "sender_is_authenticated",
    "store",
    "strip_terminal_controls",
]
