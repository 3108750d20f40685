"""A project with issues sent through the real CLI to the fake SendGrid (so they are
published), and `newsletter serve` on it as a real process on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main
from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import TEST_SECRET
from tests.sendgrid_server import FakeSendGrid
from tests.support.archive import serving  # noqa: F401  (what the archive tests use)

KEY = "SG.support-archive-key"


def run_cli(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)


def publish(root: Path, config: str, issues: dict[str, str]) -> Path:
    """Write `config` and `issues` (file name: text) into `root` and send each, in order,
    to one reader through the fake SendGrid."""
    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(config, encoding="utf-8")
    for name, text in issues.items():
        (root / "issues" / name).write_text(text, encoding="utf-8")
    with (
        FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg,
        pytest.MonkeyPatch.context() as mp,
    ):
        for name in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_PROJECT"):
            mp.delenv(name, raising=False)
        mp.setenv("SENDGRID_API_KEY", KEY)
        mp.setenv("SENDGRID_API_HOST", sg.url)
        mp.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
        mp.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        engine = open_engine(Project.load(root).database_url)
        add_subscriber(engine, "leserin@example.org", first_name="Jörg")
        for name in issues:
            result = run_cli(root, "send", name, "--yes")
            assert result.exit_code == 0, result.output
        dispose_all()
    return root
