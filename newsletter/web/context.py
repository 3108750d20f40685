"""What every route module of `newsletter serve` shares: the project, its database and the
helpers that answer with one of the pages (message, invalid link, gone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from starlette.responses import HTMLResponse

from newsletter.project import Config, Project
from newsletter.sequences.hooks import current_project
from newsletter.store import schema
from newsletter.web import pages

# Pages must never be cached by a proxy: they answer for one person's token.
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class Context:
    """The app's project and database, handed to each module's `routes(ctx)`."""

    started: Project  # the project as it was when serve started
    engine: Engine

    @property
    def project(self) -> Project:
        """The project with newsletter.toml as it is on disk now: an edit (a colour, the
        archive switched off) shows on the next page without a restart, as it does for the
        sequences; a file broken mid-edit keeps the last good one."""
        return current_project(self.started)

    @property
    def config(self) -> Config:
        return self.project.config

    def link(self, path: str) -> str:
        """`path` of this app ("unsubscribe/TOKEN") as a page must link to it: under
        base_url's path when serve runs behind a reverse proxy at one."""
        return self.config.serve_link(path)

    def page(
        self, name: str, language: str | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        return HTMLResponse(
            pages.render(self.project, name, language, **context),
            status_code=status,
            headers=NO_STORE,
        )

    def message(self, language: str | None, title_key: str, lead: str, status: int) -> HTMLResponse:
        t = self.text(language)
        return self.page(
            "page.html",
            language,
            status,
            title=t[title_key],
            lead=lead,
            form_action=None,
            secondary_action=None,
        )

    def button_page(
        self, language: str | None, title: str, lead: str, action: str, button: str, **more: Any
    ) -> HTMLResponse:
        """page.html with one button that POSTs to `action` (this app's path, `link`): what a
        link from a mail shows before it changes anything."""
        return self.page(
            "page.html",
            language,
            title=title,
            lead=lead,
            form_action=self.link(action),
            button=button,
            secondary_action=None,
            **more,
        )

    def text(self, language: str | None) -> dict[str, str]:
        """The wording for `language`, else the config's language."""
        return pages.text(language, self.config.language)

    def invalid_link(
        self, language: str | None = None, lead_key: str = "invalid_lead"
    ) -> HTMLResponse:
        return self.message(language, "invalid_title", self.text(language)[lead_key], 400)

    def gone(self, language: str | None) -> HTMLResponse:
        return self.message(language, "gone_title", self.text(language)["gone_lead"], 410)

    def issue_language(self, issue_id: int | None) -> str | None:
        if issue_id is None:
            return None
        with self.engine.connect() as conn:
            return conn.execute(
                select(schema.issues.c.language).where(schema.issues.c.id == issue_id)
            ).scalar()
