"""The one place that chooses a transport, from the project, the flags and the environment.

Every command that mails goes through `choose_transport`: `send` (bulk, `--test`,
`--schedule`), `cancel`, `sync` and the transactional mail (double-opt-in confirmations).

- `--outbox DIR` (or `outbox_dir`): the outbox, in that folder.
- `[sending] transport = "..."`: that transport; if it cannot be used (no key, no host),
  a one-line error says why.
- nothing configured: SendGrid if it can be used (SENDGRID_API_KEY set), else a transport
  that delivers nothing (the outbox), with a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import ConfigError
from newsletter.sending.transports import (
    Transport,
    TransportSettings,
    registry,
    transport_class,
)

if TYPE_CHECKING:
    from newsletter.project import Project

#: The transport of a project that names none (what the tool always did).
DEFAULT_KIND = "sendgrid"


@dataclass
class Chosen:
    transport: Transport
    #: Why a transport other than the configured one was taken (for one line of output).
    note: str | None = None


def settings_for(project: Project, **overrides: object) -> TransportSettings:
    section = project.config.section("sending")
    values = {
        "batch_size": section["batch_size"],
        "concurrency": section["concurrency"],
        "max_retries": section["max_retries"],
        **overrides,
    }
    return TransportSettings(**values)  # type: ignore[arg-type]


def dead_links_refusal(project: Project) -> str | None:
    """Why no mail may reach readers yet, or None: readers must be able to leave (RFC 8058,
    CAN-SPAM), and without `base_url` their unsubscribe links would lead nowhere."""
    if project.config.base_url is not None:
        return None
    return (
        f"{project.config.path}: [newsletter] base_url is not set, so the unsubscribe links "
        "would lead nowhere; set base_url to where `newsletter serve` is reachable"
    )


def batch_limits(project: Project, transport: Transport) -> tuple[int, int]:
    """(recipients per batch, batches in flight at once) for a send through `transport`:
    `[sending]`'s, the batch clamped to what the transport takes in one request."""
    section = project.config.section("sending")
    batch_size = max(1, min(int(section["batch_size"]), transport.capabilities.max_batch))
    return batch_size, max(1, int(section["concurrency"]))


def choose_transport(
    project: Project,
    *,
    outbox_dir: Path | None = None,
    transactional: bool = False,
    prefix: str = "",
) -> Chosen:
    settings = settings_for(
        project, directory=outbox_dir, transactional=transactional, prefix=prefix
    )
    classes = registry()
    if outbox_dir is not None:
        local = [cls for cls in classes.values() if not cls.capabilities.delivers]
        return Chosen(local[0].from_project(project, settings))
    configured = project.config.section("sending")["transport"]
    cls = transport_class(configured or DEFAULT_KIND)
    why = cls.unavailable(project)
    if why is None:
        return Chosen(cls.from_project(project, settings))
    if configured:
        raise ConfigError(f'[sending] transport = "{configured}" cannot be used: {why}')
    fallback = next(c for c in classes.values() if not c.capabilities.delivers)
    transport = fallback.from_project(project, settings)
    return Chosen(
        transport,
        f"{why}, so messages go to the outbox folder {transport.where} "
        f"(set it, or [sending] transport, to deliver)",
    )
