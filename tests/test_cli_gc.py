"""`newsletter` pauses the cyclic garbage collector while a command's modules load (it found
nothing there and cost `build` 7 ms); the command itself always runs with it on."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import EXAMPLE_ISSUE, REPO

SPY = """
import gc, sys
import newsletter.cli.authoring as authoring
seen = []
real = authoring.render_file
def spy(*args, **kwargs):
    seen.append(gc.isenabled())
    return real(*args, **kwargs)
authoring.render_file = spy
sys.argv = ["newsletter", "--project", sys.argv[1], "build", sys.argv[2], "-o", sys.argv[3]]
from newsletter.cli import run
try:
    run()
except SystemExit:
    pass
print("collector on in the command:", seen)
"""


def test_the_command_runs_with_the_collector_on(make_project, tmp_path):
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SPY, str(root), EXAMPLE_ISSUE.name, str(tmp_path / "out")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert "collector on in the command: [True]" in done.stdout, done.stderr
    assert (tmp_path / "out" / "meta-ki-creator.html").is_file()


def test_a_usage_error_and_help_still_work(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "newsletter"]
    helped = subprocess.run([*command, "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "build" in helped.stdout
    wrong = subprocess.run([*command, "nope"], env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "No such command" in wrong.stderr


def test_the_collector_is_on_again_after_run_without_a_command():
    """`run()` called in a process that goes on (a usage error, `--help`) leaves the
    collector as it found it."""
    script = (
        "import gc, sys; from newsletter.cli import run; sys.argv = ['newsletter', '--help']\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\nprint(gc.isenabled())"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "True", done.stderr
