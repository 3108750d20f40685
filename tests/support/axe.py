"""axe-core (npm, pinned) in headless Chromium: the accessibility checker of the archive
tests. Installed once into a versioned cache folder under the temp dir; skipped with the
reason when node/npm are missing or the install fails, except on CI (CI=true)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

AXE_VERSION = "4.10.3"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def axe_script() -> Path:
    """axe.min.js, installed with npm on first use."""
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed (apt-get install nodejs npm)")
    folder = Path(tempfile.gettempdir()) / f"newsletter-test-axe-core-{AXE_VERSION}"
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".install-lock", "w") as lock:  # parallel workers install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not script.is_file():
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
                        f"axe-core@{AXE_VERSION}",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                _unavailable(f"npm install axe-core@{AXE_VERSION} failed: {exc}")
    return script


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the open page, one line each (rule,
    message, the first offending element). Contrast is computed from the rendered styles."""
    page.add_script_tag(path=str(axe_script()))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    found = []
    for violation in result:
        if violation["impact"] not in ("serious", "critical"):
            continue
        for node in violation["nodes"][:3]:
            found.append(
                f"{violation['id']}: {node.get('failureSummary', '').splitlines()[-1].strip()} "
                f"at {node['target']} {node['html'][:120]}"
            )
    return found
