"""Write newsletter/inline_table.json: what premailer makes of the built-in templates' CSS
(default theme) and of the style attributes MJML writes from them, for the installed premailer
and cssutils. With it, a first `build` of an issue replays premailer's inlining instead of
running it (see newsletter/inline_table.py). `tests/test_inline_table.py` fails when the file
is out of date; rerun this after changing a built-in template or upgrading premailer/cssutils.

    python scripts/inline_table.py            # rewrite the file
    python scripts/inline_table.py --check    # exit 1 when it is out of date

The table is learned by rendering sample issues with premailer, nothing is written by hand:
the sample projects of `newsletter init` (German and English, with their welcome step), the
example issue with the benchmarks' configuration, and an issue using every Markdown element.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from _generated import write_or_check  # (beside this script: scripts/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "newsletter" / "inline_table.json"

CONFIG = """\
[newsletter]
name = "Jens' Briefing"
from_email = "jens@example.com"
postal_address = "Musterstraße 1, 10115 Berlin, Germany"
base_url = "https://news.example.com"
language = "de"
imprint_url = "https://news.example.com/impressum"
privacy_url = "https://news.example.com/datenschutz"
"""

EVERY_ELEMENT = (REPO / "tests" / "fixtures" / "every_element.md").read_text(encoding="utf-8")


def generate() -> str:
    """The table's JSON, learned afresh from the sample issues."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NEWSLETTER_CACHE_DIR"] = str(Path(tmp) / "cache")
        sys.path.insert(0, str(REPO))
        from newsletter import inline_css
        from newsletter.cache import read_entry
        from newsletter.inline_table import Table, parse_table, version_stamp
        from newsletter.project import Project
        from newsletter.render import render_file
        from newsletter.scaffold import init_project

        inline_css.shipped_table = Table  # learn everything, as a cache without the file would
        roots = []
        for language in ("de", "en"):
            root = Path(tmp) / language
            init_project(root, "Jens' Briefing", language)
            roots.append(root)
        root = Path(tmp) / "example"
        (root / "issues").mkdir(parents=True)
        (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        for example in sorted((REPO / "issues").glob("*.md")):
            (root / "issues" / example.name).write_text(example.read_text("utf-8"), "utf-8")
        (root / "issues" / "alle-elemente.md").write_text(EVERY_ELEMENT, encoding="utf-8")
        roots.append(root)
        for root in roots:
            project = Project.load(root)
            for path in sorted(root.glob("issues/*.md")) + sorted(root.glob("sequences/*/*.md")):
                render_file(project, path)
        stamp = version_stamp()
        learned_path = inline_css._learned_path()
        if stamp is None or learned_path is None:
            raise SystemExit("premailer's and cssutils' versions cannot be told; nothing written")
        table = parse_table(read_entry(learned_path), stamp)
        if table is None or not table.blocks:
            raise SystemExit("premailer taught nothing; nothing written")
        return table.as_json(stamp) + "\n"


def main() -> None:
    write_or_check(TABLE, generate(), "inline_table.py")


if __name__ == "__main__":
    main()
