"""`newsletter build` as a whole process, side by side with inkletter's `md2html` (the floor).

    python benchmarks/build_vs_inkletter.py [--runs 9] [--inkletter PATH] [--baseline DIR]

inkletter (Markdown -> MJML -> HTML, `pip install inkletter`, best in its own virtualenv) is
the closest tool that does a part of what `build` does. Each run times, in an order that
rotates: `inkletter md2html ISSUE -o OUT`; `newsletter build ISSUE` with the cache warm (a
user's second build of an issue); and `newsletter build` with the cache cold (an empty
NEWSLETTER_CACHE_DIR: nothing inlined, compiled or learned before, as on a fresh install).
Prints the medians of wall and CPU seconds, each build's ratio to the floor, and the load
average. Target (issue 27): <= 1.5x inkletter, cold and warm. (benchmarks/README.md says what
inkletter does and does not do.)

Without inkletter, the floor is a bare `python -c` that renders the same file with
markdown-it-py (which `build` uses as well) and says so.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from render import CONFIG, EXAMPLE

REPO = Path(__file__).resolve().parent.parent
BARE = (
    "import sys, markdown_it; "
    "open(sys.argv[2], 'w').write(markdown_it.MarkdownIt().render(open(sys.argv[1]).read()))"
)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


#: CPU seconds (user + system) of each timed process, by the order they ran.
cpu_seconds: list[float] = []


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--inkletter", help="the inkletter command (default: from PATH)")
    parser.add_argument("--baseline", help="another checkout to time beside this one")
    args = parser.parse_args()
    inkletter = args.inkletter or shutil.which("inkletter")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "issues").mkdir()
        (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        issue = root / "issues" / EXAMPLE.name
        shutil.copy(EXAMPLE, issue)
        env = {**os.environ, "NEWSLETTER_PROJECT": str(root), "PYTHONPATH": str(REPO)}
        build = [sys.executable, "-m", "newsletter", "build", str(issue), "-o", str(root / "out")]
        if inkletter:
            floor_name = f"inkletter md2html ({inkletter})"
            floor = [inkletter, "md2html", str(issue), "-o", str(root / "ink.html")]
        else:
            floor_name = "bare python + markdown-it-py (inkletter not found)"
            floor = [sys.executable, "-c", BARE, str(issue), str(root / "bare.html")]

        def warm(checkout: Path) -> float:
            cache = root / f"cache-warm-{checkout.name}"
            return timed(
                build,
                {**env, "PYTHONPATH": str(checkout), "NEWSLETTER_CACHE_DIR": str(cache)},
                cwd=checkout,
            )

        def cold(checkout: Path) -> float:
            cache = Path(tempfile.mkdtemp(dir=root))
            try:
                return timed(
                    build,
                    {**env, "PYTHONPATH": str(checkout), "NEWSLETTER_CACHE_DIR": str(cache)},
                    cwd=checkout,
                )
            finally:
                shutil.rmtree(cache)

        def bare() -> float:
            return timed(floor, env)

        steps: dict[str, Callable[[], float]] = {
            "floor": bare,
            "warm": lambda: warm(REPO),
            "cold": lambda: cold(REPO),
        }
        if args.baseline:
            baseline = Path(args.baseline).resolve()
            compile_package(baseline / "newsletter")
            steps["baseline warm"] = lambda: warm(baseline)
            steps["baseline cold"] = lambda: cold(baseline)
        for name in steps:  # the OS file cache, .pyc files, the warm CSS caches
            if "cold" not in name:
                steps[name]()
        times: dict[str, list[float]] = {name: [] for name in steps}
        cpu: dict[str, list[float]] = {name: [] for name in steps}
        loads = []
        for run in range(args.runs):
            loads.append(load())
            names = list(steps)
            names = names[run % len(names) :] + names[: run % len(names)]
            for name in names:
                times[name].append(steps[name]())
                cpu[name].append(cpu_seconds[-1])
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"whole processes, medians of {args.runs} runs in rotating order (wall; CPU):")
    print(f"  floor, {floor_name}: {medians['floor']:.3f} s; {cpu_medians['floor']:.3f} CPU s")
    labels = {"warm": "CSS cache warm", "cold": "CSS cache cold"}
    labels.update({f"baseline {k}": f"{v}, baseline {args.baseline}" for k, v in labels.items()})
    for name in steps:
        if name == "floor":
            continue
        print(
            f"  newsletter build, {labels[name]}: {medians[name]:.3f} s = "
            f"{medians[name] / medians['floor']:.2f}x the floor   (target <= 1.5x); "
            f"{cpu_medians[name]:.3f} CPU s = {cpu_medians[name] / cpu_medians['floor']:.2f}x"
        )
    print(f"  load average at each run: {'; '.join(loads)}")


if __name__ == "__main__":
    main()
