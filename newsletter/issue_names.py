"""Resolving an ISSUE argument (a path, a file name in issues/ with or without `.md`, a slug,
or a welcome-sequence step such as `sequences/welcome/01`) the same way in every command.

Kept apart from `newsletter.store.issues` (whose `resolve_issue` also finds an issue only the
database knows) so that commands that never touch the database, `build` and `check`, do not
import SQLAlchemy to find a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import ConfigError, IssueError, NewsletterError
from newsletter.files import NotARegularFile, regular_file
from newsletter.issue import file_name_slug, load_issue
from newsletter.step import resolve_step_issue

if TYPE_CHECKING:
    from newsletter.project import Project


@dataclass(frozen=True)
class ResolvedIssue:
    """An ISSUE argument: its file (None if only the database knows it) and its slug."""

    name: str
    slug: str
    path: Path | None

    def require_path(self) -> Path:
        if self.path is None:
            raise ConfigError(
                f"{self.name}: the issue {self.slug!r} was sent, but its file is no longer in "
                "issues/; give the file's path"
            )
        return self.path


def _slug_of(project: Project, path: Path) -> tuple[str, bool]:
    """The issue's slug, and whether its front matter could be read. A file whose front
    matter cannot be read still answers to its file name's slug, so that the command
    named by it shows the real error (the bad date, with file and line), not "no such
    issue"."""
    try:
        return load_issue(project, path).slug, True
    except NewsletterError:
        return file_name_slug(path), False


def _refuse_special_files(project: Project, text: str) -> None:
    """An ISSUE naming something that is there but no file (a FIFO, a device such as
    /dev/zero, a symlink loop, or a folder named like an issue file) is an IssueError that
    says what it is; such a thing is never opened."""

    given = Path(text)
    candidates = [given, project.root / given]
    if given.suffix != ".md":
        candidates += [Path(f"{text}.md"), project.issues_dir / f"{text}.md"]
    candidates.append(project.issues_dir / given)
    for candidate in candidates:
        try:
            os.lstat(candidate)
        except (OSError, ValueError):
            continue  # not there (or not a possible name): the usual lookup explains
        if os.path.isdir(candidate) and candidate.suffix != ".md":
            continue  # a folder such as site/ is no issue; a slug may share its name
        try:
            regular_file(candidate, "issue's Markdown file")
        except NotARegularFile as exc:
            if exc.missing:
                continue  # a dangling symlink: "no such issue", as before
            raise IssueError(candidate, None, exc.reason) from None
        return


class NoSuchIssue(ConfigError):
    """No file, file name or slug of an issue in the project is called that (the database may
    still know it: `newsletter.store.issues.resolve_issue` asks)."""


def resolve_issue(project: Project, name: str | Path) -> ResolvedIssue:
    """A path, a file name in issues/ (with or without `.md`), or a slug."""
    text = str(name)
    _refuse_special_files(project, text)

    step = resolve_step_issue(project, text)  # sequences/welcome/01: a welcome-sequence step
    if step is not None:
        return ResolvedIssue(text, step[0], step[1])
    try:
        path = project.issue_path(text)
    except ConfigError:
        path = None
    if path is not None:
        # A broken file is still the issue meant: `check` must be able to report on it.
        try:
            return ResolvedIssue(text, load_issue(project, path).slug, path)
        except NewsletterError:
            return ResolvedIssue(text, Path(path).stem, path)
    if project.issues_dir.is_dir():
        broken: list[Path] = []
        for candidate in sorted(project.issues_dir.glob("*.md")):
            slug, readable = _slug_of(project, candidate)
            if slug == text and readable:
                return ResolvedIssue(text, text, candidate.resolve())
            if slug == text:
                broken.append(candidate)
        if broken:
            # A readable file's slug is certain; a broken one's is a guess from its name.
            return ResolvedIssue(text, text, broken[0].resolve())
    raise NoSuchIssue(
        f"{text}: no such issue; give a file path, a name in {project.issues_dir} "
        "(with or without .md), or an issue's slug"
    )
