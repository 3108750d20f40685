"""`subscribers import`: formats, encodings, statuses, rejects, duplicates, crash safety."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.errors import ImportFileError, StoreError
from newsletter.store import importer as importer_package
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.importer import process as import_process
from newsletter.store.importer.write import Pacer
from newsletter.store.subscribers import (
    BulkWriter,
    add_subscriber,
    count_subscribers,
    find_subscriber,
    iter_subscribers,
    set_status,
)

from .conftest import FIXTURES

IMPORTS = FIXTURES / "imports"


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def everyone(engine) -> dict[str, dict]:
    return {
        s.email: {k: v for k, v in s.to_dict().items() if k != "id"}
        for s in iter_subscribers(engine)
    }


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --- the services' exports --------------------------------------------------------------


@pytest.mark.slow
def test_mailchimp_exports(engine) -> None:
    result = import_file(engine, IMPORTS / "mailchimp_subscribed.csv")
    assert (result.format, result.new, result.rejected) == ("mailchimp", 3, 0)
    jens = find_subscriber(engine, "jens.mueller@example.de")
    assert (jens.first_name, jens.last_name, jens.status) == ("Jens", "Müller", "subscribed")
    assert jens.tags == ("Früh dabei", "Leser")
    assert jens.fields == {"Address": "Musterstraße 1, 10115 Berlin"}  # a merge field
    assert jens.created_at.isoformat() == "2023-02-05T19:28:23+00:00"  # OPTIN_TIME
    assert find_subscriber(engine, "anna.schmidt@example.de").fields["notes"] == "mag „Zitate“"
    assert find_subscriber(engine, "zoë@beispiel.de").last_name == "Ärger"

    unsub = import_file(engine, IMPORTS / "mailchimp_unsubscribed.csv")
    assert (unsub.format, unsub.new, unsub.updated) == ("mailchimp-unsubscribed", 1, 1)
    anna = find_subscriber(engine, "anna.schmidt@example.de")
    assert anna.status == "unsubscribed" and anna.unsubscribe_reason == "SPAM"
    assert anna.unsubscribed_at.isoformat() == "2024-03-01T12:00:00+00:00"
    weg = find_subscriber(engine, "weg@example.de")
    assert weg.status == "unsubscribed" and weg.unsubscribe_reason == "NORMAL"

    cleaned = import_file(engine, IMPORTS / "mailchimp_cleaned.csv")
    assert cleaned.format == "mailchimp-cleaned"
    assert find_subscriber(engine, "kaputt@example.de").status == "bounced"

    # The subscribed export again does not bring Anna back.
    again = import_file(engine, IMPORTS / "mailchimp_subscribed.csv")
    assert (again.new, again.updated, again.unchanged, again.kept_stopped) == (0, 0, 3, 1)
    assert find_subscriber(engine, "anna.schmidt@example.de").status == "unsubscribed"


@pytest.mark.slow
def test_substack_email_disabled_means_unsubscribed(engine) -> None:
    result = import_file(engine, IMPORTS / "substack.csv")
    assert (result.format, result.new) == ("substack", 3)
    assert find_subscriber(engine, "lea@example.de").status == "subscribed"
    assert find_subscriber(engine, "lea@example.de").fields["substack_plan"] == "monthly"
    gone = find_subscriber(engine, "nicht.mehr@example.com")
    assert gone.status == "unsubscribed" and gone.unsubscribed_at is not None
    assert count_subscribers(engine, status="subscribed") == 2


@pytest.mark.slow
def test_buttondown_types_tags_and_metadata(engine) -> None:
    result = import_file(engine, IMPORTS / "buttondown.csv")
    assert (result.format, result.new) == ("buttondown", 3)
    ben = find_subscriber(engine, "ben@example.de")
    assert ben.tags == ("leser", "tech")
    assert ben.fields == {"notes": "kennt Jens", "stadt": "München"}
    assert find_subscriber(engine, "gone@example.de").status == "unsubscribed"
    assert find_subscriber(engine, "neu@example.de").status == "unconfirmed"


@pytest.mark.slow
def test_ghost_labels_and_email_opt_out(engine) -> None:
    result = import_file(engine, IMPORTS / "ghost.csv")
    assert (result.format, result.new) == ("ghost", 2)
    clara = find_subscriber(engine, "clara@example.de")
    assert (clara.name, clara.status, clara.tags) == (
        "Clara Schäfer",
        "subscribed",
        ("Newsletter", "VIP"),
    )
    otto = find_subscriber(engine, "otto@example.de")
    assert otto.status == "unsubscribed"
    assert otto.fields == {"note": "schrieb „danke“"}  # no Stripe ids copied


@pytest.mark.slow
def test_listmonk_attributes_and_blocklist(engine) -> None:
    result = import_file(engine, IMPORTS / "listmonk.csv")
    assert (result.format, result.new) == ("listmonk", 2)
    ida = find_subscriber(engine, "ida@example.de")
    assert ida.fields == {"stadt": "Hamburg", "kunde": True}
    assert ida.name == "Ida Groß"
    assert find_subscriber(engine, "blocked@example.de").status == "unsubscribed"


@pytest.mark.slow
def test_excel_windows_1252_with_semicolons(engine) -> None:
    result = import_file(engine, IMPORTS / "excel_de_semicolon.csv")
    assert (result.format, result.encoding, result.delimiter) == ("generic", "cp1252", ";")
    jürgen = find_subscriber(engine, "jürgen@example.de")
    assert (jürgen.first_name, jürgen.last_name) == ("Jürgen", "Weiß")
    assert jürgen.fields == {"Stadt": "Köln"}


def test_utf8_bom_and_tabs(engine) -> None:
    result = import_file(engine, IMPORTS / "bom_tab.tsv")
    assert (result.encoding, result.delimiter, result.new) == ("utf-8-sig", "\t", 1)
    tab = find_subscriber(engine, "tab@example.de")
    assert (tab.name, tab.tags) == ("Tabea Tab", ("leser", "neu"))


def test_one_windows_1252_line_does_not_garble_the_utf8_rest(engine, tmp_path) -> None:
    """Issue 15.4: decode line by line; only the line that needs it is read as cp1252."""
    source = tmp_path / "mixed.csv"
    source.write_bytes(
        "email,first name,last name\njörg@example.de,Jörg,Groß\n".encode()
        + "zoe@example.de,Zoë,Müller\n".encode("cp1252")
        + "anna@example.de,Anna,Weiß\n".encode()
    )
    result = import_file(engine, source)
    assert (result.new, result.rejected, result.encoding) == (3, 0, "utf-8")
    assert result.fallback_lines == [3]
    assert find_subscriber(engine, "jörg@example.de").first_name == "Jörg"
    assert find_subscriber(engine, "zoe@example.de").last_name == "Müller"
    assert find_subscriber(engine, "anna@example.de").last_name == "Weiß"
    assert count_subscribers(engine) == 3  # no "jÃ¶rg@example.de"


def test_the_cli_names_each_line_read_as_windows_1252(cli, project, tmp_path) -> None:
    source = tmp_path / "mixed.csv"
    source.write_bytes(
        "email,name\njörg@example.de,Jörg\n".encode() + "zoe@example.de,Zoë\n".encode("cp1252")
    )
    result = cli(project, "subscribers", "import", str(source))
    assert result.exit_code == 0, result.output
    assert f"{source}:3: not UTF-8, read as Windows-1252; check its umlauts" in result.output
    assert f"{source}: generic format, utf-8, comma; 2 rows" in result.output


def test_a_bad_byte_at_the_end_of_a_bom_file_rejects_that_row_only(engine, tmp_path) -> None:
    rows = "".join(f"p{i}@example.com,Pä{i}\n" for i in range(40)).encode()
    source = tmp_path / "bom.csv"
    # 0x81 is neither UTF-8 nor Windows-1252; 0xff is Windows-1252 (ÿ).
    source.write_bytes(
        b"\xef\xbb\xbfemail,name\n" + rows + b"bad@example.com,B\x81d\nyv@example.com,Y\xff\n"
    )
    result = import_file(engine, source, chunk_rows=7)
    assert (result.new, result.rejected) == (41, 1)
    assert (result.rejects[0].line, result.rejects[0].email) == (42, "bad@example.com")
    assert "neither UTF-8 nor Windows-1252" in result.rejects[0].reason
    assert result.fallback_lines == [43]
    assert find_subscriber(engine, "yv@example.com").name == "Yÿ"
    assert find_subscriber(engine, "p39@example.com").name == "Pä39"


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True])
def test_a_200kb_field_is_a_rejected_row_and_the_rest_is_imported(engine, tmp_path, parallel):
    if parallel and not import_process.can_fork():
        pytest.skip("needs fork")
    head = "".join(f"p{i}@example.com,P{i}\n" for i in range(10))
    tail = "".join(f"q{i}@example.com,Q{i}\n" for i in range(10))
    source = write(
        tmp_path / "x.csv",
        "email,name\n" + head + 'big@example.com,"' + "x" * 200_000 + '"\n' + tail,
    )
    result = import_file(engine, source, chunk_rows=3, parallel=parallel)
    assert (result.new, result.rejected) == (20, 1)
    assert (result.rejects[0].line, result.rejects[0].email) == (12, "big@example.com")
    assert "longer than" in result.rejects[0].reason
    assert find_subscriber(engine, "q9@example.com") is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "heading", ["email", "E-Mail", "E-Mail-Adresse", "Email Address", "mail", "EMAIL_ADDRESS"]
)
def test_generic_email_headings(engine, tmp_path, heading) -> None:
    source = write(tmp_path / "x.csv", f"Vorname,{heading}\nÜmit,uemit@example.de\n")
    result = import_file(engine, source)
    assert (result.format, result.new) == ("generic", 1)
    assert find_subscriber(engine, "uemit@example.de").first_name == "Ümit"


# --- rows, duplicates, statuses -----------------------------------------------------------


def test_bad_rows_are_rejected_with_line_and_reason(engine, tmp_path) -> None:
    rejects = tmp_path / "rejects.csv"
    result = import_file(engine, IMPORTS / "bad_rows.csv", rejects_path=rejects)
    assert (result.new, result.rejected, result.duplicates) == (2, 3, 1)
    assert [(r.line, r.email) for r in result.rejects] == [
        (3, "kein-at-zeichen.de"),
        (4, ""),
        (7, "jemand@localhost"),
    ]
    assert "must have an @-sign" in result.rejects[0].reason
    assert result.rejects[1].reason == "no email address in this row"
    with rejects.open(encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["email"], r["line"]) for r in written] == [
        ("kein-at-zeichen.de", "3"),
        ("", "4"),
        ("jemand@localhost", "7"),
    ]
    assert all(r["reason"] for r in written)
    # The duplicate's later values fill in and override.
    doppelt = find_subscriber(engine, "doppelt@example.de")
    assert (doppelt.first_name, doppelt.last_name) == ("Erst", "Nochmal")
    assert count_subscribers(engine) == 2


@pytest.mark.slow
def test_a_row_with_too_many_columns_is_rejected(engine, tmp_path) -> None:
    source = write(
        tmp_path / "x.csv", "email,name\na@example.com,Anna\nb@example.com,Müller, Ben\n"
    )
    result = import_file(engine, source)
    assert result.new == 1
    assert (
        result.rejects[0].line == 3 and "3 columns but the header has 2" in result.rejects[0].reason
    )


@pytest.mark.slow
def test_multiline_cells_keep_line_numbers(engine, tmp_path) -> None:
    source = write(
        tmp_path / "x.csv",
        'email,notes\na@example.com,"zwei\nZeilen"\nkaputt,x\n',
    )
    result = import_file(engine, source)
    assert result.rejects[0].line == 4
    assert find_subscriber(engine, "a@example.com").fields == {"notes": "zwei\nZeilen"}


@pytest.mark.slow
def test_an_unclosed_quote_is_rejected_not_swallowing_the_rest(engine, tmp_path) -> None:
    # Without the check the rest of the file became one note of Jörg's, silently.
    source = write(
        tmp_path / "x.csv",
        'email,notes\na@example.com,"zwei\nZeilen"\n'
        'jörg@example.de,"kaputt\nb@example.com,x\nc@example.com,y\n',
    )
    result = import_file(engine, source)
    assert result.new == 1
    assert [(r.line, r.email) for r in result.rejects] == [(4, "jörg@example.de")]
    assert "never closed" in result.rejects[0].reason
    assert "lines 4-6" in result.rejects[0].reason
    assert find_subscriber(engine, "jörg@example.de") is None


@pytest.mark.slow
def test_a_nul_character_past_the_first_block_rejects_its_row(engine, tmp_path) -> None:
    # The first 64 KB are checked for binary files; a NUL further down reached the
    # database (PostgreSQL then refused the whole import).
    rows = "".join(f"leser{i}@example.com,Leser {i}\n" for i in range(5000))
    source = write(tmp_path / "x.csv", f"email,name\n{rows}jörg@example.de,J\x00rg\n")
    result = import_file(engine, source)
    assert result.new == 5000
    assert [(r.line, r.email) for r in result.rejects] == [(5002, "jörg@example.de")]
    assert "NUL" in result.rejects[0].reason
    assert find_subscriber(engine, "jörg@example.de") is None


def test_a_too_long_name_rejects_its_row_only(engine, tmp_path) -> None:
    # PostgreSQL refused the whole import over one name longer than its column.
    source = write(
        tmp_path / "x.csv",
        "email,first_name,name,unsubscribe_reason\n"
        f"a@example.com,{'ä' * 101},,\n"
        f"b@example.com,,{'ö' * 201},\n"
        f"c@example.com,Jörg,,{'x' * 300}\n",
    )
    result = import_file(engine, source)
    assert [(r.line, r.email) for r in result.rejects] == [
        (2, "a@example.com"),
        (3, "b@example.com"),
    ]
    assert "first_name is longer than 100 characters" in result.rejects[0].reason
    assert "name is longer than 200 characters" in result.rejects[1].reason
    assert result.new == 1 and find_subscriber(engine, "c@example.com").first_name == "Jörg"


@pytest.mark.slow
def test_an_unclosed_quote_in_the_header_is_one_line(engine, tmp_path) -> None:
    source = write(tmp_path / "x.csv", '"email,name\na@example.com,Anna\n')
    with pytest.raises(ImportFileError) as caught:
        import_file(engine, source)
    assert "\n" not in str(caught.value)
    assert "quote" in str(caught.value) and "never closed" in str(caught.value)


@pytest.mark.slow
def test_running_the_same_import_again_changes_nothing(engine) -> None:
    for name in ("mailchimp_subscribed.csv", "ghost.csv", "listmonk.csv", "buttondown.csv"):
        import_file(engine, IMPORTS / name, tags=["import"])
    before = everyone(engine)
    with engine.connect() as conn:
        stamps = conn.execute(select(schema.subscribers.c.updated_at)).scalars().all()
    for name in ("mailchimp_subscribed.csv", "ghost.csv", "listmonk.csv", "buttondown.csv"):
        again = import_file(engine, IMPORTS / name, tags=["import"])
        assert (again.new, again.updated) == (0, 0), name
    assert everyone(engine) == before
    with engine.connect() as conn:
        assert conn.execute(select(schema.subscribers.c.updated_at)).scalars().all() == stamps


@pytest.mark.slow
def test_stopped_people_are_never_resubscribed_without_the_flag(engine, tmp_path) -> None:
    add_subscriber(engine, "weg@example.de", status="subscribed")
    person = add_subscriber(engine, "bounce@example.de")
    set_status(engine, person.id, "bounced", reason="550")
    add_subscriber(engine, "spam@example.de", status="complained")
    source = write(
        tmp_path / "x.csv",
        "email,status\nweg@example.de,unsubscribed\nbounce@example.de,subscribed\n"
        "spam@example.de,\nneu@example.de,abgemeldet\n",
    )
    result = import_file(engine, source)
    assert (result.new, result.updated, result.unchanged, result.kept_stopped) == (1, 1, 2, 2)
    statuses = {e: d["status"] for e, d in everyone(engine).items()}
    assert statuses == {
        "weg@example.de": "unsubscribed",
        "bounce@example.de": "bounced",
        "spam@example.de": "complained",
        "neu@example.de": "unsubscribed",
    }
    assert find_subscriber(engine, "bounce@example.de").unsubscribe_reason == "550"

    again = import_file(engine, source, resubscribe=True)
    assert again.updated == 4
    assert {d["status"] for d in everyone(engine).values()} == {"subscribed"}
    assert find_subscriber(engine, "bounce@example.de").unsubscribed_at is None


@pytest.mark.slow
def test_duplicates_across_chunks_are_merged_and_dry_run_agrees(engine, tmp_path, monkeypatch):
    lines = ["email,first name,tags"]
    for i in range(7):
        lines.append(f"p{i}@example.com,P{i},t{i}")
    lines += ["P1@EXAMPLE.com,Paula,extra", "p5@example.com,,more", "p1@example.com,,"]
    source = write(tmp_path / "x.csv", "\n".join(lines) + "\n")
    dry = import_file(engine, source, dry_run=True, chunk_rows=3)
    assert count_subscribers(engine) == 0
    real = import_file(engine, source, chunk_rows=3)
    counts = lambda r: (r.new, r.updated, r.unchanged, r.rejected, r.duplicates)  # noqa: E731
    assert counts(dry) == counts(real) == (7, 0, 0, 0, 3)
    assert count_subscribers(engine) == 7
    p1 = find_subscriber(engine, "p1@example.com")
    assert (p1.first_name, p1.tags) == ("Paula", ("extra", "t1"))
    assert find_subscriber(engine, "p5@example.com").tags == ("more", "t5")


@pytest.mark.slow
def test_dry_run_on_a_full_list_counts_without_changing(engine, tmp_path) -> None:
    add_subscriber(engine, "a@example.com", first_name="A")
    add_subscriber(engine, "b@example.com", first_name="B")
    before = everyone(engine)
    source = write(
        tmp_path / "x.csv", "email,first name\na@example.com,A\nb@example.com,Bea\nc@x.de,C\nbad,\n"
    )
    dry = import_file(engine, source, dry_run=True)
    assert (dry.new, dry.updated, dry.unchanged, dry.rejected) == (1, 1, 1, 1)
    assert everyone(engine) == before


@pytest.mark.slow
def test_map_overrides_the_detected_columns(engine, tmp_path) -> None:
    source = write(tmp_path / "x.csv", "Kontakt;Rufname;Geheim;Anrede\nk@example.de;Kai;x;Herr\n")
    with pytest.raises(ImportFileError, match="no email column"):
        import_file(engine, source)
    result = import_file(
        engine,
        source,
        mapping=[("kontakt", "email"), ("Rufname", "first_name"), ("Geheim", "ignore"),
                 ("Anrede", "salutation")],
    )  # fmt: skip
    assert result.new == 1
    kai = find_subscriber(engine, "k@example.de")
    assert (kai.first_name, kai.fields) == ("Kai", {"salutation": "Herr"})
    with pytest.raises(ImportFileError, match="the file has no column 'Telefon'"):
        import_file(engine, source, mapping=[("Telefon", "phone"), ("kontakt", "email")])


@pytest.mark.slow
def test_extra_tags_and_source(engine, tmp_path) -> None:
    source = write(tmp_path / "x.csv", "email\na@example.com\n")
    import_file(engine, source, tags=["2024", "messe"], source="messe-stand")
    a = find_subscriber(engine, "a@example.com")
    assert (a.tags, a.source) == (("2024", "messe"), "messe-stand")


@pytest.mark.slow
def test_a_tags_cell_in_mailchimps_quoted_form_gives_the_tags_without_quotes(
    engine, tmp_path
) -> None:
    """A file of one's own with Mailchimp's TAGS cell copied in (`"KI","Straßenfoto"`): the
    tags were `"KI"` and `"Straßenfoto"`, quotes and all."""
    source = write(
        tmp_path / "x.csv",
        "email,tags\n"
        'a@example.de,"""KI"",""Straßenfoto"""\n'
        'b@example.de,"""Fotografie"", ""Köln"""\n'
        'c@example.de,"KI, Köln"\n',
    )
    import_file(engine, source)
    assert find_subscriber(engine, "a@example.de").tags == ("KI", "Straßenfoto")
    assert find_subscriber(engine, "b@example.de").tags == ("Fotografie", "Köln")
    assert find_subscriber(engine, "c@example.de").tags == ("KI", "Köln")


@pytest.mark.slow
def test_a_time_before_1900_rejects_the_row_and_the_list_stays_readable(engine, tmp_path):
    """`0202-05-01` (a typo for 2020) was stored as "202-05-01 …", which SQLite's reader
    could not read back: list, show, export and even erasure of that reader crashed."""
    source = write(
        tmp_path / "x.csv",
        "email,created_at\n"
        "tippfehler@example.org,0202-05-01\n"
        "frueh@example.org,0999-06-01T10:00:00Z\n"
        "richtig@example.org,2020-05-01\n",
    )
    result = import_file(engine, source)
    assert (result.new, result.rejected) == (1, 2)
    assert [(r.line, r.email) for r in result.rejects] == [
        (2, "tippfehler@example.org"),
        (3, "frueh@example.org"),
    ]
    assert "'0202-05-01' is before 1900: a typo in the year?" in result.rejects[0].reason
    assert [p.email for p in iter_subscribers(engine)] == ["richtig@example.org"]
    assert find_subscriber(engine, "richtig@example.org").created_at.year == 2020


def test_a_mailchimp_export_re_saved_by_german_excel_keeps_its_opt_in_times(engine, tmp_path):
    """Excel in German writes `05.01.2023 10:11`. Such times were dropped without a word and
    the import wrote its own time in their place: the opt-in time, evidence the law asks
    for, was lost. Now they are read; a time in no form the import knows rejects its row,
    naming it; a zero date is no time."""
    source = tmp_path / "members.csv"
    source.write_bytes(
        (
            "Email Address;First Name;MEMBER_RATING;OPTIN_TIME;OPTIN_IP;CONFIRM_TIME;CONFIRM_IP;"
            "LEID;EUID;TAGS\r\n"
            "jörg@example.de;Jörg;2;05.01.2023 10:11;203.0.113.5;5.1.2023 10:15:30;203.0.113.5;"
            "1;a;\r\n"
            "us@example.de;Ann;2;1/5/2023 10:11 AM;203.0.113.5;;;2;b;\r\n"
            "null@example.de;Null;2;0000-00-00 00:00:00;;;;3;c;\r\n"
        ).encode("cp1252")
    )
    result = import_file(engine, source)
    assert (result.new, result.rejected) == (2, 1)
    [reject] = result.rejects
    assert (reject.line, reject.email) == (3, "us@example.de")
    assert reject.reason.startswith("'1/5/2023 10:11 AM' is not a time this import reads")
    joerg = find_subscriber(engine, "jörg@example.de")
    assert joerg.created_at.isoformat() == "2023-01-05T10:11:00+00:00"
    assert joerg.confirmed_at.isoformat() == "2023-01-05T10:15:30+00:00"


def test_rejects_written_over_the_file_being_imported_are_refused(engine, tmp_path):
    """`--rejects members.csv` for `import members.csv` emptied the list being imported
    (even with --dry-run) before a row was read."""
    source = write(tmp_path / "members.csv", "email\nbad@\nanna@example.de\n")
    for dry_run in (True, False):
        with pytest.raises(ImportFileError, match="is the file being imported"):
            import_file(
                engine, source, rejects_path=tmp_path / "." / "members.csv", dry_run=dry_run
            )
    assert source.read_text("utf-8") == "email\nbad@\nanna@example.de\n"
    assert find_subscriber(engine, "anna@example.de") is None


def test_an_import_may_not_call_itself_the_sign_up_form(engine, tmp_path):
    """`--source form` made imported people count as the form's sign-ups in `stats --list`."""
    source = write(tmp_path / "x.csv", "email\nanna@example.de\n")
    with pytest.raises(StoreError, match='--source "form" is kept for sign-ups through the form'):
        import_file(engine, source, source="Form")
    assert find_subscriber(engine, "anna@example.de") is None


