"""The archive's HTML pages: the index, an issue's web version and the 404 page.

An issue's web version is the email as rendered for sending (the project's templates
included), for an anonymous reader: personal fields show their defaults, and the email's
footer ("you receive this email because…", the unsubscribe link) is replaced by the
archive's: how to subscribe, previous/next links, the postal address, the imprint and the
privacy policy. Rendering costs tens of milliseconds, so each version is cached until the
issue file, a template or the config changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from newsletter.archive.catalog import ArchiveEntry, IssueFile
from newsletter.archive.links import Site
from newsletter.i18n import LANGUAGES, N_, format_date, texts
from newsletter.mail_templates import page_environment, rendered
from newsletter.optin import consent_text
from newsletter.project import Project, builtin_templates_dir
from newsletter.render import render_file

#: The unsubscribe link of the web version: a marker, removed with the footer.
UNSUBSCRIBE_MARKER = "#nl-web-unsubscribe"

_lock = threading.Lock()
_versions: dict[tuple[object, ...], tuple[str, str]] = {}
_pages: dict[tuple[object, ...], str] = {}


#: Set by `templates_frozen()`: one fingerprint for a whole static build instead of a walk
#: of the template folders per page.
_frozen: ContextVar[tuple[object, ...] | None] = ContextVar("frozen_templates", default=None)


#: The archive's texts as `t.<name>` ({name} filled in), for templates that a project copied
#: before the built-in ones said `{{ _("Archive") }}`; the wording is the catalogue's.
ARCHIVE_TEXT: dict[str, str] = {
    "archive_title": N_("All issues"),
    "archive_lead": N_("Every issue of “{name}” so far, to read on the web."),
    "empty": N_("No issue has been published yet."),
    "back_to_archive": N_("All issues"),
    "previous": N_("Previous issue"),
    "next": N_("Next issue"),
    "subscribe_heading": N_("Subscribe to “{name}”"),
    "web_version_note": N_("You are reading the web version."),
    "subscribe_lead": N_(
        "Sign up to get every new issue by email. We first send you an email to confirm; you can unsubscribe at any time with one click."
    ),
    "email_label": N_("Email address"),
    "name_label": N_("First name (optional)"),
    "subscribe_button": N_("Subscribe"),
    "imprint": N_("Imprint"),
    "feed": N_("Feed (Atom)"),
    "site_nav": N_("Site"),
    "nav_archive": N_("Archive"),
    "nav_feed": N_("Feed"),
    "nav_subscribe": N_("Subscribe"),
    "pager_nav": N_("More issues"),
    "not_found_title": N_("Page not found"),
    "not_found_lead": N_("This page does not exist, or it has not been published (yet)."),
}


def archive_text(language: str, newsletter_name: str) -> dict[str, str]:
    """The archive's texts in `language`, the newsletter's name filled in."""
    return texts(language, ARCHIVE_TEXT, name=newsletter_name)


@contextmanager
def templates_frozen(project: Project) -> Iterator[tuple[object, ...]]:
    """Within the block, the templates count as unchanged (a build takes seconds)."""
    token = _frozen.set(None)
    fingerprint = templates_fingerprint(project)
    _frozen.set(fingerprint)
    try:
        yield fingerprint
    finally:
        _frozen.reset(token)


def templates_fingerprint(project: Project) -> tuple[object, ...]:
    """Every template file the pages may use, with its mtime: any edit changes it."""
    frozen = _frozen.get()
    if frozen is not None:
        return frozen
    found: list[tuple[str, int]] = []
    for folder in (project.templates_dir, builtin_templates_dir()):
        try:
            for path in sorted(folder.rglob("*")):
                found.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(found)


def config_fingerprint(project: Project) -> str:
    return repr(sorted(project.config.sections.items()))


def _render(project: Project, name: str, language: str, **context: Any) -> str:
    """`templates/web/NAME` rendered; a broken override of the project's own is a
    RenderError naming its file and line (not a traceback, not a half-built site)."""
    return rendered(name, lambda: _render_unchecked(project, name, language, **context))


def _render_unchecked(project: Project, name: str, language: str, **context: Any) -> str:
    env = page_environment(project, language, archive=True)
    config = project.config
    return env.get_template(f"web/{name}").render(
        t=archive_text(language, config.name),
        lang=language,
        newsletter_name=config.name,
        postal_address=config.postal_address,
        imprint_url=config.section("newsletter").get("imprint_url"),
        privacy_url=config.section("newsletter").get("privacy_url"),
        theme=config.theme,
        # The sign-up form shows the consent text whose hash the sign-up records.
        consent_text=consent_text(config, language),
        require_checkbox=config.section("subscribe")["require_checkbox"],
        **context,
    )


def _language(project: Project, language: str | None) -> str:
    return language if language in LANGUAGES else project.config.language


def _remember(cache: dict[tuple[object, ...], Any], key: tuple[object, ...], value: Any) -> None:
    with _lock:
        if len(cache) > 2048:  # bounded: a long-running server sees many edits
            cache.clear()
        cache[key] = value


def web_version(project: Project, file: IssueFile) -> tuple[str, str]:
    """(the whole email as an anonymous reader's HTML, the issue's content HTML)."""

    key = (str(file.path), file.stamp, templates_fingerprint(project), config_fingerprint(project))
    with _lock:
        cached = _versions.get(key)
    if cached is not None:
        return cached
    html, _text = render_file(project, file.path, inline_css=False).personalize(
        {}, UNSUBSCRIBE_MARKER
    )
    html = _without_reply_prompt(html)
    result = (html, _content_of(html))
    _remember(_versions, key, result)
    return result


def _without_reply_prompt(html: str) -> str:
    """The email's "just reply to this email" line means nothing on the web or in a feed."""
    if "nl-reply-prompt" not in html:
        return html
    # deferred: lxml.html costs 20 ms at start-up
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    for element in doc.find_class("nl-reply-prompt"):
        element.drop_tree()
    return lxml.html.tostring(doc, encoding="unicode", doctype="<!doctype html>")


