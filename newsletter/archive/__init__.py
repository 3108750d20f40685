"""The newsletter as a publication: the web archive of published issues, its Atom and
JSON feeds, and the same archive as a static site (`newsletter archive build`).

The core never imports `newsletter.web` or click: `newsletter serve` (web/archive.py) and
the CLI call these functions.

- `catalog`: which issues are shown (the publish rule of `store.issues`, plus their files);
- `pages`: the index, an issue's web version, the 404 page (cached renders);
- `feeds`: feed.xml (feedgen) and feed.json;
- `site`: the static export, written idempotently.
"""

from __future__ import annotations

from newsletter.archive.catalog import ArchiveEntry, archive_entries, neighbours
from newsletter.archive.links import Site, served_site, static_site

__all__ = ["ArchiveEntry", "Site", "archive_entries", "neighbours", "served_site", "static_site"]
