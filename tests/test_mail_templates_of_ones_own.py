"""A project's own confirmation mail template (templates/web/confirm_email.*) with a name it
does not have was found only when a reader signed up: they were stored unconfirmed and
the form answered 500. `check` now renders the mails a reader is sent on their own and names
the file and line, and `serve` says so when it starts."""

from __future__ import annotations

from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO, TEST_SECRET
from tests.support.serve_processes import start_up_messages

BROKEN = "Hallo {{ person }},\n\nbitte bestätige: {{ confirm_link }}\n"


def own_confirm_mail(root, text: str = BROKEN) -> None:
    folder = root / "templates" / "web"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "confirm_email.txt").write_text(text, "utf-8")


def test_check_names_an_undefined_name_in_ones_own_confirmation_mail(make_project, cli):
    root = make_project(CONFIG, issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    own_confirm_mail(root)
    result = cli(root, "check", EXAMPLE_ISSUE.name)
    assert result.exit_code == 1
    assert (
        "templates/web/confirm_email.txt:3: error: template error: 'confirm_link' is undefined; "
        "fix the template" in result.output
    ), result.output

    own_confirm_mail(root, BROKEN.replace("confirm_link", "confirm_url"))
    fixed = cli(root, "check", EXAMPLE_ISSUE.name)
    assert "confirm_email" not in fixed.output, fixed.output


def test_a_syntax_error_in_ones_own_mail_is_reported_once(make_project, cli):
    root = make_project(CONFIG, issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    own_confirm_mail(root, "Hallo {{ person }\n")
    result = cli(root, "check", EXAMPLE_ISSUE.name)
    assert result.exit_code == 1
    assert result.output.count("confirm_email.txt") == 1, result.output


def test_serve_warns_about_ones_own_broken_confirmation_mail(make_project, tmp_path):
    root = make_project(CONFIG)
    own_confirm_mail(root)
    stderr = start_up_messages(root, tmp_path / "serve.db", TEST_SECRET, REPO)
    # (it starts: unsubscribes must keep working)
    assert (
        "templates/web/confirm_email.txt:3: template error: 'confirm_link' is undefined; fix the "
        "template; until then readers do not get that mail." in stderr
    ), stderr
