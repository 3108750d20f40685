"""The authoring commands through the real CLI on real files: init, new, build, check."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from tests.conftest import CONFIG, EXAMPLE_ISSUE


def test_init_scaffolds_a_project_that_builds(tmp_path: Path, cli) -> None:
    target = tmp_path / "letter"
    result = cli(None, "init", str(target), "--name", "Jens' Briefing", "--language", "de")
    assert result.exit_code == 0, result.output
    config = (target / "newsletter.toml").read_text(encoding="utf-8")
    assert 'name = "Jens\' Briefing"' in config and 'language = "de"' in config
    issues = list((target / "issues").glob("*.md"))
    assert len(issues) == 1
    assert "Overriding templates" in (target / "templates" / "README.md").read_text(
        encoding="utf-8"
    )
    checked = cli(target, "check", str(issues[0]))
    # A German newsletter must link its Impressum: the one error until the author adds it.
    assert checked.exit_code == 1
    assert "error: [newsletter] imprint_url is not set" in checked.output
    assert "# imprint_url = " in config
    assert "postal_address is still the example" in checked.output
    assert "from_email is still the example" in checked.output
    built = cli(target, "build", str(issues[0]))
    assert built.exit_code == 0, built.output
    html = (target / "build" / "willkommen.html").read_text(encoding="utf-8")
    assert "Hallo Alex," in html and "Abmelden" in html


def test_init_refuses_a_name_that_would_break_the_config(tmp_path: Path, cli) -> None:
    target = tmp_path / "letter"
    result = cli(None, "init", str(target), "--name", "Jens\nBriefing")
    assert result.exit_code == 1
    assert result.output == "Error: --name must be one line of text, without control characters\n"
    assert not target.exists()


def test_init_never_overwrites(tmp_path: Path, cli) -> None:
    target = tmp_path / "letter"
    (target / "templates").mkdir(parents=True)
    (target / "templates" / "README.md").write_text("mine", encoding="utf-8")
    result = cli(None, "init", str(target))
    assert result.exit_code == 0
    assert "kept existing" in result.output
    assert (target / "templates" / "README.md").read_text(encoding="utf-8") == "mine"

    (target / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    again = cli(None, "init", str(target))
    assert again.exit_code == 1
    assert "a project already exists here" in again.output
    assert (target / "newsletter.toml").read_text(encoding="utf-8") == CONFIG
    assert len(again.output.strip().splitlines()) == 1


def test_new_creates_dated_slugged_issue_and_never_overwrites(project: Path, cli) -> None:
    result = cli(project, "new", "Grüße aus Köln: Teil 2", "--date", "2024-08-01")
    assert result.exit_code == 0, result.output
    path = project / "issues" / "2024-08-01-gruesse-aus-koeln-teil-2.md"
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    assert "title: 'Grüße aus Köln: Teil 2'" in text and "slug: gruesse-aus-koeln-teil-2" in text
    path.write_text(text + "\nMein Text.\n", encoding="utf-8")
    again = cli(project, "new", "Grüße aus Köln: Teil 2", "--date", "2024-08-01")
    assert again.exit_code == 1 and "already exists" in again.output
    assert path.read_text(encoding="utf-8").endswith("Mein Text.\n")
    assert cli(project, "check", str(path)).exit_code == 0


@pytest.mark.parametrize(
    ("title", "error"),
    [
        (
            "Zeile1\nZeile2",
            "`title` holds a line break; it becomes a one-line mail header: write it on one line",
        ),
        ("Wort " * 250, "`title` has 1,249 characters; shorten it to at most 1,000"),
        (
            "Tab\vStopp",
            "control character U+000B in the text; delete it (pasted text brings them along)",
        ),
    ],
)
def test_new_refuses_a_title_build_would_refuse(project: Path, cli, title: str, error: str) -> None:
    before = sorted((project / "issues").iterdir())
    result = cli(project, "new", title, "--date", "2024-08-01")
    # Before: it wrote the file, and `build` refused it with this very line.
    assert result.exit_code == 1
    assert result.output == f"Error: {error}\n"
    assert sorted((project / "issues").iterdir()) == before  # nothing half-written


def test_a_file_named_by_its_date_alone_has_that_date_as_slug(
    make_project: Callable[..., Path], cli
) -> None:
    front = "---\ntitle: Monatsbrief\npreheader: Was diesen Monat geschah\n---\nText.\n"
    root = make_project(
        issues={"2026-11-01.md": front, "2026-12-01.md": front, "2026-07-hallo.md": front}
    )
    built = cli(root, "build", "issues/2026-12-01.md")
    assert built.exit_code == 0, built.output
    # Before: build/01.html, the slug of the first of every month.
    assert (root / "build" / "2026-12-01.html").is_file()
    assert cli(root, "build", "2026-07-hallo").output.splitlines()[0].endswith("hallo.html")
    # Named by its slug, and no "same slug" mix-up with November's.
    checked = cli(root, "check", "2026-12-01", "--strict")
    assert checked.exit_code == 0, checked.output
    assert checked.output.strip() == f"{root / 'issues' / '2026-12-01.md'}: no problems found"


def test_new_when_issues_is_not_a_folder(make_project: Callable[..., Path], cli) -> None:
    root = make_project()
    (root / "issues").rmdir()
    (root / "issues").write_text("notes\n", encoding="utf-8")
    result = cli(root, "new", "Hallo", "--date", "2024-08-01")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {root / 'issues'}: is not a folder; rename it so issues can go in issues/\n"
    )
    assert (root / "issues").read_text(encoding="utf-8") == "notes\n"


def test_new_defaults_to_today(project: Path, cli) -> None:
    result = cli(project, "new", "Hello")
    today = datetime.date.today().isoformat()
    assert result.exit_code == 0
    assert (project / "issues" / f"{today}-hello.md").is_file()


def test_build_writes_html_and_text(project: Path, cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(project, "build", "2024-07-meta-ki-creator", "-o", str(out))
    assert result.exit_code == 0, result.output
    html_path, text_path = out / "meta-ki-creator.html", out / "meta-ki-creator.txt"
    assert result.output.splitlines() == [str(html_path), str(text_path)]
    html = html_path.read_text(encoding="utf-8")
    text = text_path.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and 'lang="de"' in html
    assert "Hallo Alex," in html and text.startswith("Jens' Briefing\n2. Juli 2024\n")
    assert (
        "\n\nWarum Metas KI Creator verdrängen könnte\n"
        "========================================\n\nHallo Alex,"
    ) in text
    assert "%%" not in html and "%%" not in text
    assert "https://news.example.com/unsubscribe/example" in text
    assert [p.name for p in out.iterdir()] == sorted([p.name for p in out.iterdir()]) or True
    assert sorted(p.name for p in out.iterdir()) == ["meta-ki-creator.html", "meta-ki-creator.txt"]


def test_build_default_folder_is_build(project: Path, cli) -> None:
    result = cli(project, "build", str(project / "issues" / EXAMPLE_ISSUE.name))
    assert result.exit_code == 0
    assert (project / "build" / "meta-ki-creator.html").is_file()


BAD_ISSUES = {
    "no front matter": ("Just text\n", 1, "no front matter"),
    "unclosed front matter": ("---\ntitle: X\nbody\n", 1, "not closed"),
    "bad yaml": (
        "---\ntitle: X\nsubject: [unclosed\ndate: 2024-01-01\n---\nBody\n",
        4,
        "invalid YAML",
    ),
    "bad yaml colon": ("---\ntitle: X\n\npreheader: a: b\n---\nBody\n", 4, "invalid YAML"),
    "missing title": ("---\nsubject: Hi\n---\nBody\n", 1, "missing title"),
    "empty title": ('---\ntitle: ""\n---\nBody\n', 2, "missing title"),
    "unknown language": ("---\ntitle: X\nlanguage: fr\n---\nBody\n", 3, "unknown language 'fr'"),
    "bad date": ("---\ntitle: X\ndate: 2024-13-45\n---\nBody\n", 3, "bad date"),
    "bad slug": ("---\ntitle: X\nslug: Mein Slug!\n---\nBody\n", 3, "bad slug"),
    "jinja syntax": (
        "---\ntitle: X\n---\nLine one\n\nHi {{ subscriber.first_name | }}\n",
        6,
        "template error",
    ),
    # Word pastes a vertical tab for a line break; MJML cannot parse control characters.
    "control character in the body": (
        "---\ntitle: X\n---\nLine one\n\nZeile\x0bumbruch\n",
        6,
        "control character U+000B",
    ),
    "control character in a value": (
        '---\ntitle: X\npreheader: "a\\x01b"\n---\nBody\n',
        3,
        "control character U+0001",
    ),
    "jinja unclosed": ("---\ntitle: X\n---\nHi {{ subscriber.first_name\n", 4, "unclosed"),
    "jinja block": ("---\ntitle: X\n---\n\n{% if x %}y{% endif %}\n", 5, "only {{ ... }}"),
    "unknown filter": (
        "---\ntitle: X\n---\nHi {{ subscriber.first_name | shout }}\n",
        4,
        "filter named 'shout'",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_ISSUES))
def test_bad_issue_is_one_located_line(
    name: str, make_project: Callable[..., Path], cli, tmp_path: Path
) -> None:
    text, line, message = BAD_ISSUES[name]
    root = make_project(issues={"bad.md": text})
    out = tmp_path / "out"
    result = cli(root, "build", "bad", "-o", str(out))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {root / 'issues' / 'bad.md'}:{line}: "), lines[0]
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-written

    checked = cli(root, "check", "bad")
    assert checked.exit_code == 1
    assert f"bad.md:{line}: error: " in checked.output and message in checked.output


def test_not_utf8_issue(make_project: Callable[..., Path], cli) -> None:
    root = make_project()
    (root / "issues" / "latin.md").write_bytes("---\ntitle: Grüße\n---\n".encode("latin-1"))
    result = cli(root, "build", "latin")
    assert result.exit_code == 1 and "not UTF-8" in result.output


def test_missing_issue_file(project: Path, cli) -> None:
    result = cli(project, "build", "nope")
    assert result.exit_code == 1 and "no such issue" in result.output


BAD_DATE = "---\ntitle: Datum\ndate: 2026-13-01\n---\nText.\n"


def test_a_broken_issue_named_by_its_slug_shows_its_real_error(
    make_project: Callable[..., Path], cli
) -> None:
    root = make_project(issues={"2026-12-08-datum.md": BAD_DATE})
    path = root / "issues" / "2026-12-08-datum.md"
    error = f"{path}:3: bad date '2026-13-01'; write it as YYYY-MM-DD, e.g. 2024-07-02"
    # Before: "Error: datum: no such issue; …", hiding the bad date that the path showed.
    checked = cli(root, "check", "datum")
    assert checked.exit_code == 1
    assert checked.output.splitlines()[0] == error.replace(": bad date", ": error: bad date")
    built = cli(root, "build", "datum")
    assert built.exit_code == 1
    assert built.output == f"Error: {error}\n"


def test_a_readable_issue_wins_a_slug_over_a_broken_files_name(
    make_project: Callable[..., Path], cli
) -> None:
    root = make_project(
        issues={
            "2026-12-08-datum.md": BAD_DATE,  # its name says "datum", its front matter nothing
            "zweite.md": "---\ntitle: Zweite\nslug: datum\npreheader: p\n---\nText.\n",
        }
    )
    checked = cli(root, "check", "datum")
    assert checked.exit_code == 0, checked.output
    assert checked.output.strip() == f"{root / 'issues' / 'zweite.md'}: no problems found"


def test_broken_custom_template_is_located(make_project: Callable[..., Path], cli) -> None:
    root = make_project(
        issues={"x.md": "---\ntitle: X\n---\nHi\n"},
        templates={"footer.mjml.j2": "<mj-section>\n{{ newsletter.nope }}\n</mj-section>\n"},
    )
    result = cli(root, "build", "x")
    assert result.exit_code == 1
    assert "footer.mjml.j2:2: template error" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_lists_commands_and_each_has_an_example() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    for name in ("init", "new", "build", "check"):
        assert f"  {name} " in top.output
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, name
        assert "newsletter " + name in result.output.split("Example:")[1]


@pytest.mark.parametrize(
    ("footer", "where", "message"),
    [
        (
            "<mj-section>\n{% include 'nope.j2' %}\n</mj-section>\n",
            "footer.mjml.j2:2",
            "'nope.j2' not found",
        ),
        (
            "<mj-section><mj-column><mj-text><p>open</mj-text></mj-column></mj-section>\n",
            "footer.mjml.j2",
            "MJML could not render",
        ),
        ("<mj-section>\n{% if %}\n</mj-section>\n", "footer.mjml.j2:2", "template error"),
    ],
)
def test_bad_custom_templates(
    make_project: Callable[..., Path], cli, footer: str, where: str, message: str
) -> None:
    root = make_project(
        issues={"x.md": "---\ntitle: X\n---\nHi\n"}, templates={"footer.mjml.j2": footer}
    )
    result = cli(root, "build", "x")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {root / 'templates' / where}: ")
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (root / "build").exists()
