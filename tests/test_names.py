"""Names are one line of printable text however they come in (issue 15, item 6)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.names import clean_name
from newsletter.store.subscribers import find_subscriber, update_subscriber
from newsletter.web import create_app


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Anna\r\nBcc: x@y.z", "Anna Bcc: x@y.z"),
        ("Jörg\tWeiß", "Jörg Weiß"),
        ("\x00Zoë\x1b[31m", "Zoë [31m"),
        ("Line\u2028Sep\x85x", "Line Sep x"),
        ("Ümit „Ü“ O’Neil", "Ümit „Ü“ O’Neil"),
        ("Anna\xa0Lena", "Anna\xa0Lena"),  # a no-break space is a legitimate character
        (None, None),
    ],
)
def test_clean_name(raw, clean) -> None:
    assert clean_name(raw) == clean


@pytest.mark.slow
def test_the_subscribe_form_stores_a_name_without_cr_lf(project) -> None:
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    client = TestClient(create_app(proj, engine))
    answer = client.post(
        "/subscribe", data={"email": "anna@example.de", "name": "Anna\r\nBcc: x@y.z"}
    )
    assert answer.status_code == 200
    assert find_subscriber(engine, "anna@example.de").name == "Anna Bcc: x@y.z"


@pytest.mark.slow
def test_the_subscribe_form_stores_a_first_name_apart_from_the_name(project) -> None:
    """A form's `first_name` field is what issues greet with (`subscriber.first_name`);
    before, the form had only `name`, and "Hallo {{ subscriber.first_name }}" found nothing."""
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    client = TestClient(create_app(proj, engine))
    answer = client.post(
        "/subscribe",
        data={"email": "kaethe@example.de", "name": "Käthe Strauß", "first_name": "Käthe\r\n"},
    )
    assert answer.status_code == 200
    stored = find_subscriber(engine, "kaethe@example.de")
    assert (stored.first_name, stored.name) == ("Käthe", "Käthe Strauß")


def test_subscribers_add_and_update_clean_names(cli, project) -> None:
    result = cli(
        project, "subscribers", "add", "jens@example.de", "--first-name", "Jens\nBcc: x@y.z",
        "--last-name", "Mül\rler",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    engine = open_engine(Project.load(project).database_url)
    jens = find_subscriber(engine, "jens@example.de")
    assert (jens.first_name, jens.last_name) == ("Jens Bcc: x@y.z", "Mül ler")
    update_subscriber(engine, jens.id, name="Jens\r\nM.")
    assert find_subscriber(engine, "jens@example.de").name == "Jens M."


def test_imported_names_are_cleaned(tmp_path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    source = tmp_path / "x.csv"
    source.write_bytes(
        b"email,first name,last name,name\n"
        b'a@example.de,"Anna\r\nBcc: x@y.z",Wei\x1b\xc3\x9f,"Anna\rW."\n'
        b"b@example.de,\x7f,B,\n"
    )
    result = import_file(engine, source)
    assert (result.new, result.rejected) == (2, 0)
    anna = find_subscriber(engine, "a@example.de")
    assert (anna.first_name, anna.last_name, anna.name) == ("Anna Bcc: x@y.z", "Wei ß", "Anna W.")
    assert find_subscriber(engine, "b@example.de").first_name is None
