"""newsletter.toml loading and validation, through the real CLI where it matters."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.project import Project, parse_config
from tests.conftest import CONFIG


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_contract_config_loads_with_defaults(tmp_path: Path) -> None:
    config = parse_config(write(tmp_path, CONFIG))
    assert config.name == "Jens' Briefing"
    assert config.postal_address == "Musterstraße 1, 10115 Berlin, Germany"
    assert config.language == "de"
    assert config.section("sending")["batch_size"] == 1000
    assert config.theme["brand_color"].startswith("#")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CONFIG.replace('name = "Jens\' Briefing"\n', ""),
            "missing required key `name` in [newsletter]",
        ),
        (CONFIG + '\n[theme]\nlogo_width = "wide"\n', "[theme] logo_width must be a whole number"),
        (CONFIG.replace("[sendgrid]", "[sendgrid]\nfoo = 1"), "unknown key `foo` in [sendgrid]"),
        (CONFIG + '\n[mailer]\nhost = "x"\n', "unknown section [mailer]"),
        (CONFIG.replace('language = "de"', 'language = "fr"'), "language 'fr' is not supported"),
        (CONFIG.replace('region = "global"', 'region = "mars"'), "region 'mars' is not known"),
        ("[newsletter\nname=1", "invalid TOML"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_config(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_database_url_is_relative_to_project_and_env_overrides(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path, CONFIG)
    project = Project.load(tmp_path)
    assert project.database_url == f"sqlite:///{tmp_path.resolve() / 'newsletter.db'}"
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "sqlite:////elsewhere.db")
    assert project.database_url == "sqlite:////elsewhere.db"


def test_project_found_from_a_subfolder(tmp_path: Path) -> None:
    write(tmp_path, CONFIG)
    (tmp_path / "issues").mkdir()
    assert Project.find(start=tmp_path / "issues").root == tmp_path.resolve()


def test_config_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Windows editors often save UTF-8 with a BOM; issue files already accept it.
    path = tmp_path / "newsletter.toml"
    path.write_bytes(b"\xef\xbb\xbf" + CONFIG.encode("utf-8"))
    config = parse_config(path)
    assert config.name == "Jens' Briefing"
    assert config.postal_address == "Musterstraße 1, 10115 Berlin, Germany"