# --- custom field names ------------------------------------------------------------------


@pytest.mark.slow
def test_custom_field_names_are_one_field_whatever_their_case(engine, tmp_path) -> None:
    """Issue 12.12: `Stadt` and `stadt` are one field; the list's spelling wins."""
    add_subscriber(engine, "anna@example.de", fields={"Stadt": "Köln", "kunde": "ja"})
    source = write(
        tmp_path / "x.csv",
        "email,stadt,KUNDE\nanna@example.de,Berlin,nein\nben@example.de,Hamburg,ja\n",
    )
    result = import_file(engine, source)
    assert (result.new, result.updated) == (1, 1)
    assert find_subscriber(engine, "anna@example.de").fields == {"Stadt": "Berlin", "kunde": "nein"}
    assert find_subscriber(engine, "ben@example.de").fields == {"Stadt": "Hamburg", "kunde": "ja"}


@pytest.mark.slow
def test_the_first_spelling_in_a_file_wins_for_a_new_field(engine, tmp_path) -> None:
    source = write(
        tmp_path / "x.csv",
        "email,Lieblingsfarbe,attributes,uuid\n"
        'a@example.de,blau,"{""LIEBLINGSFARBE"": ""grün"", ""Stadt"": ""Ulm""}",1\n'
        'b@example.de,rot,"{""stadt"": ""Bonn""}",2\n',
    )
    assert import_file(engine, source).format == "listmonk"
    assert find_subscriber(engine, "a@example.de").fields == {
        "Lieblingsfarbe": "grün",
        "Stadt": "Ulm",
    }
    assert find_subscriber(engine, "b@example.de").fields == {
        "Lieblingsfarbe": "rot",
        "Stadt": "Bonn",
    }
    # A later file with another spelling keeps the list's.
    again = write(
        tmp_path / "y.csv", "email,LIEBLINGSFARBE\nb@example.de,gelb\nc@example.de,lila\n"
    )
    import_file(engine, again)
    assert find_subscriber(engine, "b@example.de").fields["Lieblingsfarbe"] == "gelb"
    assert find_subscriber(engine, "c@example.de").fields == {"Lieblingsfarbe": "lila"}