def _content_of(html: str) -> str:
    """The issue's own content (the `nl-content` cell), for feeds."""
    # deferred: lxml.html costs 20 ms at start-up
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    cells = doc.find_class("nl-content")
    if not cells:
        return ""
    cell = cells[0]
    inner = cell[0] if len(cell) == 1 and cell[0].tag == "div" else cell
    parts = [inner.text or ""]
    parts += [lxml.html.tostring(child, encoding="unicode") for child in inner]
    return "".join(parts).strip()


def issue_page(
    project: Project,
    site: Site,
    entry: ArchiveEntry,
    older: ArchiveEntry | None,
    newer: ArchiveEntry | None,
    prefix: str,
    *,
    archive: bool = True,
) -> str:
    """The web version of `entry`, with the archive's header and footer (without links to
    the archive and its feeds when `archive` is off)."""
    html, _content = web_version(project, entry.file)
    key = (
        html,
        site,
        prefix,
        entry.day,
        older.slug if older else None,
        older.title if older else None,
        newer.slug if newer else None,
        newer.title if newer else None,
        archive,
        templates_fingerprint(project),
        config_fingerprint(project),  # the footer's links (imprint, privacy) are config
    )
    with _lock:
        cached = _pages.get(key)
    if cached is not None:
        return cached
    language = _language(project, entry.language)
    context = {
        "links": _links(site, prefix, subscribe="#subscribe"),
        "issue_url": site.issue_url(entry.slug),
        "subscribe_action": site.subscribe_action,
        "date": format_date(entry.day, language),
        "date_iso": entry.day.isoformat(),
        "older": _item(site, older, prefix, language) if older else None,
        "newer": _item(site, newer, prefix, language) if newer else None,
        "preheader": entry.preheader,
        "archive": archive,
    }
    page = _dress(
        html,
        head=_render(project, "archive_head.html", language, **context),
        top=_render(project, "archive_issue_top.html", language, **context),
        footer=_render(project, "archive_issue_footer.html", language, **context),
        own_url=f"{project.config.base_url}/issues/{entry.slug}",
    )
    _remember(_pages, key, page)
    return page


