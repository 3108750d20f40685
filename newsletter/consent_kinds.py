"""The kinds of consent record (`store.consent` writes them), without SQLAlchemy: the
import's reader process checks an export's records against them."""

SIGNUP = "signup"  # the form was submitted (unconfirmed yet, unless single opt-in)
CONFIRMATION = "confirmation"  # the confirmation button was pressed
ADDED = "added"  # `subscribers add` by the author
IMPORT = "import"  # `subscribers import`
#: The "subscribe again" button of the page a signed unsubscribe link leads to was pressed:
#: the token proves the address (only mail to it carried the link), the press the wish.
RESUBSCRIBE = "resubscribe"
#: Every kind (an export's consent records are checked against them on import).
KINDS = (SIGNUP, CONFIRMATION, ADDED, IMPORT, RESUBSCRIBE)