# --- files that cannot be read ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\x00\x01\x02binary\x00", "is a binary file"),
        (b"PK\x03\x04rest-of-a-workbook", "unzip it or save the sheet as CSV"),
        ("email\na@example.com\n".encode("utf-16"), "is UTF-16 text"),
        (b"name,city\nAnna,Berlin\n", "no email column among name, city"),
        (b"\x81\x8d\x8f\x90\x9d\n", "neither UTF-8 nor Windows-1252"),
    ],
)
def test_unreadable_files_are_one_line_errors(engine, tmp_path, content, message) -> None:
    source = tmp_path / "list.csv"
    source.write_bytes(content)
    with pytest.raises(ImportFileError, match=message) as info:
        import_file(engine, source)
    assert str(info.value).startswith(f"{source}:")  # the file, and the line if any
    assert "\n" not in str(info.value)
    assert count_subscribers(engine) == 0


def test_missing_file(engine, tmp_path) -> None:
    with pytest.raises(ImportFileError, match=r"missing\.csv: no such file; check the path"):
        import_file(engine, tmp_path / "missing.csv")


# --- crash safety ----------------------------------------------------------------------


def test_a_crash_leaves_whole_chunks_and_a_rerun_finishes(engine, tmp_path, monkeypatch):
    source = write(
        tmp_path / "x.csv",
        "email,tags\n" + "".join(f"p{i}@example.com,t{i % 2}\n" for i in range(10)),
    )
    real_insert = BulkWriter.insert
    calls = {"n": 0}

    def crashing_insert(self, *args):
        calls["n"] += 1
        real_insert(self, *args)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second chunk's rows went in

    monkeypatch.setattr(BulkWriter, "insert", crashing_insert)
    with pytest.raises(KeyboardInterrupt):
        import_file(engine, source, chunk_rows=4)
    monkeypatch.setattr(BulkWriter, "insert", real_insert)

    # The first chunk is there, whole; the second was rolled back.
    assert [s.email for s in iter_subscribers(engine)] == [f"p{i}@example.com" for i in range(4)]
    with engine.connect() as conn:
        tagged = conn.execute(select(func.count()).select_from(schema.subscriber_tags)).scalar()
    assert tagged == 4
    result = import_file(engine, source, chunk_rows=4)
    assert (result.new, result.unchanged) == (6, 4)
    assert count_subscribers(engine) == 10
    assert count_subscribers(engine, tags=["t1"]) == 5


