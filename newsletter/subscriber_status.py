"""A subscriber's statuses (see CONTRACT.md), apart from the database schema: the config
check (a segment's `status:` term) names them without loading SQLAlchemy."""

from __future__ import annotations

from enum import StrEnum


#: Subscriber statuses (see CONTRACT.md); only `subscribed` people receive an issue.
class SubscriberStatus(StrEnum):
    """A subscriber's status. A str enum: the database keeps the plain values, and
    `SubscriberStatus.SUBSCRIBED == "subscribed"`."""

    SUBSCRIBED = "subscribed"
    UNCONFIRMED = "unconfirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


STATUSES = tuple(s.value for s in SubscriberStatus)

#: Statuses that an import or a form must never turn back into `subscribed` on its own.
STOPPED = ("unsubscribed", "bounced", "complained")
