"""A newcomer's walk through the README: what the commands print must read right."""

from __future__ import annotations

from tests.conftest import EXAMPLE_ISSUE


def test_counts_of_one_are_singular(project, cli, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("email,first_name\nanna.schmidt@example.com,Anna\n", encoding="utf-8")
    imported = cli(project, "subscribers", "import", str(one))
    assert imported.exit_code == 0, imported.output
    assert f"{one}: generic format, utf-8, comma; 1 row\n" in imported.output

    exported = cli(project, "subscribers", "export", "-o", str(tmp_path / "out.csv"))
    assert f"exported 1 subscriber to {tmp_path / 'out.csv'}" in exported.output

    # No terminal to confirm on: the refusal counts the one recipient.
    send = cli(project, "send", EXAMPLE_ISSUE.stem)
    assert send.exit_code == 1
    assert "add --yes to send to 1 recipient\n" in send.output

    two = tmp_path / "two.csv"
    two.write_text("email\na@example.com\nb@example.com\n", encoding="utf-8")
    assert "comma; 2 rows\n" in cli(project, "subscribers", "import", str(two)).output