# --- through the CLI -------------------------------------------------------------------


def test_cli_import_reports_counts_and_rejects(cli, project, tmp_path) -> None:
    source = tmp_path / "bad_rows.csv"
    shutil.copy(IMPORTS / "bad_rows.csv", source)
    rejects = tmp_path / "rejects.csv"
    dry = cli(project, "subscribers", "import", str(source), "--dry-run")
    assert dry.exit_code == 0
    assert "dry run, nothing changed: new: 2, updated: 0, unchanged: 0, rejected: 3" in dry.output
    result = cli(project, "subscribers", "import", str(source), "--rejects", str(rejects))
    assert result.exit_code == 0
    assert (
        f"{source}:3: rejected: 'kein-at-zeichen.de' is not a valid email address" in result.output
    )
    assert f"{source}:4: rejected: no email address in this row" in result.output
    assert f"{source}: generic format, utf-8, comma; 6 rows" in result.output
    assert "new: 2, updated: 0, unchanged: 0, rejected: 3, duplicates merged: 1" in result.output
    assert "Importing" not in result.output  # no progress bar off a terminal
    assert rejects.exists()
    again = cli(project, "subscribers", "import", str(source), "--tag", "neu")
    assert "new: 0, updated: 2, unchanged: 0" in again.output
    assert cli(project, "subscribers", "count", "--tag", "neu").output == "2\n"


