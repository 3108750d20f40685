"""What `newsletter init` writes reads well: the sample issue passes `check --strict` once
the settings `check` asks for are filled in, and the welcome step invites replies once."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.scaffold import PLACEHOLDER_ADDRESS, PLACEHOLDER_EMAIL

PROMPT = {"de": "Antworte einfach auf diese E-Mail", "en": "reply to this email"}


def _init(cli, tmp_path: Path, language: str) -> Path:
    root = tmp_path / "brief"
    result = cli(None, "init", str(root), "--name", "Jens' Briefing", "--language", language)
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize("language", ["de", "en"])
def test_sample_issue_passes_check_strict_once_configured(cli, tmp_path, language):
    root = _init(cli, tmp_path, language)
    config = root / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace(PLACEHOLDER_EMAIL, "jens@example.com")
    text = text.replace(PLACEHOLDER_ADDRESS, "Musterstraße 1, 10115 Berlin")
    text = text.replace('# base_url = "', 'base_url = "').replace(
        '# imprint_url = "', 'imprint_url = "'
    )
    config.write_text(text, encoding="utf-8")
    (issue,) = (root / "issues").glob("*.md")
    result = cli(root, "check", str(issue), "--strict")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "error" not in result.output


@pytest.mark.parametrize("language", ["de", "en"])
def test_welcome_step_invites_replies_once(cli, tmp_path, language):
    root = _init(cli, tmp_path, language)
    step = root / "sequences" / "welcome" / "01-willkommen.md"
    result = cli(root, "build", str(step), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "01-willkommen.txt").read_text(encoding="utf-8")
    html = (tmp_path / "out" / "01-willkommen.html").read_text(encoding="utf-8")
    assert text.lower().count(PROMPT[language].lower()) == 1, text
    assert html.lower().count(PROMPT[language].lower()) == 1