def _dress(html: str, *, head: str, top: str, footer: str, own_url: str) -> str:
    """Put the archive's parts into the email's HTML: `head` into <head>, `top` first in
    the body, `footer` where the email's footer was (which goes, with its unsubscribe link
    and "you receive this email because…" line)."""
    # deferred: lxml.html costs 20 ms at start-up
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    for element in lxml.html.fragments_fromstring(head):
        doc.head.append(element)
    body = doc.body
    holder = next(iter(doc.find_class("nl-body")), body)
    footers = doc.find_class("nl-footer")
    new_footer = lxml.html.fragment_fromstring(footer)
    if footers:
        footers[0].addprevious(new_footer)
        for old in footers:
            old.drop_tree()
    else:
        # A project's own layout without the nl-footer class: drop its unsubscribe links.
        for link in body.iterfind(".//a"):
            if link.get("href") == UNSUBSCRIBE_MARKER:
                link.drop_tree()
        holder.append(new_footer)
    for element in doc.find_class("nl-view-online"):  # the masthead's link with its " · "
        element.drop_tree()
    for link in body.iterfind(".//a"):
        if link.get("href") == own_url:  # "view in browser" on the page itself
            link.drop_tree()
    masthead_dated = any(e.text_content().strip() for e in doc.find_class("nl-masthead-meta"))
    # The email itself is the page's main content; the site header goes before it.
    main = lxml.html.Element("main")
    if holder is body:
        main.extend(list(body))
        body.append(main)
        holder = main
    else:
        holder.addprevious(main)
        main.append(holder)
    position = 0
    for element in lxml.html.fragments_fromstring(top):
        if element.tag == "header":
            main.addprevious(element)
        elif masthead_dated and "nl-archive-top" in element.get("class", ""):
            continue  # one date on the page: the masthead's
        else:
            holder.insert(position, element)
            position += 1
    return lxml.html.tostring(doc, encoding="unicode", doctype="<!doctype html>") + "\n"


def _links(site: Site, prefix: str, *, subscribe: str) -> dict[str, str]:
    return {
        "index": site.index_path(prefix),
        "feed": f"{prefix}feed.xml",
        "json_feed": f"{prefix}feed.json",
        "subscribe": subscribe,  # the form on the page, or the sign-up page
    }


def _item(site: Site, entry: ArchiveEntry, prefix: str, language: str) -> dict[str, str]:
    return {
        "title": entry.title,
        "href": site.issue_path(entry.slug, prefix),
        "date": format_date(entry.day, language),
        "date_iso": entry.day.isoformat(),
        "preheader": entry.preheader,
    }


def index_page(project: Project, site: Site, entries: list[ArchiveEntry], prefix: str) -> str:
    """The list of published issues, newest first."""
    language = project.config.language
    key = (
        "index",
        site,
        prefix,
        tuple((e.file, e.published_at) for e in entries),
        templates_fingerprint(project),
        config_fingerprint(project),  # serve reads an edited config (privacy_url, consent)
    )
    with _lock:
        cached = _pages.get(key)
    if cached is not None:
        return cached
    page = _render(
        project,
        "archive_index.html",
        language,
        title=archive_text(language, project.config.name)["archive_title"],
        links=_links(site, prefix, subscribe="#subscribe"),
        canonical=f"{site.public_url}/",
        archive=True,
        subscribe_action=site.subscribe_action,
        items=[_item(site, e, prefix, language) for e in entries],
    )
    _remember(_pages, key, page)
    return page


def not_found_page(project: Project, site: Site, prefix: str) -> str:
    """The 404 page, in the newsletter's style and language."""
    language = project.config.language
    return _render(
        project,
        "archive_404.html",
        language,
        title=archive_text(language, project.config.name)["not_found_title"],
        links=_links(site, prefix, subscribe=site.subscribe_action),
        canonical=None,
        archive=True,
    )