def test_cli_import_errors_are_one_line(cli, project, tmp_path) -> None:
    missing = cli(project, "subscribers", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1
    assert missing.output == f"Error: {tmp_path / 'nope.csv'}: no such file; check the path\n"
    bad_map = cli(project, "subscribers", "import", str(IMPORTS / "ghost.csv"), "--map", "x")
    assert bad_map.exit_code == 2 and "COLUMN=FIELD" in bad_map.output


def test_progress_callback_reaches_the_file_size(engine) -> None:
    seen: list[tuple[int, int]] = []
    import_file(
        engine, IMPORTS / "mailchimp_subscribed.csv", progress=lambda a, b: seen.append((a, b))
    )
    size = (IMPORTS / "mailchimp_subscribed.csv").stat().st_size
    assert seen[-1] == (size, size)


# --- the forked reader process (used for big files) ------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not import_process.can_fork(), reason="needs fork")
def test_reader_process_gives_the_same_result(engine, tmp_path) -> None:
    lines = ["email;Vorname;tags"]
    for i in range(30):
        lines.append(f"p{i}@example.com;Pä{i};t{i % 3}")
    lines += ["kaputt;X;", "P3@example.com;Paula;neu", "anna@example.com;Anna;"]
    source = write(tmp_path / "x.csv", "\n".join(lines) + "\n", encoding="cp1252")
    rejects_serial, rejects_parallel = tmp_path / "r1.csv", tmp_path / "r2.csv"
    other = open_engine(f"sqlite:///{tmp_path / 'serial.db'}")
    serial = import_file(other, source, chunk_rows=7, parallel=False, rejects_path=rejects_serial)
    seen: list[int] = []
    parallel = import_file(
        engine,
        source,
        chunk_rows=7,
        parallel=True,
        rejects_path=rejects_parallel,
        progress=lambda done, total: seen.append(done),
    )
    fields = ("rows", "new", "updated", "unchanged", "rejected", "duplicates", "format", "encoding")
    assert [getattr(parallel, f) for f in fields] == [getattr(serial, f) for f in fields]
    assert [getattr(parallel, f) for f in fields[:6]] == [33, 31, 0, 0, 1, 1]
    assert parallel.rejects == serial.rejects and parallel.rejects[0].line == 32
    assert rejects_parallel.read_text(encoding="utf-8") == rejects_serial.read_text(
        encoding="utf-8"
    )
    assert everyone(engine) == everyone(other) or _same_but_times(everyone(engine), everyone(other))
    assert find_subscriber(engine, "p3@example.com").tags == ("neu", "t0")
    assert seen[-1] == source.stat().st_size


def _same_but_times(a: dict, b: dict) -> bool:
    strip = lambda d: {  # noqa: E731
        k: {f: v for f, v in row.items() if not f.endswith("_at")} for k, row in d.items()
    }
    return strip(a) == strip(b)


@pytest.mark.slow
@pytest.mark.skipif(not import_process.can_fork(), reason="needs fork")
def test_reader_process_errors_reach_the_caller(engine, tmp_path) -> None:
    # A runaway quoted cell (over csv's field limit) in the last chunk: a rejected row.
    source = write(
        tmp_path / "x.csv", 'email,name\na@example.com,A\nb@example.com,"' + "x" * 200_000 + "\n"
    )
    result = import_file(engine, source, parallel=True, chunk_rows=1)
    assert (result.new, result.rejected, result.rejects[0].line) == (1, 1, 3)
    assert [s.email for s in iter_subscribers(engine)] == ["a@example.com"]


@pytest.mark.slow
def test_an_import_that_must_stop_says_what_it_wrote_and_where(engine, tmp_path, monkeypatch):
    # With the reader process (a fresh interpreter, out of monkeypatch's reach), a real
    # failure there: tests/test_import_reader_process.py.
    parallel = False
    source = write(
        tmp_path / "x.csv", "email\n" + "".join(f"p{i}@example.com\n" for i in range(10))
    )
    calls = {"n": 0}
    real_write = BulkWriter.insert

    def failing_insert(self, *args):  # the disk fails under the third chunk
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "Input/output error")
        real_write(self, *args)

    monkeypatch.setattr(BulkWriter, "insert", failing_insert)
    with pytest.raises(StoreError) as caught:
        import_file(engine, source, chunk_rows=4, parallel=parallel)
    message = str(caught.value)
    assert "Input/output error" in message
    assert "8 rows written (lines 2-9)" in message and "stopped at line 10" in message
    assert "run the same import again" in message
    assert count_subscribers(engine) == 8


