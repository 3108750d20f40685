"""Which issues the archive shows: the published ones (see `store.issues`) that still have
their file in issues/, with what a listing needs (title, date, preheader, language).

Reading an issue file and finding its preheader costs milliseconds; with hundreds of issues
that adds up, so each file's summary is cached until the file changes (path, mtime, size).
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from newsletter.errors import NewsletterError
from newsletter.project import Project


@dataclass(frozen=True)
class IssueFile:
    """What the archive needs from one issue file."""

    path: Path
    stamp: tuple[int, int]  # (mtime_ns, size): changes whenever the file does
    slug: str
    title: str
    preheader: str
    language: str


@dataclass(frozen=True)
class ArchiveEntry:
    """A published issue as the archive lists it."""

    file: IssueFile
    published_at: datetime.datetime  # UTC

    @property
    def slug(self) -> str:
        return self.file.slug

    @property
    def title(self) -> str:
        return self.file.title

    @property
    def preheader(self) -> str:
        return self.file.preheader

    @property
    def language(self) -> str:
        return self.file.language

    @property
    def day(self) -> datetime.date:
        return self.published_at.date()


_summaries: dict[tuple[str, tuple[int, int]], IssueFile | None] = {}
_lock = threading.Lock()


def _summary(project: Project, path: Path, stamp: tuple[int, int]) -> IssueFile | None:
    from newsletter.issue import load_issue
    from newsletter.render import issue_preheader

    key = (str(path), stamp)
    with _lock:
        if key in _summaries:
            return _summaries[key]
    try:
        issue = load_issue(project, path)
        found: IssueFile | None = IssueFile(
            path=path,
            stamp=stamp,
            slug=issue.slug,
            title=issue.title,
            preheader=issue_preheader(issue),
            language=issue.language,
        )
    except NewsletterError:
        found = None  # a broken file is not listed; `newsletter check` names the problem
    with _lock:
        if len(_summaries) > 20_000:
            _summaries.clear()
        _summaries[key] = found
    return found


def issue_files(project: Project) -> dict[str, IssueFile]:
    """slug -> file for every readable issue in issues/ (the first file wins on a clash)."""
    by_slug: dict[str, IssueFile] = {}
    try:
        paths = sorted(project.issues_dir.glob("*.md"))
    except OSError:
        return by_slug
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        summary = _summary(project, path, (info.st_mtime_ns, info.st_size))
        if summary is not None and summary.slug not in by_slug:
            by_slug[summary.slug] = summary
    return by_slug


def archive_entries(
    project: Project, engine: Engine, now: datetime.datetime | None = None
) -> list[ArchiveEntry]:
    """The published issues that have a file, newest first."""
    from newsletter.store.issues import published_issues

    files = issue_files(project)
    return [
        ArchiveEntry(files[p.slug], p.published_at)
        for p in published_issues(engine, now=now)
        if p.slug in files
    ]


def neighbours(
    entries: list[ArchiveEntry], slug: str
) -> tuple[ArchiveEntry | None, ArchiveEntry | None, ArchiveEntry | None]:
    """(the entry, the previous (older) one, the next (newer) one); None where there is none."""
    for index, entry in enumerate(entries):
        if entry.slug == slug:
            older = entries[index + 1] if index + 1 < len(entries) else None
            newer = entries[index - 1] if index > 0 else None
            return entry, older, newer
    return None, None, None
