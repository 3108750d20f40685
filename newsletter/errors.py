"""The one exception family.

Every message names the file, line or address involved and says how to fix it,
because the CLI prints it as a single line with no traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.exc import DBAPIError


class NewsletterError(Exception):
    """A problem the user can fix. The CLI prints `str(error)` and exits 1."""


def located(path: Path | str, line: int | None, message: str) -> str:
    """Format `file:line: message`, the shape every located error uses."""
    where = str(path) if line is None else f"{path}:{line}"
    return f"{where}: {message}"


def database_error(exc: DBAPIError) -> str:
    """A database driver's error as one line, without the SQL statement or its parameters
    (they may hold subscribers' addresses). Here, not in the store, so the CLI's error edge
    can word one without importing SQLAlchemy."""
    return " ".join(str(exc.orig).split())


class ConfigError(NewsletterError):
    """newsletter.toml is missing, unreadable or invalid."""


class IssueError(NewsletterError):
    """An issue file has bad front matter, Markdown or template syntax."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        super().__init__(located(path, line, message))
        self.path = Path(path)
        self.line = line
        self.reason = message


class RenderError(IssueError):
    """A template (built-in or the project's) failed to render."""


class StoreError(NewsletterError):
    """The subscriber database refused an operation (bad address, unknown subscriber...)."""


class ImportFileError(StoreError):
    """A subscriber import file cannot be read at all (single bad rows are rejects, not errors)."""


class SendError(NewsletterError):
    """A send could not start or had to stop; the message says how to resume."""


class SendCancelled(SendError):
    """`newsletter cancel` asked this send to stop: nothing more is claimed or sent."""


class TransportError(SendError):
    """The mail transport (SendGrid or the outbox) failed."""


class TokenError(NewsletterError):
    """A signed token is forged, altered or expired."""
