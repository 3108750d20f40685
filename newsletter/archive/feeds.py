"""The archive's feeds: Atom 1.0 (built with feedgen) and JSON Feed 1.1 (a plain dict).

Entries carry the issue's full content as HTML, as an anonymous reader sees it; ids are
tag URIs (`tag:news.example.com,2024:meta-ki-creator`) that never change once published.
Their dates are the archive's (`ArchiveEntry.day`: the issue's own `date:`, else the day
it was published), as the pages show them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from newsletter.archive.catalog import ArchiveEntry
from newsletter.archive.links import Site, tag_uri
from newsletter.archive.pages import (
    archive_text,
    config_fingerprint,
    templates_fingerprint,
    web_version,
)
from newsletter.project import Project

#: The feed's date while nothing is published (a fixed one keeps the bytes stable).
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

#: How many of the newest issues the feeds carry (readers keep older ones themselves).
FEED_ENTRIES = 20


def _feed_id(site: Site) -> str:
    return f"tag:{site.id_host},2000:feed"


_cache: dict[tuple[object, ...], bytes] = {}


def _cached(
    kind: str, project: Project, site: Site, entries: list[ArchiveEntry], make: Any
) -> bytes:
    """A feed is rebuilt only when its entries, their files or the templates change."""
    key = (
        kind,
        site,
        tuple((e.file, e.published_at) for e in entries[:FEED_ENTRIES]),
        templates_fingerprint(project),
        config_fingerprint(project),
    )
    found = _cache.get(key)
    if found is None:
        found = make(project, site, entries)
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = found
    return found


def atom_feed(project: Project, site: Site, entries: list[ArchiveEntry]) -> bytes:
    """feed.xml: the newest issues, newest first, with their full HTML content."""
    return _cached("atom", project, site, entries, _atom_feed)


def json_feed(project: Project, site: Site, entries: list[ArchiveEntry]) -> bytes:
    """feed.json: JSON Feed 1.1 (https://jsonfeed.org/version/1.1) of the same entries."""
    return _cached("json", project, site, entries, _json_feed)


def _feed_content(project: Project, site: Site, entry: ArchiveEntry) -> str:
    """The issue's content HTML with absolute links: a feed reader shows it away from the
    page, where `#fn1` (a footnote) or a relative link would lead nowhere."""
    # deferred: lxml.html costs 20 ms at start-up
    import lxml.html

    _html, content = web_version(project, entry.file)
    if not content:
        return content
    holder = lxml.html.fragment_fromstring(content, create_parent="div")
    holder.make_links_absolute(site.issue_url(entry.slug), resolve_base_href=False)
    parts = [holder.text or ""]
    parts += [lxml.html.tostring(child, encoding="unicode") for child in holder]
    return "".join(parts)


def _atom_feed(project: Project, site: Site, entries: list[ArchiveEntry]) -> bytes:
    # deferred: feedgen.feed costs 33 ms at start-up
    from feedgen.feed import FeedGenerator

    config = project.config
    shown = entries[:FEED_ENTRIES]
    feed = FeedGenerator()
    feed.id(_feed_id(site))
    feed.title(config.name)
    feed.subtitle(archive_text(config.language, config.name)["archive_lead"])
    feed.language(config.language)  # xml:lang on <feed>
    feed.author({"name": config.from_name})
    feed.link(href=f"{site.public_url}/", rel="alternate", type="text/html")
    feed.link(href=f"{site.public_url}/feed.xml", rel="self", type="application/atom+xml")
    feed.generator("newsletter")
    # The newest issue's date, not "now": an unchanged archive gives the same bytes.
    feed.updated(shown[0].moment if shown else _EPOCH)
    for entry in reversed(shown):  # feedgen prepends: add oldest first
        content = _feed_content(project, site, entry)
        item = feed.add_entry()
        item.id(tag_uri(site.id_host, entry.published_at.year, entry.slug))
        item.title(entry.title)
        item.link(href=site.issue_url(entry.slug), rel="alternate", type="text/html")
        item.published(entry.moment)
        item.updated(entry.moment)
        if entry.preheader:
            item.summary(entry.preheader)
        item.content(content, type="html")
    return bytes(feed.atom_str(pretty=True))


def _json_feed(project: Project, site: Site, entries: list[ArchiveEntry]) -> bytes:
    config = project.config
    items: list[dict[str, Any]] = []
    for entry in entries[:FEED_ENTRIES]:
        content = _feed_content(project, site, entry)
        item: dict[str, Any] = {
            "id": tag_uri(site.id_host, entry.published_at.year, entry.slug),
            "url": site.issue_url(entry.slug),
            "title": entry.title,
            "content_html": content,
            "date_published": entry.moment.isoformat(),
            "language": entry.language,
        }
        if entry.preheader:
            item["summary"] = entry.preheader
        items.append(item)
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": config.name,
        "home_page_url": f"{site.public_url}/",
        "feed_url": f"{site.public_url}/feed.json",
        "language": config.language,
        "authors": [{"name": config.from_name}],
        "items": items,
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