@pytest.mark.slow
def test_a_subscriber_added_by_someone_else_mid_import_is_merged(engine, tmp_path, monkeypatch):
    """The subscribe form may add an address while the import writes a chunk: it waits
    for the chunk's transaction (which holds the write lock from its lookups on), and
    either way there is one person, never a failed import."""
    import threading

    source = write(tmp_path / "x.csv", "email,first name\na@example.com,A\nb@example.com,Bea\n")
    real_allocate = BulkWriter.allocate_ids
    outcome: list[str] = []

    def sign_up() -> None:
        try:
            add_subscriber(engine, "B@example.com", status="unconfirmed", source="form")
            outcome.append("added")
        except StoreError as exc:
            outcome.append(str(exc))

    form = threading.Thread(target=sign_up)

    def allocate_then_race(self, n):
        ids = real_allocate(self, n)
        if not form.is_alive() and not outcome:  # another program signs b@ up right now
            form.start()
            form.join(0.5)  # it has to wait for the import's transaction
            assert form.is_alive()
        return ids

    monkeypatch.setattr(BulkWriter, "allocate_ids", allocate_then_race)
    result = import_file(engine, source)
    form.join(30)
    assert (result.new, result.updated, result.rejected) == (2, 0, 0)
    assert len(outcome) == 1 and "already on the list" in outcome[0]
    b = find_subscriber(engine, "b@example.com")
    assert (b.email, b.first_name, b.status) == ("b@example.com", "Bea", "subscribed")
    assert count_subscribers(engine) == 2


