"""What the scripts that write a generated file share: write it, or with `--check` say
whether the committed one is current (the tests run each script with `--check`)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, script: str) -> None:
    if "--check" in sys.argv[1:]:
        current = path.read_text("utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run python scripts/{script}", file=sys.stderr)
            raise SystemExit(1)
        return
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
