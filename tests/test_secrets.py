"""Secrets that don't bite (issue 26, item 2): a real send refuses to start without
NEWSLETTER_SECRET_KEY (its links would be dead), the outbox keeps the development key with a
warning, and `newsletter secrets init` writes ~/.config/newsletter/env (0600, never
overwritten), which every command reads for variables the environment does not set."""

from __future__ import annotations

import email
import re
import stat
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter import tokens
from newsletter.project import Project
from newsletter.secrets_file import GENERATED, load_secrets, read_secrets
from newsletter.store.engine import open_engine
from newsletter.store.schema import issues, sends
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.sendgrid_server import FakeSendGrid
from tests.smtp_server import FakeSmtp

ISSUE = EXAMPLE_ISSUE.stem


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh XDG_CONFIG_HOME; the generated variables start unset and are restored after
    (a command run in-process writes what it reads from the file into os.environ)."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name, _ in GENERATED:
        monkeypatch.setenv(name, "placeholder")  # so that monkeypatch restores it
        monkeypatch.delenv(name)
    monkeypatch.setattr(tokens, "_warned", False)  # the warning comes once per process
    return home


@pytest.fixture
def smtp(monkeypatch):
    with FakeSmtp() as server:
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        yield server


def smtp_project(make_project, smtp: FakeSmtp) -> Path:
    config = CONFIG + (
        f'\n[sending]\ntransport = "smtp"\n\n[smtp]\nhost = "127.0.0.1"\n'
        f'port = {smtp.port}\nsecurity = "none"\n'
    )
    root = make_project(config=config)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    add_subscriber(open_engine(Project.load(root).database_url), "leser@example.org")
    return root


def unsubscribe_token(message) -> str:
    parsed = email.message_from_bytes(message.data, policy=policy.default)
    match = re.search(r"/unsubscribe/([^>\s]+)>", str(parsed["List-Unsubscribe"]))
    assert match, parsed["List-Unsubscribe"]
    return match.group(1)


def test_real_smtp_send_refuses_to_start_without_the_key(cli, make_project, smtp, config_home):
    root = smtp_project(make_project, smtp)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: NEWSLETTER_SECRET_KEY is not set (a real send through smtp needs it: links "
        "signed without it are dead); run `newsletter secrets init` to make one in "
        "~/.config/newsletter/env, or set it to a long random string"
    )
    assert "Recipients" not in result.output  # refused before the summary and the question
    assert smtp.messages == []
    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sends)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(issues)).scalar_one() == 0


def test_test_copy_through_smtp_refuses_without_the_key(cli, make_project, smtp, config_home):
    root = smtp_project(make_project, smtp)
    result = cli(root, "send", ISSUE, "--test", "jens@example.com")
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET_KEY is not set" in result.output
    assert "newsletter secrets init" in result.output
    assert smtp.messages == []  # before: sent, with links signed by the development key


def test_sendgrid_send_refuses_without_the_key(cli, project, monkeypatch, config_home):
    add_subscriber(open_engine(Project.load(project).database_url), "leser@example.org")
    with FakeSendGrid() as sendgrid:
        monkeypatch.setenv("SENDGRID_API_KEY", sendgrid.api_key)
        monkeypatch.setenv("SENDGRID_API_HOST", sendgrid.url)
        result = cli(project, "send", ISSUE, "--yes")
        test_copy = cli(project, "send", ISSUE, "--test", "jens@example.com")
        dry_run = cli(project, "send", ISSUE, "--dry-run", "--yes")
    assert result.exit_code == 1
    assert "a real send through sendgrid needs it" in result.output
    assert test_copy.exit_code == 1
    assert sendgrid.messages == []
    # A dry run reaches nobody (SendGrid's sandbox): the development key is fine, and said.
    assert dry_run.exit_code == 0, dry_run.output
    assert "development key" in dry_run.stderr


def test_outbox_keeps_the_development_key_marked_as_such(cli, project, config_home, tmp_path):
    add_subscriber(open_engine(Project.load(project).database_url), "leser@example.org")
    result = cli(project, "send", ISSUE, "--outbox", str(tmp_path / "out"), "--yes")
    assert result.exit_code == 0, result.output
    assert "Warning: NEWSLETTER_SECRET_KEY is not set; links are signed with a development key" in (
        result.stderr
    )
    [written] = list((tmp_path / "out").glob("*.eml"))
    parsed = email.message_from_bytes(written.read_bytes(), policy=policy.default)
    assert parsed["X-Newsletter-Development-Key"] == (
        "links are signed with a development key and will not work on a real server"
    )


def test_secrets_init_writes_a_private_file_once(cli, config_home):
    first = cli(None, "secrets", "init")
    assert first.exit_code == 0, first.output
    path = config_home / "newsletter" / "env"
    assert str(path) in first.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = read_secrets(path)
    assert len(values["NEWSLETTER_SECRET_KEY"]) >= 40
    assert len(values["NEWSLETTER_INBOUND_SECRET"]) >= 40
    assert values["NEWSLETTER_SECRET_KEY"] not in first.output  # never printed
    text = path.read_text("utf-8")
    assert "# SENDGRID_API_KEY=" in text and "# NEWSLETTER_SMTP_PASSWORD=" in text

    again = cli(None, "secrets", "init")
    assert again.exit_code == 1
    assert again.output == (
        f"Error: {path}: exists already and is never overwritten; edit it, or delete it first "
        "to make new keys (links signed with the old key stop working)\n"
    )
    assert path.read_text("utf-8") == text


