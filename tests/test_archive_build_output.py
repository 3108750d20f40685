"""`archive build -o DIR` refuses a folder that would publish the project or mix the site
into it. Before, `-o .` in the project root made the project (newsletter.toml, the
database) the site to publish, and `-o issues` wrote issues/<slug>/index.html and
index.html among the Markdown files. Now: one line naming the folder and the fix, exit 1,
nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

ISSUE = "---\ntitle: Grüße\nslug: gruesse\n---\n\nHallo aus der Straße.\n"


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("output", "why"),
    [
        (".", "is the project folder"),
        ("issues", "is in the project's issues/"),
        ("issues/site", "is in the project's issues/"),
        ("templates", "is in the project's templates/"),
        ("..", "holds the project"),
    ],
)
def test_an_output_folder_in_or_around_the_project_is_refused(
    make_project, cli, monkeypatch, tmp_path, output, why
) -> None:
    root = make_project(issues={"2024-07-02-gruesse.md": ISSUE})
    assert cli(root, "subscribers", "count").exit_code == 0  # the database exists
    monkeypatch.chdir(root)
    before = files_under(tmp_path)

    result = cli(root, "archive", "build", "-o", output)
    assert result.exit_code == 1, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {output}: the output folder {why}")
    assert line.endswith(
        f"write the site to a folder of its own, e.g. -o site (without -o: {root / 'site'})"
    )
    assert "Traceback" not in result.output
    assert files_under(tmp_path) == before  # nothing written

    built = cli(root, "archive", "build", "-o", "site", "--quiet")
    assert built.exit_code == 0, built.output
    assert (root / "site" / "index.html").is_file() and not (root / "index.html").exists()
