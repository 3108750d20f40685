"""Mail-client support of the built HTML, checked against caniemail's data by the npm
package doiuse-email (pinned, installed once into a cache folder under the temp dir).

Skipped with the reason when node/npm are missing or the package cannot be installed,
except on CI (CI=true), where .ci/run installs node and npm.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.render import SAMPLE_SUBSCRIBER, render_file
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.support.render import EVERYTHING

DOIUSE_VERSION = "0.4.1"
CLIENTS = "gmail.*,outlook.*,apple-mail.*,yahoo.*"

#: caniemail "not supported" verdicts we accept, feature -> clients, and why. Anything
#: else (a new CSS property, an element a client drops) fails the test.
ALLOWED: dict[str, set[str]] = {
    # The <style> block holds only progressive enhancements (phone font size, dark mode,
    # the desktop card margin); a client that drops it shows the inlined light styles.
    "@media": {"gmail.mobile-webmail", "outlook.windows", "outlook.windows-mail"},
    "Class selector": {"gmail.mobile-webmail"},
    "Chaining selectors": {"gmail.mobile-webmail", "outlook.windows", "outlook.windows-mail"},
    "Descendant combinator": {"gmail.mobile-webmail"},
    # mjml's document: these apps replace <body> by a <div>; the background colour is on
    # the inner wrapper too.
    "<body> element": {"outlook.android", "outlook.ios", "yahoo.android", "yahoo.ios"},
    # mjml's accessibility attributes (role="article", aria-label): ignored where unknown.
    "aria-label attribute": {
        "outlook.windows-mail",
        "yahoo.android",
        "yahoo.desktop-webmail",
        "yahoo.ios",
    },
    "role attribute": {"outlook.windows-mail"},
    # The preheader also has max-height:0 and overflow:hidden (and mso-hide for Outlook).
    "display:none": {"gmail.mobile-webmail"},
    # Scroll boxes of wide tables and code: where dropped, the table is simply wider.
    "overflow": {"outlook.android", "outlook.windows", "outlook.windows-mail", "yahoo.android"},
    # mjml's fixed layout on its own layout tables; Outlook sizes them by their width attributes.
    "table-layout": {"outlook.windows", "outlook.windows-mail"},
    # mjml's image reset (outline:none): nothing to show where it is ignored.
    "outline": {"outlook.windows", "outlook.windows-mail"},
    # Rounded corners of code blocks: square in Outlook for Windows.
    "border-radius": {"outlook.windows", "outlook.windows-mail"},
    # Hyphenation by the issue's lang (Apple Mail does it): elsewhere words wrap whole, as
    # before, and overflow-wrap still splits what cannot fit.
    "hyphens": {
        "gmail.android",
        "gmail.desktop-webmail",
        "gmail.ios",
        "outlook.android",
        "outlook.ios",
        "outlook.windows",
        "outlook.windows-mail",
        "yahoo.android",
        "yahoo.desktop-webmail",
        "yahoo.ios",
    },
    # white-space:pre on <pre>, which keeps its spacing there anyway.
    "white-space": {"outlook.windows", "outlook.windows-mail"},
    # Footnote links (#fn1, with name= anchors for the clients that honour them); where a
    # jump does not work, the note is still right below the text.
    "Local anchors": {"gmail.ios", "outlook.android", "outlook.ios", "yahoo.android", "yahoo.ios"},
    # What the issue asks for instead of word-break: where a client drops it, a long URL does
    # not wrap (most of these apps wrap long words themselves: caniemail's word-break notes)
    # and an ordinary word is never split either way.
    "overflow-wrap": {
        "apple-mail.ios",
        "apple-mail.macos",
        "gmail.android",
        "gmail.desktop-webmail",
        "gmail.ios",
        "gmail.mobile-webmail",
        "outlook.android",
        "outlook.ios",
        "outlook.outlook-com",
        "outlook.windows",
        "outlook.windows-mail",
        "yahoo.android",
        "yahoo.desktop-webmail",
        "yahoo.ios",
    },
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def doiuse_cli() -> Path:
    """The doiuse-email CLI, installed on first use into a versioned cache folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are not installed (apt-get install nodejs npm)")
    folder = Path(tempfile.gettempdir()) / f"newsletter-test-doiuse-email-{DOIUSE_VERSION}"
    cli = folder / "node_modules" / "doiuse-email" / "bin" / "cli.js"
    folder.mkdir(parents=True, exist_ok=True)
    # Parallel test processes (`pytest -n 2`) install it once: the others wait for the lock.
    with open(folder / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cli.is_file():
            _npm_install(npm, folder)
    return cli


def _npm_install(npm: str, folder: Path) -> None:
    try:
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
                str(folder),
                f"doiuse-email@{DOIUSE_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"npm install doiuse-email@{DOIUSE_VERSION} failed: {exc}")


def unsupported(html: str, tmp_path: Path) -> dict[str, set[str]]:
    """feature -> clients that caniemail says do not support it."""
    cli = doiuse_cli()
    page = tmp_path / "email.html"
    page.write_text(html, encoding="utf-8")
    result = subprocess.run(
        ["node", str(cli), f"--email-clients={CLIENTS}", str(page)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    found: dict[str, set[str]] = {}
    for error in json.loads(result.stdout)["errors"]:
        match = re.fullmatch(r"`(.+)` is not supported by `(.+)`", error)
        assert match, error
        found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def beyond_allowlist(found: dict[str, set[str]]) -> dict[str, set[str]]:
    extra = {feature: clients - ALLOWED.get(feature, set()) for feature, clients in found.items()}
    return {feature: clients for feature, clients in extra.items() if clients}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["example", "everything"])
def test_no_unsupported_features_beyond_the_allowlist(
    make_project: Callable[..., Path], tmp_path: Path, which: str
) -> None:
    config = CONFIG + '\n[theme]\nlogo_url = "https://news.example.com/logo.png"\n'
    text = EXAMPLE_ISSUE.read_text(encoding="utf-8") if which == "example" else EVERYTHING
    root = make_project(config=config, issues={"x.md": text})
    rendered = render_file(Project.load(root), root / "issues" / "x.md")
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, "https://news.example.com/unsubscribe/x")
    found = unsupported(html, tmp_path)
    assert beyond_allowlist(found) == {}


def test_the_check_catches_what_clients_drop(tmp_path: Path) -> None:
    """The test above can fail: a <section> and word-break are flagged."""
    html = (
        "<!doctype html><html><body><section style='word-break:break-word'>x</section>"
        "</body></html>"
    )
    extra = beyond_allowlist(unsupported(html, tmp_path))
    assert "word-break" in extra or "<section> element" in extra, extra