@pytest.mark.slow
def test_a_first_import_merges_what_others_added_before_its_lookups(engine, tmp_path, monkeypatch):
    """A first import skips lookups; a sign-up in the file committed just before a chunk
    takes the write lock makes that chunk clash, and the retry (with lookups) merges it."""
    source = write(
        tmp_path / "x.csv",
        "email,first name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(8)),
    )
    real_lock = BulkWriter.lock
    signed_up: list[str] = []

    def sign_up_then_lock(self):
        if len(signed_up) < 4:  # before each of the first four transactions
            address = f"p{len(signed_up) * 2 + 1}@example.com"
            add_subscriber(engine, address, status="unconfirmed", source="form")
            signed_up.append(address)
        real_lock(self)

    monkeypatch.setattr(BulkWriter, "lock", sign_up_then_lock)
    # A transaction per chunk (quick chunks share one: each sign-up must come between).
    monkeypatch.setattr(Pacer, "TARGET", 0.0)
    result = import_file(engine, source, chunk_rows=2)
    assert (result.new, result.updated, result.rejected) == (4, 4, 0)
    assert count_subscribers(engine) == 8
    assert [find_subscriber(engine, a).first_name for a in signed_up] == ["P1", "P3", "P5", "P7"]
    assert find_subscriber(engine, "p1@example.com").source == "form"


