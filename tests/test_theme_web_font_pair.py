"""`[theme] web_font_name` and `web_font_url` go together (docs/writing.md: "both or
neither"): one without the other is a one-line config error naming the missing key, not a
font silently left out of every email."""

from __future__ import annotations

import pytest

from tests.conftest import CONFIG

ISSUE = "---\ntitle: Schrift\nsubject: Eine „schöne“ Schrift\n---\n\nText.\n"


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ('web_font_name = "Inter"', "web_font_url"),
        ('web_font_url = "https://fonts.example.com/inter.css"', "web_font_name"),
    ],
)
def test_one_font_key_without_the_other_is_a_config_error(
    make_project, cli, given, missing
) -> None:  # type: ignore[no-untyped-def]
    root = make_project(config=CONFIG + f"\n[theme]\n{given}\n", issues={"x.md": ISSUE})
    for command in (("check", "x", "--strict"), ("build", "x")):
        result = cli(root, *command)
        assert result.exit_code == 1, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith(f"Error: {root / 'newsletter.toml'}: [theme] ")
        assert f"needs {missing} too" in line and "set both, or neither" in line
    assert not (root / "build").exists()


def test_both_font_keys_put_the_font_in_the_email(make_project, cli) -> None:  # type: ignore[no-untyped-def]
    root = make_project(
        config=CONFIG
        + '\n[theme]\nweb_font_name = "Inter"\nweb_font_url = "https://fonts.example.com/inter.css"\n',
        issues={"x.md": ISSUE},
    )
    result = cli(root, "build", "x")
    assert result.exit_code == 0, result.output
    html = next((root / "build").glob("*.html")).read_text("utf-8")
    assert "https://fonts.example.com/inter.css" in html and "Inter" in html
