"""Where the archive's pages point. Under `newsletter serve` links are absolute paths under
base_url's path (`/issues/<slug>`, or `/newsletter/issues/<slug>` behind a reverse proxy at
/newsletter); in the static site they are relative to the page (`../../feed.xml`), so the
folder works wherever it is hosted. Feeds and the sitemap need absolute URLs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from newsletter.project import serve_link


@dataclass(frozen=True)
class Site:
    """How one rendering of the archive links: served or static, and its public URL."""

    static: bool
    public_url: str  # absolute, no trailing slash: where the archive is reachable
    subscribe_action: str  # where the sign-up form posts
    root: str  # how a page at the top links to the top: "" (static), "/" or "/newsletter/"
    id_host: str  # the host in the feed's tag: URIs (from base_url, so ids never change)

    def issue_url(self, slug: str) -> str:
        """The absolute URL of an issue page (feeds, sitemap, canonical links)."""
        return f"{self.public_url}{self.issue_path(slug, '/')}"

    def issue_path(self, slug: str, prefix: str) -> str:
        """An issue's link from a page whose way back to the root is `prefix`."""
        if self.static:
            return f"{prefix}issues/{slug}/"
        return f"{prefix}issues/{slug}"

    def index_path(self, prefix: str) -> str:
        return prefix or "./"


def tag_uri(host: str, year: int, slug: str) -> str:
    """RFC 4151 tag URI: stable as long as the host and the slug stay."""
    return f"tag:{host},{year}:{slug}"


def host_of(url: str) -> str:
    return urlsplit(url).hostname or "localhost"


def served_site(base_url: str) -> Site:
    base = base_url.rstrip("/")
    return Site(
        static=False,
        public_url=base,
        subscribe_action=serve_link(base, "subscribe"),
        root=serve_link(base, ""),
        id_host=host_of(base),
    )


def static_site(base_url: str, site_url: str | None) -> Site:
    base = base_url.rstrip("/")
    return Site(
        static=True,
        public_url=(site_url or base).rstrip("/"),
        subscribe_action=serve_link(base, "subscribe", full_url=True),
        root="",
        id_host=host_of(base),
    )
