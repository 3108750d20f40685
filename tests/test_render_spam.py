"""SpamAssassin (Debian's `spamassassin`, offline rules) scores the outbox message at 0 or below.

Without spamassassin the test is skipped with the reason, except on CI (CI=true), where
.ci/run installs it and a skip would hide a regression.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import EXAMPLE_ISSUE


def spamassassin() -> str:
    path = shutil.which("spamassassin")
    if path is None:
        reason = "spamassassin is not installed (apt-get install spamassassin)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


def spam_report(binary: str, message: Path, home: Path) -> tuple[float, str]:
    """(score, report) from a local-only run: no DNS or network tests (-L), report (-t)."""
    result = subprocess.run(
        [binary, "-L", "-t", "-p", str(home / "user_prefs")],
        input=message.read_bytes(),
        capture_output=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
        check=True,
    )
    output = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", output, re.MULTILINE)
    assert status, output[:2000]
    return float(status.group(1)), output


@pytest.mark.slow
def test_outbox_message_scores_zero_or_below(
    project: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    binary = spamassassin()
    added = cli(project, "subscribers", "add", "leser@example.org", "--name", "Alex Beispiel")
    assert added.exit_code == 0, added.output
    outbox = tmp_path / "outbox"
    sent = cli(project, "send", EXAMPLE_ISSUE.stem, "--outbox", str(outbox), "--yes")
    assert sent.exit_code == 0, sent.output
    [message] = outbox.glob("*.eml")
    score, report = spam_report(binary, message, tmp_path)
    assert "HTML_FONT_LOW_CONTRAST" not in report
    assert score <= 0, report[report.find("Content analysis details") :]
