"""Rendering benchmarks: prints figures against the targets of issue 2.

    python benchmarks/render.py

- warm in-process render of the example issue, median of 50 (target <= 20 ms)
- per-recipient personalization (substitutions + personalize), per 1000 recipients
- whole-process `newsletter build` of the example issue, median of 5 (target <= 0.6 s)
- whole-process `newsletter --help`, median of 5 (target <= 0.2 s)
- peak RSS of this process and of the child processes
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "issues" / "2024-07-meta-ki-creator.md"
CONFIG = """\
[newsletter]
name = "Jens' Briefing"
from_email = "jens@example.com"
postal_address = "Musterstraße 1, 10115 Berlin, Germany"
base_url = "https://news.example.com"
language = "de"
imprint_url = "https://news.example.com/impressum"
"""


def median_seconds(run, times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def report(name: str, value: float, unit: str, target: float | None = None) -> None:
    verdict = "" if target is None else ("  OK" if value <= target else "  OVER TARGET")
    target_text = "" if target is None else f" (target <= {target:g} {unit})"
    shown = f"{value:8.3f}" if unit == "s" else f"{value:8.1f}"
    print(f"{name:<48} {shown} {unit}{target_text}{verdict}")


def main() -> None:
    from as_installed import compile_package

    compile_package()
    sys.path.insert(0, str(REPO))
    from newsletter.project import Project
    from newsletter.render import SAMPLE_SUBSCRIBER, render_file

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "issues").mkdir()
        (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        issue = root / "issues" / EXAMPLE.name
        shutil.copy(EXAMPLE, issue)
        project = Project.load(root)
        # Inlined CSS is cached by its exact input (newsletter/inline_css.py): a fresh cache
        # here, and the edited-issue figures change the text each time, as a preview save does.
        os.environ["NEWSLETTER_CACHE_DIR"] = str(root / "cache")
        original = issue.read_text("utf-8")
        edits = iter(range(10**6))

        def edit() -> None:
            issue.write_text(original + f"\nNachtrag {next(edits)}.\n", "utf-8")

        start = time.perf_counter()
        rendered = render_file(project, issue)
        report(
            "cold in-process render (imports included)", (time.perf_counter() - start) * 1000, "ms"
        )

        def render_edited() -> None:
            edit()
            render_file(project, issue)

        warm = median_seconds(render_edited, 50)
        report("warm render of an edited issue, median of 50", warm * 1000, "ms", 20)
        issue.write_text(original, "utf-8")
        cached = median_seconds(lambda: render_file(project, issue), 50)
        report("warm render, unchanged (CSS from the cache)", cached * 1000, "ms")

        url = "https://news.example.com/unsubscribe/" + "t" * 80
        people = [
            {**SAMPLE_SUBSCRIBER, "id": n, "email": f"p{n}@example.com", "first_name": f"Name{n}"}
            for n in range(1000)
        ]
        start = time.perf_counter()
        for person in people:
            rendered.substitutions(person, url)
        report("substitutions() for 1000 recipients", (time.perf_counter() - start) * 1000, "ms")
        start = time.perf_counter()
        for person in people:
            rendered.personalize(person, url)
        report("personalize() for 1000 recipients", (time.perf_counter() - start) * 1000, "ms")
        print(
            f"{'HTML size as sent (UTF-8)':<48} {len(rendered.personalize(people[0], url)[0].encode()) / 1000:8.1f} KB"
        )

        exe = shutil.which("newsletter")
        command = [exe] if exe else [sys.executable, "-m", "newsletter"]
        env = {**os.environ, "NEWSLETTER_PROJECT": str(root)}
        out = root / "out"

        def build() -> None:
            subprocess.run(
                [*command, "build", str(issue), "-o", str(out)],
                check=True,
                env=env,
                capture_output=True,
            )

        def help_() -> None:
            subprocess.run([*command, "--help"], check=True, env=env, capture_output=True)

        build()  # warm the OS file cache and .pyc files
        report("whole-process `newsletter build`, median of 5", median_seconds(build, 5), "s", 0.6)

        def build_edited() -> None:
            edit()
            build()

        report(
            "the same after an edit (CSS not in the cache)",
            median_seconds(build_edited, 5),
            "s",
            0.6,
        )
        report("whole-process `newsletter --help`, median of 5", median_seconds(help_, 5), "s", 0.2)

    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report("peak RSS, this process", self_rss, "MB")
    report("peak RSS, largest child (build)", child_rss, "MB")


if __name__ == "__main__":
    main()