# --- layering ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_importer_modules_use_each_others_public_names_only() -> None:
    """One package, no private imports between its modules and no cycle (issue 9, item 7)."""
    import ast

    package = Path(import_process.__file__).parent
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for module in sorted(package.glob("*.py")):
        name = module.stem
        graph[name] = set()
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "newsletter.store.importer."
            ):
                target = node.module.rsplit(".", 1)[1]
                graph[name].add(target)
                private += [
                    f"{name} imports {target}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert private == []
    assert set(graph) >= {"read", "decide", "write", "formats", "run"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in graph.get(start, ())
        )

    assert [name for name in graph if reaches(name, name, set())] == []
    # Callers outside the package use its public face.
    assert {"import_file", "ImportResult", "Reject"} <= set(importer_package.__all__)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Brevo (German account): EMAIL_BLACKLISTED had become a custom field, and the next
        # send mailed her.
        (
            "EMAIL;VORNAME;NACHNAME;EMAIL_BLACKLISTED\n"
            "aenne@example.de;Änne;Fuß;true\nbert@example.de;Bert;Groß;false\n",
            {"aenne@example.de": "unsubscribed", "bert@example.de": "subscribed"},
        ),
        # Kit (ConvertKit): "cancelled" and "cold" rejected the rows ("unknown status").
        (
            "first_name,email_address,state\n"
            "Jörg,joerg@example.de,cancelled\nKalt,kalt@example.de,cold\nAktiv,a@example.de,active\n",
            {
                "joerg@example.de": "unsubscribed",
                "kalt@example.de": "subscribed",
                "a@example.de": "subscribed",
            },
        ),
    ],
    ids=["brevo", "kit"],
)
def test_other_services_opt_outs_and_states(engine, tmp_path, text, expected):
    result = import_file(engine, write(tmp_path / "x.csv", text))
    assert result.rejected == 0, result.rejects
    assert {p.email: p.status for p in iter_subscribers(engine)} == expected
    assert all(not p.fields for p in iter_subscribers(engine))


def test_resubscribe_leaves_a_consent_record_of_the_renewed_consent(engine, tmp_path):
    """`--resubscribe` (for people who gave their consent again) made an unsubscribed person
    subscribed, and their consent history showed only the old record."""
    from newsletter.store import consent

    person = add_subscriber(engine, "weg@example.de")
    set_status(engine, person.id, "unsubscribed")
    source = write(tmp_path / "wieder-da.csv", "email\nweg@example.de\n")
    import_file(engine, source, resubscribe=True)
    assert find_subscriber(engine, "weg@example.de").status == "subscribed"
    with engine.connect() as conn:
        records = consent.records_for(conn, person.id)
    [renewed] = [r for r in records if r.kind == "import"]
    assert renewed.details["file"] == "wieder-da.csv"
    assert renewed.details["resubscribed_from"] == "unsubscribed"
    assert not renewed.proves_consent  # (the author's word, not a proof)
