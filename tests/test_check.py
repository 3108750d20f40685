"""`newsletter check`: every finding, with its file and line, and the exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.check import check_issue
from newsletter.project import Project
from tests.conftest import CONFIG, EXAMPLE_ISSUE

GOOD_FRONT = "---\ntitle: Gut\npreheader: Kurz und gut\n---\n"


def findings_for(make_project: Callable[..., Path], text: str, **kw):
    root = make_project(issues={"x.md": text}, **kw)
    return root, check_issue(Project.load(root), root / "issues" / "x.md")


def test_example_issue_is_clean(project: Path, cli) -> None:
    result = cli(project, "check", EXAMPLE_ISSUE.name, "--strict")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{project / 'issues' / EXAMPLE_ISSUE.name}: no problems found"


def test_images_and_links(make_project: Callable[..., Path], cli) -> None:
    body = (
        "Intro.\n\n"
        "![](https://example.com/a.png){width=300}\n\n"  # line 7: no alt
        '![Logo](/logo.png "120x40")\n\n'  # line 9: relative image
        "[local](http://localhost:8000/x) and\n"  # line 11: localhost
        "[plain](http://example.com/y)\n\n"  # line 12: not https
        "[rel](page.html) [ip](https://127.0.0.1/z) [ok](https://example.com) [mail](mailto:a@b.de)\n"  # 14
    )
    root, found = findings_for(make_project, GOOD_FRONT + body)
    got = {(f.severity, f.line, f.message.split(";")[0]) for f in found}
    assert got == {
        ("warning", 7, "image 'https://example.com/a.png' has no alt text"),
        ("error", 9, "image '/logo.png' is relative"),
        ("error", 11, "link 'http://localhost:8000/x' points to this computer"),
        ("warning", 12, "link 'http://example.com/y' is not https"),
        ("error", 14, "link 'page.html' is relative"),
        ("error", 14, "link 'https://127.0.0.1/z' points to this computer"),
    }
    result = cli(root, "check", "x")
    assert result.exit_code == 1
    assert f"{root / 'issues' / 'x.md'}:9: error: image '/logo.png' is relative" in result.output


def test_warnings_exit_zero_unless_strict(make_project: Callable[..., Path], cli) -> None:
    root = make_project(issues={"x.md": "---\ntitle: Ohne Preheader\n---\nText.\n"})
    result = cli(root, "check", "x")
    assert result.exit_code == 0
    assert "x.md:1: warning: no preheader" in result.output
    assert cli(root, "check", "x", "--strict").exit_code == 1
    # An empty `preheader:` key is pointed at.
    (root / "issues" / "y.md").write_text("---\ntitle: T\npreheader:\n---\nText.\n", "utf-8")
    assert "y.md:3: warning: no preheader" in cli(root, "check", "y").output


def test_subject_empty_and_long(make_project: Callable[..., Path]) -> None:
    _, found = findings_for(make_project, '---\ntitle: T\nsubject: ""\npreheader: p\n---\nx\n')
    assert [(f.severity, f.line) for f in found] == [("error", 3)]
    assert "subject is empty" in found[0].message
    long = (
        "Ein sehr langer Betreff, der in keinem Posteingang mehr vollständig angezeigt wird, sicher"
    )
    _, found = findings_for(make_project, f"---\ntitle: T\npreheader: p\nsubject: {long}\n---\nx\n")
    assert [(f.severity, f.line) for f in found] == [("warning", 4)]
    assert f"{len(long)} characters" in found[0].message


def test_a_field_in_the_preheader_is_an_error_as_in_the_subject(
    make_project: Callable[..., Path], cli
) -> None:
    # One preheader for all readers: the field was left out ("Hallo, neu!") without a word.
    front = '---\ntitle: T\npreheader: "Hallo {{ subscriber.first_name }}, neu!"\n---\nx\n'
    root = make_project(issues={"x.md": front})
    result = cli(root, "check", "x")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        f"{root / 'issues' / 'x.md'}:3: error: the preheader cannot hold {{{{ ... }}}} fields; "
        "write it without them"
    )


def test_a_preheader_too_long_to_show_warns_with_its_length(
    make_project: Callable[..., Path], cli
) -> None:
    long = "Warum Metas KI Creator verdrängen könnte, was das für Influencer bedeutet " * 2
    assert len(long.strip()) == 147
    root = make_project(issues={"x.md": f"---\ntitle: T\npreheader: {long}\n---\nx\n"})
    result = cli(root, "check", "x")
    assert result.exit_code == 0, result.output  # a warning: cut, not lost
    assert result.output.splitlines()[0] == (
        f"{root / 'issues' / 'x.md'}:3: warning: the preheader has 147 characters; it is cut "
        "after 140 (with …): shorten it"
    )
    assert cli(root, "check", "x", "--strict").exit_code == 1


def test_fields_without_default_warn_and_unknown_names_error(
    make_project: Callable[..., Path],
) -> None:
    body = (
        'Hallo {{ subscriber.first_name | default("du") }},\n'  # line 5: fine
        "Firma: {{ subscriber.company }}\n"  # line 6: no default
        "{{ subscibrer.first_name }}\n"  # line 7: typo
        "{{ subscriber.email }}\n"  # line 8: email is always there
    )
    _, found = findings_for(make_project, GOOD_FRONT + body)
    assert [(f.severity, f.line) for f in found] == [("error", 7), ("warning", 6)]
    assert "subscribers without" in found[1].message and 'default("...")' in found[1].message
    assert "subscibrer" in found[0].message


def test_custom_template_without_address_or_unsubscribe(make_project: Callable[..., Path]) -> None:
    footer = "<mj-section><mj-column><mj-text>Tschüss</mj-text></mj-column></mj-section>\n"
    root, found = findings_for(
        make_project, GOOD_FRONT + "x\n", templates={"footer.mjml.j2": footer}
    )
    messages = [(f.severity, f.path.name, f.message.split(";")[0]) for f in found]
    assert messages == [
        ("error", "footer.mjml.j2", "the HTML has no unsubscribe link"),
        ("error", "footer.mjml.j2", "the HTML lacks the postal address"),
        ("error", "footer.mjml.j2", "the HTML has no imprint link"),
    ]


def test_gmail_clipping_thresholds(make_project: Callable[..., Path]) -> None:
    paragraph = "Ein Absatz mit genug Text, um die Mail groß zu machen. " * 10 + "\n\n"
    _, found = findings_for(make_project, GOOD_FRONT + paragraph * 140)
    assert [f.severity for f in found] == ["warning"]
    assert "Gmail clips" in found[0].message
    _, found = findings_for(make_project, GOOD_FRONT + paragraph * 200)
    assert [f.severity for f in found] == ["error"]
    assert "KB" in found[0].message


def test_broken_issue_is_reported_not_raised(make_project: Callable[..., Path]) -> None:
    _, found = findings_for(make_project, "---\ntitle: [\n---\nx\n")
    assert len(found) == 1 and found[0].severity == "error" and found[0].line == 2


def test_unknown_front_matter_key(make_project: Callable[..., Path]) -> None:
    _, found = findings_for(
        make_project, "---\ntitle: T\npreheder: Tippfehler\npreheader: p\n---\nx\n"
    )
    assert [(f.severity, f.line) for f in found] == [("warning", 3)]
    assert "unknown front matter key `preheder`" in found[0].message


def test_raw_html_images_and_links(make_project: Callable[..., Path]) -> None:
    body = (
        "Text with <img src='https://example.com/a.png' width='20'> inline.\n\n"  # line 5
        "<div>\n"  # line 7
        '<a href="http://localhost/x">local</a>\n'  # line 8
        '<img src="https://example.com/b.png" alt="B" width="100">\n'
        "</div>\n"
    )
    _, found = findings_for(make_project, GOOD_FRONT + body)
    assert [(f.severity, f.line, f.message.split(";")[0]) for f in found] == [
        ("error", 8, "link 'http://localhost/x' points to this computer"),
        ("warning", 5, "an <img> has no alt text"),
    ]


def test_a_malformed_url_is_a_finding_not_a_crash(make_project: Callable[..., Path], cli) -> None:
    body = "Text.\n\n<a href='http://[::1'>b</a>\n"  # line 7
    root, found = findings_for(make_project, GOOD_FRONT + body)
    got = {(f.severity, f.line, f.message.split(";")[0]) for f in found}
    assert got == {("error", 7, "link 'http://[::1' is not a valid URL")}
    result = cli(root, "check", "x")
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_image_without_a_size_warns(make_project: Callable[..., Path]) -> None:
    body = (
        "![Sized](https://example.com/a.png){width=1200 height=800}\n\n"  # line 5
        '![Titled](https://example.com/b.png "300x200")\n\n'  # line 7
        "![Unsized](https://example.com/c.png)\n\n"  # line 9
        '<img src="https://example.com/d.png" alt="Raw">\n'  # line 11
    )
    _, found = findings_for(make_project, GOOD_FRONT + body)
    assert [(f.severity, f.line) for f in found] == [("warning", 9), ("warning", 11)]
    assert "image 'https://example.com/c.png' has no size" in found[0].message
    assert "{width=600 height=400}" in found[0].message
    assert "<img> has no width" in found[1].message
    # A default width in the config is a size: no warning for the Markdown image.
    config = CONFIG + "\n[theme]\nimage_width = 400\n"
    _, found = findings_for(make_project, GOOD_FRONT + body, config=config)
    assert [(f.severity, f.line) for f in found] == [("warning", 11)]


def test_theme_colours_below_aa_warn(make_project: Callable[..., Path]) -> None:
    config = CONFIG + '\n[theme]\nbrand_color = "#7dd3fc"\nbackground_color = "#6b7280"\n'
    root, found = findings_for(make_project, GOOD_FRONT + "Text.\n", config=config)
    messages = {f.message.split(":")[0]: f for f in found}
    assert set(messages) == {
        "[theme] brand_color",
        "[theme] background_color",
        "[theme] text_color",
    }
    # A dark background makes the masthead's name (text_color) unreadable too.
    dark = CONFIG + '\n[theme]\nbackground_color = "#111827"\n'
    _, found = findings_for(make_project, GOOD_FRONT + "Text.\n", config=dark)
    assert sorted(f.message.split(":")[1].strip() for f in found) == [
        "the footer text (#52525b) on background_color (#111827) has a contrast of 2.29",
        "the masthead's name (#1f2937) on background_color (#111827) has a contrast of 1.21",
    ]
    brand = messages["[theme] brand_color"]
    assert brand.severity == "warning" and brand.path == root / "newsletter.toml"
    assert "links (#7dd3fc) on the white card (#ffffff) has a contrast of 1.67:1" in brand.message
    assert "4.5:1" in brand.message
    # The defaults and the example project's colours pass.
    _, found = findings_for(make_project, GOOD_FRONT + "Text.\n")
    assert found == []


def test_a_theme_colour_that_is_no_css_colour_is_a_config_error(
    make_project: Callable[..., Path], cli
) -> None:
    config = CONFIG + '\n[theme]\nbrand_color = "blau"\n'
    root = make_project(config=config, issues={"x.md": GOOD_FRONT + "Text.\n"})
    result = cli(root, "check", "x")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {root / 'newsletter.toml'}: [theme] brand_color 'blau' is not a CSS colour; "
        'write it as hex, e.g. "#1a56db", or as a CSS colour name such as "teal"'
    ]
    assert "Traceback" not in result.output


def test_line_breaks_in_subject_title_or_preheader_are_errors(
    make_project: Callable[..., Path], cli
) -> None:
    cases = {
        "s.md": '---\ntitle: T\npreheader: p\nsubject: "Hallo\\r\\nBcc: x@y.z"\n---\nText.\n',
        "t.md": "---\npreheader: p\ntitle: |\n  Zeile eins\n  Zeile zwei\n---\nText.\n",
        "p.md": '---\ntitle: T\n\npreheader: "eins\\nzwei"\n---\nText.\n',
    }
    root = make_project(issues=cases)
    project = Project.load(root)
    expected = {"s.md": ("subject", 4), "t.md": ("title", 3), "p.md": ("preheader", 4)}
    for name, (key, line) in expected.items():
        [finding] = check_issue(project, root / "issues" / name)
        assert (finding.severity, finding.line) == ("error", line), finding
        assert finding.message.startswith(f"`{key}` holds a line break"), finding
    result = cli(root, "check", "s")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{root / 'issues' / 's.md'}:4: error: `subject` holds a line break" in result.output
    result = cli(root, "send", "s", "--test", "jens@example.com")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "`subject` holds a line break" in result.output


def test_imprint_missing_is_an_error_in_german_and_a_warning_in_english(
    make_project: Callable[..., Path], cli
) -> None:
    without = CONFIG.replace('imprint_url = "https://news.example.com/impressum"\n', "")
    assert "imprint_url" not in without
    english = GOOD_FRONT.replace("---\n", "---\nlanguage: en\n", 1)
    root = make_project(
        config=without, issues={"de.md": GOOD_FRONT + "Text.\n", "en.md": english + "Text.\n"}
    )
    project = Project.load(root)
    [german] = check_issue(project, root / "issues" / "de.md")
    assert (german.severity, german.path, german.line) == ("error", root / "newsletter.toml", None)
    assert german.message.startswith("[newsletter] imprint_url is not set, and a German newsletter")
    assert 'add imprint_url = "https://example.com/impressum"' in german.message
    [english_finding] = check_issue(project, root / "issues" / "en.md")
    assert english_finding.severity == "warning"
    assert english_finding.message.startswith("[newsletter] imprint_url is not set")
    result = cli(root, "check", "de")
    assert result.exit_code == 1 and "error: [newsletter] imprint_url is not set" in result.output
    assert cli(root, "check", "en").exit_code == 0


@pytest.mark.slow
def test_a_field_nobody_has_is_named(
    make_project: Callable[..., Path], cli, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (
        'Hallo {{ subscriber.first_name | default("du") }},\n'  # line 5: built-in
        'aus {{ subscriber.stadt | default("deiner Stadt") }}\n'  # line 6: Stadt is in use
        'bei {{ subscriber.firma | default("deiner Firma") }}\n'  # line 7: nobody has firma
        "{{ subscriber.fields.plz }}\n"  # line 8: nobody has it, no default either
    )
    root = make_project(issues={"x.md": GOOD_FRONT + body})
    project = Project.load(root)
    # No database yet, or an empty list: nothing to compare with, no error.
    assert [f.severity for f in check_issue(project, root / "issues" / "x.md")] == ["warning"]
    assert not (root / "newsletter.db").exists()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    assert [f.severity for f in check_issue(project, root / "issues" / "x.md")] == ["warning"]
    for args in (
        ["a@example.com", "--field", "stadt=Köln"],
        ["b@example.com", "--field", "stadt=", "--field", "plz="],
    ):
        assert cli(root, "subscribers", "add", *args).exit_code == 0
    found = check_issue(project, root / "issues" / "x.md")
    assert [(f.severity, f.line) for f in found] == [("error", 7), ("error", 8)]
    assert found[0].message.startswith(
        '{{ subscriber.firma | default("deiner Firma") }}: no subscriber has a field `firma`'
    )
    assert "`plz`" in found[1].message  # an empty value is no value
    result = cli(root, "check", "x")
    assert result.exit_code == 1 and "FieldView" not in result.output
    built = cli(root, "build", "x")
    assert built.exit_code == 0
    assert f"{root / 'issues' / 'x.md'}:7: warning: " in built.output
    assert "no subscriber has a field `firma`" in built.output
    assert "FieldView" not in built.output and "has no attribute" not in built.output


def test_missing_fields_are_named_without_jinja_internals(
    make_project: Callable[..., Path],
) -> None:
    _, found = findings_for(make_project, GOOD_FRONT + "{{ subscriber.first_name }}\n")
    [finding] = found
    assert finding.message == (
        "{{ subscriber.first_name }}: subscribers without the field `first_name` see nothing "
        'there: add | default("...")'
    )


def test_two_files_with_one_slug_warn(make_project: Callable[..., Path]) -> None:
    root = make_project(
        issues={
            "2024-07-hallo.md": GOOD_FRONT + "Eins.\n",
            "2024-08-hallo.md": GOOD_FRONT + "Zwei.\n",
            "anders.md": "---\ntitle: A\npreheader: p\nslug: hallo\n---\nDrei.\n",
            "eigen.md": GOOD_FRONT + "Vier.\n",
        }
    )
    found = check_issue(Project.load(root), root / "issues" / "anders.md")
    assert [(f.severity, f.line) for f in found] == [("warning", 4), ("warning", 4)]
    assert found[0].message.startswith("2024-07-hallo.md has the same slug `hallo`")
    assert found[1].message.startswith("2024-08-hallo.md has the same slug `hallo`")
    assert check_issue(Project.load(root), root / "issues" / "eigen.md") == []
