"""What the preview shows: one render of the issue through the real pipeline, or the error.

`render_snapshot` is the only place the preview touches the rendering pipeline
(`load_issue` -> `render_issue` -> `personalize`), so the preview shows exactly what
`build` and `send` produce. Nothing here knows about HTTP.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from newsletter import tokens
from newsletter.check import check_issue
from newsletter.errors import ConfigError, IssueError, NewsletterError
from newsletter.issue import load_issue
from newsletter.project import CONFIG_NAME, Project
from newsletter.render import SAMPLE_SUBSCRIBER, render_issue
from newsletter.store.engine import project_engine
from newsletter.store.subscribers import find_subscriber

# tomllib says "(at line 3, column 7)"; the page shows that line like any other.
_TOML_LINE = re.compile(r"\(at line (\d+)")


@dataclass(frozen=True)
class Finding:
    """One `check` finding, as the page lists it."""

    severity: str
    message: str
    where: str


@dataclass(frozen=True)
class Problem:
    """Why the issue cannot be shown right now: the file, the line and what is wrong."""

    path: str
    line: int | None
    reason: str

    @property
    def where(self) -> str:
        return self.path if self.line is None else f"{self.path}, line {self.line}"


@dataclass(frozen=True)
class Snapshot:
    """Everything the page shows, ready for JSON. `error` set means the last save broke the
    issue; the other fields then still hold the last good render so the author keeps context."""

    version: int = 0
    from_name: str = ""
    from_email: str = ""
    to: str = ""
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    findings: list[Finding] = field(default_factory=list)
    error: Problem | None = None
    render_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["error"] = (
            None if self.error is None else {**asdict(self.error), "where": self.error.where}
        )
        return data


def _relative(path: Path | str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def problem_from(exc: Exception, project_root: Path, issue_path: Path) -> Problem:
    """Turn a pipeline error into file + line + reason for the page."""
    if isinstance(exc, IssueError):
        return Problem(_relative(exc.path, project_root), exc.line, exc.reason)
    if isinstance(exc, ConfigError):
        message = str(exc)
        config = project_root / CONFIG_NAME
        prefix = f"{config}: "
        reason = message[len(prefix) :] if message.startswith(prefix) else message
        match = _TOML_LINE.search(message)
        return Problem(CONFIG_NAME, int(match.group(1)) if match else None, reason)
    if isinstance(exc, OSError):
        return Problem(_relative(issue_path, project_root), None, exc.strerror or str(exc))
    if isinstance(exc, NewsletterError):
        return Problem(_relative(issue_path, project_root), None, str(exc))
    # Not a user error: still shown, never fatal, so the next save can recover.
    return Problem(_relative(issue_path, project_root), None, f"{type(exc).__name__}: {exc}")


def resolve_subscriber(project: Project, email: str) -> dict[str, Any]:
    """The template context of the subscriber `--as` names; a one-line error if unknown."""

    found = find_subscriber(project_engine(project), email)
    if found is None:
        raise NewsletterError(
            f"{email}: no such subscriber in {project.database_url.split('://')[0]} database; "
            "check `newsletter subscribers list` or leave out --as to use the sample subscriber"
        )
    return found.template_context()


def render_snapshot(
    project_root: Path, issue_path: Path, subscriber: dict[str, Any] | None, version: int
) -> Snapshot:
    """Render the issue for `subscriber` (default: the sample subscriber).

    Reloads newsletter.toml every time, because the author may be editing it too.
    Raises `NewsletterError` (or OSError for a vanished file) when the issue is broken.
    """

    started = time.perf_counter()
    project = Project.load(project_root)
    config = project.config
    person = dict(subscriber if subscriber is not None else SAMPLE_SUBSCRIBER)
    issue = load_issue(project, issue_path)
    rendered = render_issue(project, issue)
    # A link naming nobody: the preview is the author's, and no token shows a row id.
    unsubscribe = tokens.unsubscribe_url(
        config.base_url, None, None, key=tokens.secret_key(required=False)
    )
    html, text = rendered.personalize(person, unsubscribe)
    return Snapshot(
        version=version,
        from_name=config.from_name,
        from_email=config.from_email,
        to=str(person.get("email") or ""),
        subject=rendered.subject,
        preheader=rendered.preheader or "",
        html=html,
        text=text,
        render_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def check_findings(project_root: Path, issue_path: Path) -> list[Finding]:
    """`newsletter check`'s findings for the issue, for the list beside the email."""

    project = Project.load(project_root)
    findings = []
    for finding in check_issue(project, issue_path):
        path = getattr(finding, "path", None)
        line = getattr(finding, "line", None)
        where = _relative(path, project_root) if path else ""
        if where and line:
            where = f"{where}, line {line}"
        severity, message = str(finding.severity), str(finding.message)
        if finding.before_sending:  # a draft may lack it; `check` and `send` insist
            severity, message = "warning", f"needed before sending: {message}"
        findings.append(Finding(severity, message, where))
    return findings


class PreviewState:
    """The current snapshot, refreshed from worker threads; one refresh at a time."""

    def __init__(
        self, project_root: Path, issue_path: Path, subscriber: dict[str, Any] | None = None
    ):
        self.project_root = project_root
        self.issue_path = issue_path
        self.subscriber = subscriber
        self.snapshot = Snapshot()
        self.renders = 0  # how many times the pipeline ran (bursts of saves count once)
        self._lock = threading.Lock()

    def refresh(self) -> Snapshot:
        """Render again; on failure keep the last good content and attach the error.

        A template added to or removed from the project's templates/ is picked up by
        `render.template_environment`, whose cache key lists those files.
        """
        with self._lock:
            version = self.snapshot.version + 1
            self.renders += 1
            try:
                snapshot = render_snapshot(
                    self.project_root, self.issue_path, self.subscriber, version
                )
                snapshot = replace(snapshot, findings=self.snapshot.findings)
            except Exception as exc:  # the server must survive any broken save
                problem = problem_from(exc, self.project_root, self.issue_path)
                snapshot = replace(self.snapshot, version=version, error=problem)
            self.snapshot = snapshot
            return snapshot

    def refresh_findings(self) -> Snapshot | None:
        """Run `check` for the list beside the email; None when the issue is broken anyway."""
        with self._lock:
            if self.snapshot.error is not None:
                return None
            try:
                findings = check_findings(self.project_root, self.issue_path)
            except Exception as exc:
                problem = problem_from(exc, self.project_root, self.issue_path)
                findings = [Finding("error", problem.reason, problem.where)]
            self.snapshot = replace(
                self.snapshot, version=self.snapshot.version + 1, findings=findings
            )
            return self.snapshot
