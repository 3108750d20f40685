"""Live-reload latency: from writing the issue file to the new text being visible in the page.

Runs the real preview server (uvicorn in a thread, watchfiles, server-sent events) on a copy
of the example project and watches the page in headless chromium (the same browser as the
tests). Each of N saves changes one sentence; we time until that sentence is inside the email
iframe. Target: median <= 300 ms.

    python benchmarks/preview_reload.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.preview.app import create_preview_app  # noqa: E402
from newsletter.preview.browser import launch_chromium, sync_playwright  # noqa: E402
from newsletter.preview.server import start_in_thread  # noqa: E402
from newsletter.project import Project  # noqa: E402

ISSUE = "2024-07-meta-ki-creator.md"
SENTENCE = "Wir alle nutzen Facebook und Instagram täglich"
TARGET_MS = 300.0
PAUSE_S = 0.4  # an author does not save more than a few times a second

VISIBLE = """marker => {
    const doc = document.getElementById("email").contentDocument;
    return Boolean(doc && doc.body && doc.body.textContent.includes(marker));
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("NEWSLETTER_SECRET_KEY", "benchmark-only-key")

    root = Path(tempfile.mkdtemp(prefix="newsletter-preview-bench-"))
    try:
        (root / "issues").mkdir()
        shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
        issue = root / "issues" / ISSUE
        original = (REPO / "issues" / ISSUE).read_text(encoding="utf-8")
        issue.write_text(original, encoding="utf-8")

        app = create_preview_app(Project.load(root), issue)
        server = start_in_thread(app)
        hub = app.state.hub
        timings: list[float] = []
        renders: list[float] = []
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url)
            page.wait_for_function(VISIBLE, arg=SENTENCE)
            time.sleep(1.0)  # let the first check finish and the watcher settle
            for run in range(args.runs):
                marker = f"Lauf {run}: Wir alle lieben Fediverse täglich"
                text = original.replace(SENTENCE, marker)
                started = time.perf_counter()
                issue.write_text(text, encoding="utf-8")
                page.wait_for_function(VISIBLE, arg=marker, polling="raf", timeout=10_000)
                timings.append((time.perf_counter() - started) * 1000)
                renders.append(hub.state.snapshot.render_ms)
                time.sleep(PAUSE_S)
            browser.close()
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    median = statistics.median(timings)
    print(f"save -> visible in page, {len(timings)} saves (ms):")
    print("  " + " ".join(f"{t:.0f}" for t in timings))
    print(
        f"  median {median:.1f}  mean {statistics.mean(timings):.1f}  "
        f"min {min(timings):.1f}  max {max(timings):.1f}  "
        f"p90 {sorted(timings)[int(len(timings) * 0.9) - 1]:.1f}"
    )
    print(f"  render in the server (pipeline only): median {statistics.median(renders):.1f} ms")
    print(
        f"  peak RSS of this process (server + pipeline): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    print(f"  target median <= {TARGET_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
