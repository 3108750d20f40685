"""CSV out as the user's spreadsheet wants it: `--rejects` in the input's delimiter (and
BOM), `export --delimiter` and `--excel` (UTF-8 with BOM and semicolons, for German
Excel), and `import` saying how many new rows came without consent evidence."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@pytest.fixture
def root(make_project, database_url, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    return make_project(config=CONFIG)


def test_rejects_keep_the_inputs_semicolons_and_bom(cli, root, tmp_path):
    source = tmp_path / "liste.csv"
    source.write_text("\ufeffE-Mail;Vorname\nanna@example.de;Anna\nkaputt;Jörg\n", encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    result = cli(root, "subscribers", "import", str(source), "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    raw = rejects.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["E-Mail", "Vorname", "line", "reason"]
    assert rows[1][:3] == ["kaputt", "Jörg", "3"]


def test_rejects_of_a_comma_file_stay_comma(cli, root, tmp_path):
    rejects = tmp_path / "rejects.csv"
    source = FIXTURES / "bad_rows.csv"
    result = cli(root, "subscribers", "import", str(source), "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    header = rejects.read_text(encoding="utf-8").splitlines()[0]
    assert header == "email,first name,last name,line,reason"


def _people(root: Path, url: str) -> None:
    engine = open_engine(url)
    add_subscriber(engine, "jörg@example.de", first_name="Jörg", last_name="Weiß")
    add_subscriber(engine, "anna@example.de", first_name="Anna", last_name="Schmidt, Dr.")


def test_export_excel_is_utf8_bom_and_semicolons_and_reimports(cli, root, tmp_path, database_url):
    _people(root, database_url)
    out = tmp_path / "liste.csv"
    result = cli(root, "subscribers", "export", "--excel", "-o", str(out))
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    header, *lines = text.splitlines()
    assert header.startswith("email;name;first_name;last_name;")
    assert any(line.startswith("jörg@example.de;") and ";Weiß;" in line for line in lines)
    assert '"Schmidt, Dr."' not in text and ";Schmidt, Dr.;" in text  # no quoting needed
    again = cli(root, "subscribers", "import", str(out))
    assert again.exit_code == 0, again.output
    assert "semicolon" in again.output and "new: 0, updated: 0, unchanged: 2" in again.output


@pytest.mark.parametrize(("option", "delimiter"), [(";", ";"), ("tab", "\t"), (",", ",")])
def test_export_delimiter(cli, root, tmp_path, database_url, option, delimiter):
    _people(root, database_url)
    out = tmp_path / "liste.csv"
    result = cli(root, "subscribers", "export", "--delimiter", option, "-o", str(out))
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8")), delimiter=delimiter))
    assert rows[0][:2] == ["email", "name"]
    assert {r[0] for r in rows[1:]} == {"jörg@example.de", "anna@example.de"}


def test_export_excel_with_json_is_bad_usage(cli, root):
    result = cli(root, "subscribers", "export", "--format", "json", "--excel")
    assert result.exit_code == 2
    assert "--excel" in result.output


def test_import_says_how_many_came_without_consent_evidence(cli, root):
    mailchimp = cli(root, "subscribers", "import", str(FIXTURES / "mailchimp_subscribed.csv"))
    assert mailchimp.exit_code == 0, mailchimp.output
    assert "without consent evidence" not in mailchimp.output  # OPTIN_TIME / CONFIRM_TIME
    sheet = cli(root, "subscribers", "import", str(FIXTURES / "excel_de_semicolon.csv"))
    assert sheet.exit_code == 0, sheet.output
    new = int(sheet.output.split("new: ")[1].split(",")[0])
    assert new >= 2
    assert (
        f"{new} new subscribers came without consent evidence (no opt-in time or IP in the "
        "file)" in sheet.output
    )
    assert "--no-consent-evidence" in sheet.output
