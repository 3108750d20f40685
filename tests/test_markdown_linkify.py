"""Linkify's shortcut (newsletter/markdown.py): a text that cannot hold an explicit link skips
linkify-it's tests, whose fuzzy patterns cost 40-60 ms to compile per process. The Markdown
must render exactly as with linkify-it's own tests."""

from __future__ import annotations

import subprocess
import sys

from markdown_it import MarkdownIt

from newsletter.markdown import ExplicitLinkify, markdown
from tests.conftest import EXAMPLE_ISSUE, REPO

SAMPLES = [
    "Metas KI: Creator, Influencer und „Plattformen“ – was nun?",
    "Schreib an jens@example.com oder besuch Meta.ai und example.de.",
    "Mehr unter www.example.com/ä und WWW.Example.COM, oder https://example.com/x?y=1.",
    "mailto:jens@example.com, ftp://files.example.com und //example.com/pfad",
    "Uhrzeit 10:30, Verhältnis 3:1, Pfad a/b/c, Datei bericht.pdf",
    "http\\://example.com/ bleibt Text; <a href='https://x.example'>schon ein Link</a> www.x.de",
    "[ein Link](https://example.com) und danach www.example.org",
    "Grüße aus Köln – ohne jeden Link, nur Umlaute: äöüß ÄÖÜ.",
    "Entities: &#119;ww.example.com, &#47;&#47;example.net, https&#58;//example.org &amp; mehr",
]


class LinkifyItsOwnTests(ExplicitLinkify):
    """The same linkify, deciding with linkify-it's own pretest and test only."""

    def pretest(self, text: str) -> bool:
        return bool(super(ExplicitLinkify, self).pretest(text))

    def test(self, text: str) -> bool:
        return bool(super(ExplicitLinkify, self).test(text))


def test_the_shortcut_renders_what_linkify_its_own_tests_render():
    ours = markdown()
    reference = MarkdownIt("commonmark", {"linkify": True, "html": True, "typographer": False})
    reference.enable(["table", "strikethrough", "linkify"])
    reference.linkify = LinkifyItsOwnTests().set({"fuzzy_email": False})
    plain = MarkdownIt("commonmark", {"linkify": True, "html": True, "typographer": False})
    plain.enable(["table", "strikethrough", "linkify"])
    plain.linkify = ours.linkify
    for sample in [*SAMPLES, EXAMPLE_ISSUE.read_text("utf-8")]:
        assert plain.render(sample) == reference.render(sample), sample
    linked = plain.render(SAMPLES[2])
    assert linked.count("<a href") == 3 and "https://www.example.com/%C3%A4" in linked
    assert "<a" not in plain.render(SAMPLES[1])  # fuzzy hosts and emails stay text


def test_an_issue_without_links_does_not_compile_linkifys_patterns():
    """The example issue has no link: rendering it leaves linkify-it's fuzzy patterns
    uncompiled (they are what the shortcut saves)."""
    script = (
        "import re, sys; from newsletter.markdown import markdown, parse; "
        "from linkify_it.main import LinkifyIt; "
        f"parse(open({str(EXAMPLE_ISSUE)!r}, encoding='utf-8').read()); "
        "fuzzy = markdown().linkify.re['host_fuzzy_test']; "
        "print(any(key[1] == fuzzy for key in re._cache))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"  # not in re's cache of compiled patterns
