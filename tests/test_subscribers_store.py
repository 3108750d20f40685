"""The subscriber API others build on, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

from newsletter.errors import StoreError
from newsletter.privacy import forget_person
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import (
    add_subscriber,
    add_tags,
    count_subscribers,
    find_subscriber,
    forget_subscriber,
    get_subscriber,
    iter_subscribers,
    remove_tags,
    set_status,
)


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def test_add_then_find_whatever_the_case(engine) -> None:
    added = add_subscriber(
        engine,
        "Jörg.Müller@Example.DE",
        first_name="Jörg",
        last_name="Müller",
        tags=["leser", "vip", "leser"],
        fields={"stadt": "Köln", "zitat": "„Hallo“ – ‚du‘ …"},
    )
    assert added.email == "Jörg.Müller@example.de"  # domain lower-cased, local part kept
    assert added.status == "subscribed"
    assert added.tags == ("leser", "vip")
    assert added.confirmed_at is not None and added.confirmed_at.tzinfo is not None
    found = find_subscriber(engine, "jörg.müller@EXAMPLE.de")
    assert found == added
    assert found.fields["zitat"] == "„Hallo“ – ‚du‘ …"
    assert get_subscriber(engine, added.id) == added
    assert find_subscriber(engine, "someone.else@example.de") is None
    assert find_subscriber(engine, "not an address") is None


def test_template_context_has_the_render_keys(engine) -> None:
    subscriber = add_subscriber(engine, "anna@example.com", first_name="Anna", fields={"a": "1"})
    context = subscriber.template_context()
    assert context == {
        "id": subscriber.id,
        "email": "anna@example.com",
        "name": None,
        "first_name": "Anna",
        "last_name": None,
        "fields": {"a": "1"},
    }


def test_adding_an_existing_address_is_an_error_naming_it(engine) -> None:
    add_subscriber(engine, "anna@example.com")
    with pytest.raises(StoreError, match=r"ANNA@example\.com is already on the list"):
        add_subscriber(engine, "ANNA@Example.com")
    assert count_subscribers(engine) == 1


@pytest.mark.parametrize("bad", ["", "anna", "anna@", "anna@localhost", "a b@example.com"])
def test_invalid_addresses_are_refused_with_the_reason(engine, bad: str) -> None:
    with pytest.raises(StoreError, match="email address"):
        add_subscriber(engine, bad)
    assert count_subscribers(engine) == 0


def test_idn_domain_is_stored_in_unicode_and_found_by_punycode(engine) -> None:
    added = add_subscriber(engine, "info@MÜLLER.de")
    assert added.email == "info@müller.de"
    assert find_subscriber(engine, "info@xn--mller-kva.de") == added


def test_unknown_status_is_refused(engine) -> None:
    with pytest.raises(StoreError, match="unknown status 'active'"):
        add_subscriber(engine, "anna@example.com", status="active")


def test_set_status_sets_the_times_and_reason(engine) -> None:
    subscriber = add_subscriber(engine, "anna@example.com", status="unconfirmed", source="form")
    assert subscriber.confirmed_at is None and subscriber.source == "form"
    set_status(engine, subscriber.id, "subscribed")
    confirmed = get_subscriber(engine, subscriber.id)
    assert confirmed.status == "subscribed" and confirmed.confirmed_at is not None

    set_status(engine, subscriber.id, "unsubscribed", reason="zu viele Mails")
    gone = get_subscriber(engine, subscriber.id)
    assert gone.status == "unsubscribed"
    assert gone.unsubscribe_reason == "zu viele Mails"
    assert gone.unsubscribed_at is not None
    # A repeated unsubscribe (a webhook delivered twice) keeps the first time.
    set_status(engine, subscriber.id, "unsubscribed", reason="again")
    assert get_subscriber(engine, subscriber.id).unsubscribed_at == gone.unsubscribed_at

    set_status(engine, subscriber.id, "subscribed")
    back = get_subscriber(engine, subscriber.id)
    assert back.unsubscribed_at is None and back.unsubscribe_reason is None
    assert back.confirmed_at == confirmed.confirmed_at  # first confirmation kept


def test_set_status_inside_a_callers_transaction(engine) -> None:
    subscriber = add_subscriber(engine, "anna@example.com")
    with engine.connect() as conn:
        set_status(conn, subscriber.id, "bounced", reason="550 no such user")
        conn.rollback()
    assert get_subscriber(engine, subscriber.id).status == "subscribed"
    with engine.begin() as conn:
        set_status(conn, subscriber.id, "bounced", reason="550 no such user")
    assert get_subscriber(engine, subscriber.id).status == "bounced"


@pytest.mark.slow
def test_iter_and_count_filter_by_status_and_any_tag(engine) -> None:
    for i in range(25):
        tags = ["a"] if i % 3 == 0 else ["b"] if i % 3 == 1 else []
        status = "unsubscribed" if i % 5 == 0 else "subscribed"
        add_subscriber(engine, f"reader{i:02d}@example.com", tags=tags, status=status)
    everyone = list(iter_subscribers(engine, page_size=4))
    assert [s.email for s in everyone] == [f"reader{i:02d}@example.com" for i in range(25)]
    assert [s.id for s in everyone] == sorted(s.id for s in everyone)

    a_or_b = [s.email for s in iter_subscribers(engine, tags=["a", "b"], page_size=3)]
    assert a_or_b == [f"reader{i:02d}@example.com" for i in range(25) if i % 3 != 2]
    assert count_subscribers(engine, tags=["a", "b"]) == len(a_or_b)

    sub_a = [s.email for s in iter_subscribers(engine, status="subscribed", tags=["a"])]
    expected = [f"reader{i:02d}@example.com" for i in range(25) if i % 3 == 0 and i % 5 != 0]
    assert sub_a == expected
    assert count_subscribers(engine, status="subscribed", tags=["a"]) == len(expected)
    assert count_subscribers(engine, status="unsubscribed") == 5
    assert count_subscribers(engine) == 25

    resumed = [s.email for s in iter_subscribers(engine, after_id=everyone[19].id)]
    assert resumed == [s.email for s in everyone[20:]]


def test_tag_and_untag(engine) -> None:
    add_subscriber(engine, "anna@example.com", tags=["a"])
    assert add_tags(engine, "ANNA@example.com", ["b", "a", " c "]).tags == ("a", "b", "c")
    assert remove_tags(engine, "anna@example.com", ["a", "zzz"]).tags == ("b", "c")
    with pytest.raises(StoreError, match="nobody@example.com is not on the list"):
        add_tags(engine, "nobody@example.com", ["x"])


def test_forget_erases_every_row_about_the_person(engine) -> None:
    anna = add_subscriber(engine, "anna@example.com", tags=["a"])
    ben = add_subscriber(engine, "ben@example.com", tags=["a"])
    now = datetime.now(UTC)
    with engine.begin() as conn:
        issue_id = conn.execute(
            insert(schema.issues).values(
                slug="x", title="X", subject="X", language="de", created_at=now
            )
        ).inserted_primary_key[0]
        send_id = conn.execute(
            insert(schema.sends).values(
                issue_id=issue_id, status="done", transport="outbox", started_at=now
            )
        ).inserted_primary_key[0]
        for person in (anna, ben):
            conn.execute(
                insert(schema.deliveries).values(
                    issue_id=issue_id,
                    subscriber_id=person.id,
                    send_id=send_id,
                    state="accepted",
                    updated_at=now,
                )
            )
            conn.execute(
                insert(schema.events).values(
                    sg_event_id=f"ev-{person.id}",
                    event="open",
                    subscriber_id=person.id,
                    issue_id=issue_id,
                    occurred_at=now,
                    received_at=now,
                )
            )
            conn.execute(
                insert(schema.replies).values(
                    subscriber_id=person.id,
                    issue_id=issue_id,
                    from_email=person.email,
                    received_at=now,
                )
            )
        # A reply matched only by address (sent from before they subscribed).
        conn.execute(
            insert(schema.replies).values(
                subscriber_id=None, from_email="Anna@Example.com", received_at=now
            )
        )

    with engine.begin() as conn:
        assert forget_person(conn, "ANNA@example.com") is True
    assert find_subscriber(engine, "anna@example.com") is None
    with engine.connect() as conn:
        for table in (schema.subscriber_tags, schema.deliveries, schema.events):
            rows = conn.execute(select(table.c.subscriber_id)).scalars().all()
            assert rows == [ben.id], table.name
        replies = conn.execute(select(schema.replies.c.from_email)).scalars().all()
        assert replies == ["ben@example.com"]
        assert conn.execute(select(func.count()).select_from(schema.issues)).scalar() == 1
    assert forget_subscriber(engine, "anna@example.com") is False
    with engine.begin() as conn:
        assert forget_person(conn, "anna@example.com") is False


@pytest.mark.slow
def test_too_long_names_are_refused_the_same_on_every_database(engine) -> None:
    # PostgreSQL enforces the column lengths, SQLite does not: refuse before either sees it.
    with pytest.raises(StoreError, match="name is longer than 200 characters"):
        add_subscriber(engine, "a@example.com", name="ä" * 201)
    with pytest.raises(StoreError, match="first_name is longer than 100 characters"):
        add_subscriber(engine, "a@example.com", first_name="ß" * 101)
    assert count_subscribers(engine) == 0
    added = add_subscriber(engine, "a@example.com", name="ä" * 200, last_name="ö" * 100)
    assert added.name == "ä" * 200
    from newsletter.store.subscribers import update_subscriber

    with pytest.raises(StoreError, match="last_name is longer than 100 characters"):
        update_subscriber(engine, added.id, last_name="x" * 101)


def test_a_long_unsubscribe_reason_is_cut_to_fit(engine) -> None:
    added = add_subscriber(engine, "a@example.com")
    reason = "550 5.1.1 „Postfach unbekannt“ – " + "x" * 300
    set_status(engine, added.id, "bounced", reason=reason)
    assert get_subscriber(engine, added.id).unsubscribe_reason == reason[:200]