def test_secrets_init_keeps_the_key_already_in_use(cli, config_home, monkeypatch):
    # A new key in the file would void every unsubscribe link already sent once the
    # server reads the file; so the key the environment sets is the one written.
    in_use = "hunt-secret with 'quotes' and $dollar"
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", in_use)
    result = cli(None, "secrets", "init")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "with NEWSLETTER_SECRET_KEY as your environment sets it and a new " in said
    assert "NEWSLETTER_INBOUND_SECRET." in said
    assert in_use not in result.output and "hunt-secret" not in result.output
    values = read_secrets(config_home / "newsletter" / "env")
    assert values["NEWSLETTER_SECRET_KEY"] == in_use
    assert len(values["NEWSLETTER_INBOUND_SECRET"]) >= 40  # none was set: a new one

    # The server reading the file alone (no environment) checks the links signed before.
    token = tokens.make_token(tokens.UNSUBSCRIBE, 7, key=in_use)
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    environ = {"XDG_CONFIG_HOME": str(config_home)}
    load_secrets(environ)
    assert tokens.read_token(
        tokens.UNSUBSCRIBE, token, key=environ["NEWSLETTER_SECRET_KEY"]
    ).subscriber


def test_secrets_file_honours_home_without_xdg(tmp_path, monkeypatch):
    from newsletter.secrets_file import secrets_path

    assert secrets_path({"HOME": str(tmp_path)}) == tmp_path / ".config" / "newsletter" / "env"
    assert secrets_path({"HOME": "/x", "XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "newsletter" / "env"
    )


def test_environment_wins_over_the_file(tmp_path):
    path = tmp_path / "newsletter" / "env"
    path.parent.mkdir()
    path.write_text(
        "# comment\nexport NEWSLETTER_SECRET_KEY='from file'\nSENDGRID_API_KEY=SG.file\n"
        "NEWSLETTER_INBOUND_SECRET=\n",
        "utf-8",
    )
    environ = {"XDG_CONFIG_HOME": str(tmp_path), "SENDGRID_API_KEY": "SG.env"}
    assert load_secrets(environ) == ["NEWSLETTER_SECRET_KEY"]
    assert environ["NEWSLETTER_SECRET_KEY"] == "from file"
    assert environ["SENDGRID_API_KEY"] == "SG.env"
    assert "NEWSLETTER_INBOUND_SECRET" not in environ  # an empty value sets nothing


def test_a_send_signs_with_the_files_key_unless_the_environment_has_one(
    cli, make_project, smtp, config_home, monkeypatch
):
    root = smtp_project(make_project, smtp)
    assert cli(None, "secrets", "init").exit_code == 0
    file_key = read_secrets(config_home / "newsletter" / "env")["NEWSLETTER_SECRET_KEY"]

    sent = cli(root, "send", ISSUE, "--yes")
    assert sent.exit_code == 0, sent.output
    [message] = smtp.messages
    assert b"X-Newsletter-Development-Key" not in message.data  # a real key: no mark
    token = unsubscribe_token(message)
    # Signed with the file's key (another key would raise), naming the reader by public id.
    assert tokens.read_token(tokens.UNSUBSCRIBE, token, key=file_key).subscriber

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "the-environment-wins-0123456789")
    copy = cli(root, "send", ISSUE, "--test", "jens@example.com")
    assert copy.exit_code == 0, copy.output
    token = unsubscribe_token(smtp.messages[-1])
    tokens.read_token(tokens.UNSUBSCRIBE, token, key="the-environment-wins-0123456789")
    with pytest.raises(tokens.TokenError):
        tokens.read_token(tokens.UNSUBSCRIBE, token, key=file_key)


def test_a_broken_secrets_file_is_one_line_naming_the_line(cli, project, config_home):
    path = config_home / "newsletter" / "env"
    path.parent.mkdir(parents=True)
    path.write_text("NEWSLETTER_SECRET_KEY=abc\nthis is not an assignment\n", "utf-8")
    path.chmod(0o600)
    result = cli(project, "build", ISSUE)
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}:2: not NAME=value; fix or delete this line\n")


def test_a_secrets_file_others_can_read_is_warned_about(cli, project, config_home):
    path = config_home / "newsletter" / "env"
    path.parent.mkdir(parents=True)
    path.write_text("NEWSLETTER_SECRET_KEY=abc-from-file\n", "utf-8")
    path.chmod(0o644)
    result = cli(project, "build", ISSUE)
    assert result.exit_code == 0, result.output
    assert f"Warning: {path} can be read by others; chmod 600 it" in result.stderr
    assert "abc-from-file" not in result.output


def test_init_says_how_to_keep_the_keys(cli, tmp_path, config_home):
    result = cli(None, "init", str(tmp_path / "letter"), "--language", "de")
    assert result.exit_code == 0, result.output
    assert "newsletter secrets init" in result.output
    assert str(config_home / "newsletter" / "env") in result.output
