"""The rejects file, fixed in the same spreadsheet and imported again (docs/subscribers.md):
its `line` and `reason` columns are the import's notes, not custom fields of the readers.
Before, every re-imported reader got a field `line` and a field `reason`."""

from __future__ import annotations

import csv

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber

SHEET = (
    "\ufeffE-Mail;Vorname;Status;Stadt\n"
    "anna@example.de;Anna;abonniert;Köln\n"
    "jörg@example.de;Jörg;vielleicht;München\n"
    "kein-at-zeichen;Zoë;abonniert;Bad Tölz\n"
)


def test_a_fixed_rejects_file_imports_without_line_and_reason(cli, make_project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = make_project()
    sheet = tmp_path / "leser.csv"
    sheet.write_text(SHEET, encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    first = cli(root, "subscribers", "import", str(sheet), "--rejects", str(rejects))
    assert first.exit_code == 0, first.output

    with rejects.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert rows[0] == ["E-Mail", "Vorname", "Status", "Stadt", "line", "reason"]
    assert [row[0] for row in rows[1:]] == ["jörg@example.de", "kein-at-zeichen"]
    rows[1][2] = "abonniert"  # fixed in the spreadsheet
    rows[2][0] = "zoe@example.de"
    with rejects.open("w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle, delimiter=";").writerows(rows)

    again = cli(root, "subscribers", "import", str(rejects))
    assert again.exit_code == 0, again.output
    engine = open_engine(Project.load(root).database_url)
    for email, city in (("jörg@example.de", "München"), ("zoe@example.de", "Bad Tölz")):
        person = find_subscriber(engine, email)
        assert person is not None and person.status == "subscribed", email
        assert person.fields == {"Stadt": city}, person.fields
    shown = cli(root, "subscribers", "show", "zoe@example.de").output
    assert "Bad Tölz" in shown
    assert "field line" not in shown and "field reason" not in shown
