"""`newsletter archive build`: the archive as a static site, to host anywhere.

index.html, issues/<slug>/index.html, feed.xml, feed.json, 404.html and sitemap.xml; links
inside the site are relative, the sign-up form posts to base_url/subscribe, and nothing is
fetched from the network. The output folder is published as a whole, so it is never the
project, a folder holding it, or one in its issues/ or templates/ (`_refuse_project_folder`).

Idempotent: a file is written only when its bytes change, so an unchanged archive leaves
every file (and its mtime) alone, and a new issue touches only the pages it affects (itself,
its neighbour, the index, the feeds, the sitemap). Rendering an issue costs tens of
milliseconds, so a build state records what each page was built from; a page whose inputs
and file are unchanged is not rendered again. The state names every issue file (drafts too),
so it is kept in the user's private cache folder (`newsletter.cache`), one file per output
folder, never in the published folder; without a cache every page is rendered and compared.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import multiprocessing as mp
import os
import signal
import tempfile
from collections.abc import Callable, Generator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from sqlalchemy import Engine

from newsletter import __version__
from newsletter.archive.catalog import (
    ArchiveEntry,
    archive_entries,
    export_summaries,
    issue_files,
    remember_summaries,
)
from newsletter.archive.feeds import FEED_ENTRIES, atom_feed, json_feed
from newsletter.archive.links import Site, static_site
from newsletter.archive.pages import (
    config_fingerprint,
    index_page,
    issue_page,
    not_found_page,
    templates_fingerprint,
    templates_frozen,
)
from newsletter.cache import private_folder, trusted_file
from newsletter.errors import ConfigError, NewsletterError
from newsletter.project import Project

#: Where older builds kept their state, published with the site: read once, then removed.
OLD_MANIFEST = ".newsletter-archive.json"
#: World-readable, as any web server needs.
FILE_MODE = 0o644


class SiteError(NewsletterError):
    """The output folder cannot be written."""


@dataclass
class BuildReport:
    folder: Path
    issues: int = 0
    written: list[str] = field(default_factory=list)  # paths relative to the folder
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` atomically unless the file already holds exactly these bytes (then its
    mtime stays). The file ends up 0644 either way."""
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o777 != FILE_MODE:
                path.chmod(FILE_MODE)
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _stat_of(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _sitemap(site: Site, entries: list[ArchiveEntry]) -> bytes:
    namespace = "http://www.sitemaps.org/schemas/sitemap/0.9"
    root = ElementTree.Element("urlset", xmlns=namespace)

    def add(location: str, day: datetime.date | None) -> None:
        url = ElementTree.SubElement(root, "url")
        ElementTree.SubElement(url, "loc").text = location
        if day is not None:
            ElementTree.SubElement(url, "lastmod").text = day.isoformat()

    # lastmod says when a page appeared (it was published), not the date an issue names.
    add(f"{site.public_url}/", max(e.published_at for e in entries).date() if entries else None)
    for entry in entries:
        add(site.issue_url(entry.slug), entry.published_at.date())
    ElementTree.indent(root)
    body = ElementTree.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def build_site(
    project: Project,
    engine: Engine,
    folder: Path,
    *,
    now: datetime.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Write the static archive into `folder`; see the module docstring."""
    _refuse_project_folder(project, folder)
    config = project.config
    if not config.base_url:
        raise ConfigError(
            f"{config.path}: [newsletter] base_url is not set; the static archive's sign-up "
            'form posts to it. Add base_url = "https://news.example.com" (where '
            "`newsletter serve` runs)"
        )
    site = static_site(config.base_url, config.section("archive")["site_url"])
    state_file = _state_file(folder)
    manifest = _read_manifest(state_file)
    # Pages an older build recorded in the folder itself still count as this tool's own.
    known = manifest.get("files")
    manifest["files"] = {
        **_old_manifest_files(folder),
        **(known if isinstance(known, dict) else {}),
    }
    remember_summaries(manifest.get("summaries", []))
    entries = archive_entries(project, engine, now=now)
    report = BuildReport(folder=folder, issues=len(entries))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with templates_frozen(project):
            _build(
                project,
                site,
                entries,
                folder,
                manifest.get("files", {}),
                report,
                progress,
                state_file,
            )
            _remove_old_manifest(folder, report)
    except OSError as exc:
        where = exc.filename or folder
        raise SiteError(f"{where}: cannot write ({exc.strerror}); choose another -o DIR") from None
    return report


def _refuse_project_folder(project: Project, folder: Path) -> None:
    """A SiteError when `folder` is the project, holds it, or lies in its issues/ or
    templates/: the whole folder is what gets published, and the site's issues/<slug>/ pages
    must not mix with the issue files (nor newsletter.toml and the database be published)."""
    out, root = folder.resolve(), project.root.resolve()
    if out == root:
        why = "is the project folder (the site would publish newsletter.toml and the database)"
    elif root.is_relative_to(out):
        why = f"holds the project {root} (the site would publish it)"
    elif out.is_relative_to(project.issues_dir.resolve()):
        why = "is in the project's issues/ (the pages would mix with the issue files)"
    elif out.is_relative_to(project.templates_dir.resolve()):
        why = "is in the project's templates/ (the pages would mix with the templates)"
    else:
        return
    raise SiteError(
        f"{folder}: the output folder {why}; write the site to a folder of its own, "
        f"e.g. -o site (without -o: {root / 'site'})"
    )


def _build(
    project: Project,
    site: Site,
    entries: list[ArchiveEntry],
    folder: Path,
    old: dict[str, Any],
    report: BuildReport,
    progress: Callable[[str], None] | None,
    state_file: Path | None,
) -> None:
    new: dict[str, Any] = {}
    common = (__version__, templates_fingerprint(project), config_fingerprint(project), site)

    def unchanged(relative: str, inputs: str | None) -> bool:
        known = old.get(relative)
        if (
            inputs is not None
            and known is not None
            and known.get("inputs") == inputs
            and known.get("stat") == _stat_of(folder / relative)
        ):
            new[relative] = known
            report.unchanged += 1
            return True
        return False

    def store(relative: str, inputs: str | None, data: bytes) -> None:
        path = folder / relative
        if write_if_changed(path, data):
            report.written.append(relative)
            if progress is not None:
                progress(relative)
        else:
            report.unchanged += 1
        new[relative] = {"inputs": inputs, "stat": _stat_of(path)}

    def emit(relative: str, inputs: str | None, make: Callable[[], bytes]) -> None:
        if not unchanged(relative, inputs):
            store(relative, inputs, make())

    finished = False
    try:
        # The index and the 404 page first, in memory: a broken template of the project's own
        # (they share the layout with the issue pages) stops the build before anything is
        # written, rather than after the issue pages.
        index_html = index_page(project, site, entries, site.root).encode("utf-8")
        not_found_html = _not_found(project, site)
        jobs: list[tuple[str, str, PageJob]] = []
        for index, entry in enumerate(entries):
            older = entries[index + 1] if index + 1 < len(entries) else None
            newer = entries[index - 1] if index > 0 else None
            inputs = _digest(
                common,
                str(entry.file.path),
                entry.file.stamp,
                entry.published_at,
                [(n.slug, n.title, n.day) if n else None for n in (older, newer)],
            )
            relative = f"issues/{entry.slug}/index.html"
            if not unchanged(relative, inputs):
                jobs.append((relative, inputs, (project, site, entry, older, newer)))
        pages = _render_pages([job for _r, _i, job in jobs])
        try:
            for (relative, inputs, _job), data in zip(jobs, pages, strict=True):
                store(relative, inputs, data)
        finally:
            pages.close()  # on Ctrl-C: cancel the workers' queue at once
        feed_inputs = _digest(
            common,
            [(str(e.file.path), e.file.stamp, e.published_at) for e in entries[:FEED_ENTRIES]],
        )
        emit("feed.xml", feed_inputs, lambda: atom_feed(project, site, entries))
        emit("feed.json", feed_inputs, lambda: json_feed(project, site, entries))
        # Cheap to render: compared byte for byte every time.
        emit("index.html", None, lambda: index_html)
        emit("404.html", None, lambda: not_found_html)
        emit("sitemap.xml", None, lambda: _sitemap(site, entries))
        _remove_stale(folder, old, new, report)
        finished = True
    finally:
        # Even after Ctrl-C, what was written is recorded (and what was not yet looked at
        # keeps its old record), so the next run picks up where this one stopped.
        if state_file is not None:
            files = new if finished else {**old, **new}
            summaries = export_summaries(issue_files(project))
            record = json.dumps({"files": files, "summaries": summaries}, separators=(",", ":"))
            _write_state(state_file, record.encode("utf-8") + b"\n")


def _state_file(folder: Path) -> Path | None:
    """The build state of the output `folder`, in the private cache; None without one."""
    cache = private_folder("archive")
    if cache is None:
        return None
    name = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogatepass")).hexdigest()
    return cache / f"{name}.json"


def _read_manifest(state_file: Path | None) -> dict[str, Any]:
    if state_file is None:
        return {}
    try:
        with state_file.open("rb") as file:
            if not trusted_file(os.fstat(file.fileno())):
                return {}
            found = json.loads(file.read())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_state(state_file: Path, data: bytes) -> None:
    """Atomically, 0600 (mkstemp's mode); a cache that cannot be written only costs time."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{state_file.name}.", dir=state_file.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, state_file)
    except OSError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _old_manifest(folder: Path) -> dict[str, Any] | None:
    """An older build's state in the output folder, when there is one that looks like it."""
    path = folder / OLD_MANIFEST
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with path.open("rb") as file:
            found = json.loads(file.read())
    except (OSError, ValueError):
        return None
    if isinstance(found, dict) and set(found) <= {"files", "summaries"}:
        return found
    return None


def _old_manifest_files(folder: Path) -> dict[str, Any]:
    """The pages an older build wrote, so that stale ones are still removed."""
    found = _old_manifest(folder)
    files = found.get("files") if found else None
    return files if isinstance(files, dict) else {}


def _remove_old_manifest(folder: Path, report: BuildReport) -> None:
    """An older build's state lists drafts with their titles and local paths: it goes."""
    if _old_manifest(folder) is not None:
        with contextlib.suppress(FileNotFoundError):
            (folder / OLD_MANIFEST).unlink()
            report.removed.append(OLD_MANIFEST)


PageJob = tuple[Project, Site, ArchiveEntry, ArchiveEntry | None, ArchiveEntry | None]

#: Below this many pages to render, worker processes cost more than they save.
_PARALLEL_FROM = 24


def _issue_bytes(job: PageJob) -> bytes:
    project, site, entry, older, newer = job
    return issue_page(project, site, entry, older, newer, "../../").encode("utf-8")


def _ignore_sigint() -> None:
    # Ctrl-C is the parent's to handle (one line, exit 130): workers must not print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_pages(jobs: list[PageJob]) -> Generator[bytes, None, None]:
    """Each job's page, in order. Many pages render in one worker process per CPU (a cold
    build of hundreds of issues is CPU-bound); results arrive in order, so a Ctrl-C keeps
    everything written before it."""
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < _PARALLEL_FROM or workers < 2 or "fork" not in mp.get_all_start_methods():
        for job in jobs:
            yield _issue_bytes(job)
        return
    pool = ProcessPoolExecutor(
        workers, mp_context=mp.get_context("fork"), initializer=_ignore_sigint
    )
    try:
        yield from pool.map(_issue_bytes, jobs, chunksize=4)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _not_found(project: Project, site: Site) -> bytes:
    # Served for any missing path, at any depth: its links must be absolute.
    return not_found_page(project, site, f"{site.public_url}/").encode("utf-8")


def _remove_stale(
    folder: Path, old: dict[str, Any], new: dict[str, Any], report: BuildReport
) -> None:
    """Pages of issues no longer published (their file was deleted): only files this build
    wrote before, never anything else in the folder."""
    for relative in sorted(set(old) - set(new)):
        parts = relative.split("/")
        if len(parts) != 3 or parts[0] != "issues" or parts[1] in ("", ".", ".."):
            continue  # only issues/<slug>/index.html pages, never a path out of the folder
        path = folder / relative
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            report.removed.append(relative)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only if empty
