"""Which issues the archive shows: the published ones (see `store.issues`) that still have
their file in issues/, with what a listing needs (title, date, preheader, language).

An issue's date in the archive is the one rule of `ArchiveEntry.day`: the `date:` of its
front matter, which the author wrote and the email's masthead showed, else the day it was
published. The index, the issue page and both feeds show it, and the archive lists by it.

Reading an issue file and finding its preheader costs milliseconds; with hundreds of issues
that adds up, so each file's summary is cached until the file changes (path, mtime, size).
"""

from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from newsletter.errors import NewsletterError
from newsletter.issue import load_issue
from newsletter.project import Project
from newsletter.render import issue_preheader
from newsletter.store.issues import published_issues


@dataclass(frozen=True)
class IssueFile:
    """What the archive needs from one issue file."""

    path: Path
    stamp: tuple[int, int]  # (mtime_ns, size): changes whenever the file does
    slug: str
    title: str
    preheader: str
    language: str
    public: bool | None = None  # the front matter's `public:` (see store.issues.publish_rule)
    date: datetime.date | None = None  # the front matter's `date:`


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
        """The issue's date wherever the archive shows one: its own `date:` (what the email
        said), else the day it was published."""
        return self.file.date or self.published_at.date()

    @property
    def moment(self) -> datetime.datetime:
        """`day` at the time of day it was published (UTC), for the feeds' timestamps."""
        return datetime.datetime.combine(self.day, self.published_at.timetz())


_summaries: dict[tuple[str, tuple[int, int]], IssueFile | None] = {}
_lock = threading.Lock()


def _summary(project: Project, location: str, stamp: tuple[int, int]) -> IssueFile | None:
    key = (location, stamp)
    try:
        return _summaries[key]  # a dict read is atomic: no lock on the hot path
    except KeyError:
        pass

    path = Path(location)
    try:
        issue = load_issue(project, path)
        found: IssueFile | None = IssueFile(
            path=path,
            stamp=stamp,
            slug=issue.slug,
            title=issue.title,
            preheader=issue_preheader(issue),
            language=issue.language,
            public=issue.public,
            date=issue.date,
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
    folder = str(project.issues_dir)
    # os.scandir and plain strings: the index checks every file on each request, and
    # pathlib's sorting and globbing cost more than the stat calls themselves.
    try:
        with os.scandir(folder) as listing:
            found = sorted(
                (item.name, item.stat())
                for item in listing
                if item.name.endswith(".md") and item.is_file()
            )
    except OSError:
        return by_slug
    for name, info in found:
        summary = _summary(project, f"{folder}/{name}", (info.st_mtime_ns, info.st_size))
        if summary is not None and summary.slug not in by_slug:
            by_slug[summary.slug] = summary
    return by_slug


def archive_entries(
    project: Project, engine: Engine, now: datetime.datetime | None = None
) -> list[ArchiveEntry]:
    """The published issues that have a file, newest first: by `ArchiveEntry.day`, then by
    when they were published."""

    files = issue_files(project)
    public = {slug: file.public for slug, file in files.items()}
    entries = [
        ArchiveEntry(files[p.slug], p.published_at)
        for p in published_issues(engine, now=now, public=public)
        if p.slug in files
    ]
    # Stable: on the same day (and moment) the store's order (by slug) stays.
    entries.sort(key=lambda e: (e.day, e.published_at), reverse=True)
    return entries


def front_matter_public(project: Project) -> dict[str, bool | None]:
    """slug -> the issue file's `public:` front matter, for every readable issue file."""
    return {slug: file.public for slug, file in issue_files(project).items()}


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


def export_summaries(files: dict[str, IssueFile]) -> list[list[object]]:
    """The summaries as JSON-able rows, for `remember_summaries` in a later process (the
    static build keeps them in its build state, so an unchanged archive reads no issue file)."""
    return [
        [
            str(f.path),
            list(f.stamp),
            f.slug,
            f.title,
            f.preheader,
            f.language,
            f.public,
            f.date.isoformat() if f.date else None,
        ]
        for f in files.values()
    ]


def remember_summaries(rows: list[list[object]]) -> None:
    """Seed the cache from `export_summaries` rows; a row whose file has since changed is
    never used, since its (mtime, size) stamp no longer matches."""
    with _lock:
        for row in rows:
            try:
                # (A row of an older version, without the date, is not used: re-read.)
                location, stamp, slug, title, preheader, language, public, date = row
                key = (str(location), (int(stamp[0]), int(stamp[1])))  # type: ignore[index]
                _summaries.setdefault(
                    key,
                    IssueFile(
                        Path(str(location)),
                        key[1],
                        str(slug),
                        str(title),
                        str(preheader),
                        str(language),
                        public if isinstance(public, bool) else None,
                        datetime.date.fromisoformat(str(date)) if date else None,
                    ),
                )
            except (TypeError, ValueError, IndexError):
                continue  # a damaged manifest only costs a re-read
