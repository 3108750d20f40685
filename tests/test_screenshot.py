"""`newsletter screenshot`: desktop and phone PNGs of the email, taken in real chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.preview import browser as browser_module
from newsletter.preview.screenshot import DESKTOP, PHONE
from tests.browser import png_size, require_chromium
from tests.conftest import EXAMPLE_ISSUE


@pytest.fixture
def has_chromium() -> None:
    """Skips (or, on CI, fails) these tests without chromium; the command starts its own."""
    require_chromium()


@pytest.mark.slow
@pytest.mark.browser
def test_screenshot_writes_desktop_and_phone_pngs(
    has_chromium, project: Path, cli, tmp_path
) -> None:
    out = tmp_path / "shots"
    result = cli(project, "screenshot", EXAMPLE_ISSUE.name, "-o", str(out), "--offline")
    assert result.exit_code == 0, result.output
    desktop, phone = (Path(line) for line in result.output.splitlines())
    assert desktop == out / "meta-ki-creator-desktop.png"
    assert phone == out / "meta-ki-creator-phone.png"
    desktop_size, phone_size = png_size(desktop), png_size(phone)
    assert desktop_size[0] == DESKTOP.width
    assert phone_size[0] == PHONE.width
    # Full page: the long example issue is much taller than one screen, more so on a phone.
    assert desktop_size[1] > DESKTOP.height
    assert phone_size[1] > desktop_size[1]


@pytest.mark.browser
def test_screenshot_of_a_broken_issue_is_a_one_line_error(
    has_chromium, make_project, cli, tmp_path
) -> None:
    root = make_project(issues={"kaputt.md": "---\ntitle: [\n---\nText\n"})
    out = tmp_path / "shots"
    result = cli(root, "screenshot", "kaputt", "-o", str(out))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "kaputt.md:" in result.output and "YAML" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_missing_chromium_says_how_to_install_it(project: Path, cli, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("NEWSLETTER_CHROMIUM", raising=False)
    monkeypatch.setattr(browser_module, "DEFAULT_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = cli(project, "screenshot", EXAMPLE_ISSUE.name, "-o", str(tmp_path / "shots"))
    assert result.exit_code == 1
    assert "apt-get install chromium" in result.output
    assert "NEWSLETTER_CHROMIUM" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_wrong_newsletter_chromium_is_named(project: Path, cli, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NEWSLETTER_CHROMIUM", str(tmp_path / "chrome-gibt-es-nicht"))
    result = cli(project, "screenshot", EXAMPLE_ISSUE.name, "-o", str(tmp_path / "shots"))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: NEWSLETTER_CHROMIUM={tmp_path / 'chrome-gibt-es-nicht'}: no such program; "
        "point it at a Chromium or Chrome binary\n"
    )


def test_an_unusable_output_folder_is_a_one_line_error(project: Path, cli, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = cli(project, "screenshot", EXAMPLE_ISSUE.name, "-o", str(blocker / "shots"))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {blocker / 'shots'}: cannot write")
    assert "-o DIR" in result.output
    assert len(result.output.strip().splitlines()) == 1
