"""Edges of an import's one "imported, no evidence" record (`import_runs`): made only for an
import that added someone without evidence, and pointed at by exactly those people. SQLite
and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.store import schema
from newsletter.store.consent import records_for
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file

MAILCHIMP_HEADER = (
    '"Email Address","First Name","Last Name",MEMBER_RATING,OPTIN_TIME,OPTIN_IP,'
    "CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,"
    "LAST_CHANGED,LEID,EUID,NOTES,TAGS\n"
)


def mailchimp_row(email: str, optin_time: str = "") -> str:
    return f'{email},Jörg,Weiß,2,"{optin_time}",,,,,,,,,DE,BE,"2024-01-10 10:00:00",1,ab,,\n'


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def _runs_and_pointers(engine) -> tuple[int, dict[str, int | None]]:
    with engine.connect() as conn:
        runs = conn.execute(select(func.count()).select_from(schema.import_runs)).scalar_one()
        pointers = dict(
            conn.execute(
                select(schema.subscribers.c.email, schema.subscribers.c.import_run_id)
            ).all()
        )
    return runs, pointers


def test_an_export_where_everyone_carries_their_opt_in_makes_no_no_evidence_record(
    engine, tmp_path: Path
) -> None:
    path = tmp_path / "subscribed_members_export.csv"
    rows = [mailchimp_row(f"m{i}@example.de", "2023-02-05 19:28:23") for i in range(5)]
    path.write_text(MAILCHIMP_HEADER + "".join(rows), "utf-8")
    result = import_file(engine, path, chunk_rows=2, parallel=False)
    assert (result.new, result.without_evidence) == (5, 0)
    runs, pointers = _runs_and_pointers(engine)
    assert runs == 0  # no import without evidence happened
    assert set(pointers.values()) == {None}
    with engine.connect() as conn:
        for email in ("m0@example.de", "m4@example.de"):
            sid = conn.execute(
                select(schema.subscribers.c.id).where(schema.subscribers.c.email == email)
            ).scalar_one()
            [record] = records_for(conn, sid)
            assert record.proves_consent and record.details["optin_time"].startswith("2023-02-05")


def test_in_a_mixed_export_only_the_rows_without_evidence_point_at_the_run(
    engine, tmp_path: Path
) -> None:
    path = tmp_path / "subscribed_members_export.csv"
    rows = [
        mailchimp_row("mit1@example.de", "2023-02-05 19:28:23"),
        mailchimp_row("mit2@example.de", "2023-02-05 19:28:23"),
        mailchimp_row("ohne@example.de"),
    ]
    path.write_text(MAILCHIMP_HEADER + "".join(rows), "utf-8")
    # One chunk of evidence only, then one with the row without: the run comes with it.
    result = import_file(engine, path, chunk_rows=2, parallel=False)
    assert (result.new, result.without_evidence) == (3, 1)
    runs, pointers = _runs_and_pointers(engine)
    assert runs == 1
    assert pointers["mit1@example.de"] is None and pointers["mit2@example.de"] is None
    assert pointers["ohne@example.de"] is not None
