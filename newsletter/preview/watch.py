"""Which files the preview watches, and the watch loop (watchfiles).

We watch folders, not single files: editors often save by writing a temporary file and
renaming it over the original, which a watch on the file itself would lose.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from newsletter.project import CONFIG_NAME, builtin_templates_dir

# A burst of events (save + rename + chmod) comes within a few ms: wait this long for quiet...
STEP_MS = 30
# ...but never longer than this before rendering.
DEBOUNCE_MS = 400
# After the watched folders change, render again this much later (see `watch`).
CATCH_UP_SECONDS = 0.25


class WatchedFiles:
    """The issue, newsletter.toml, the project's templates/ and the built-in templates."""

    def __init__(self, project_root: Path, issue_path: Path):
        self.project_root = project_root.resolve()
        self.issue_path = issue_path.resolve()
        self.config_path = self.project_root / CONFIG_NAME
        self.template_dirs = tuple(
            dict.fromkeys(
                [(self.project_root / "templates").resolve(), builtin_templates_dir().resolve()]
            )
        )
        self._default = DefaultFilter()

    def folders(self) -> list[Path]:
        """Every folder to watch (non-recursively), template subfolders included."""
        found = [self.issue_path.parent, self.project_root]
        for top in self.template_dirs:
            for folder, dirs, _files in os.walk(top):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
                found.append(Path(folder))
        return [f for f in dict.fromkeys(found) if f.is_dir()]

    def matters(self, path: str | Path) -> bool:
        """Is a change to this path one that changes the rendered issue?"""
        path = Path(path)
        if path in (self.issue_path, self.config_path):
            return True
        return any(path.is_relative_to(top) for top in self.template_dirs)

    def watch_filter(self, change: Change, path: str) -> bool:
        return self._default(change, path) and self.matters(path)


async def watch(
    files: WatchedFiles,
    on_change: Callable[[set[tuple[Change, str]]], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Call `on_change(changes)` after each burst of relevant changes until `stop` is set.

    When the set of folders changes (a new templates/ subfolder), the watch restarts on it,
    and renders once more shortly after: files written into the new folder before the new
    watch began would otherwise go unnoticed.
    """
    catch_up: asyncio.Task[None] | None = None
    first = True
    while not stop.is_set():
        folders = files.folders()
        if not first:
            catch_up = asyncio.create_task(_later(CATCH_UP_SECONDS, on_change))
        first = False
        async for changes in awatch(
            *folders,
            watch_filter=files.watch_filter,
            recursive=False,
            step=STEP_MS,
            debounce=DEBOUNCE_MS,
            stop_event=stop,
        ):
            await on_change(changes)
            if files.folders() != folders:
                break
    if catch_up is not None:
        catch_up.cancel()


async def _later(
    seconds: float, on_change: Callable[[set[tuple[Change, str]]], Awaitable[None]]
) -> None:
    await asyncio.sleep(seconds)
    await on_change(set())
