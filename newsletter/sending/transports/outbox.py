"""The outbox: each recipient's complete message as an .eml file; nothing is delivered.

Chosen by `--outbox DIR`, by `[sending] transport = "outbox"`, or when the configured
transport cannot be used (no SendGrid key): then the factory says so. It keeps no ledger,
so looking at the messages never blocks the real send.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from newsletter.sending.message import Batch, Recipient
from newsletter.sending.mime import copy_for, date_header
from newsletter.sending.transports import Capabilities, Outcome, TransportSettings, register
from newsletter.store.schema import CUSTOM_ARG_SUBSCRIBER, DeliveryState

if TYPE_CHECKING:
    from newsletter.project import Project

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
#: The recipient id that names the file, if the recipient carries one.
FILE_ID_KEY = CUSTOM_ARG_SUBSCRIBER


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:80] or "recipient"


def write_new(directory: Path, stem: str, data: bytes) -> Path:
    """Write DIR/STEM.eml, never overwriting: STEM-2.eml etc. if taken."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = directory / (f"{stem}.eml" if n == 1 else f"{stem}-{n}.eml")
        try:
            with open(path, "xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            n += 1


@register
class OutboxTransport:
    """Writes each recipient's complete message as an .eml file; sends nothing."""

    kind: ClassVar[str] = "outbox"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch=1000, keeps_ledger=False, delivers=False
    )
    accepted_label: ClassVar[str] = "written to the outbox"

    def __init__(self, directory: Path, prefix: str = "") -> None:
        self.directory = directory
        self.prefix = prefix
        self.written: list[Path] = []
        self._lock = threading.Lock()

    @classmethod
    def unavailable(cls, project: Project) -> str | None:
        return None

    @classmethod
    def from_project(cls, project: Project, settings: TransportSettings) -> OutboxTransport:
        return cls(settings.directory or project.root / "outbox", settings.prefix)

    @property
    def where(self) -> str:
        return str(self.directory)

    def refuse(self, recipient: Recipient) -> str | None:
        return None

    def close(self) -> None:
        pass

    def send(self, batch: Batch) -> list[Outcome]:
        date = date_header()
        outcomes = []
        paths = []
        for recipient in batch.recipients:
            data, msgid, _ = copy_for(batch.message, recipient, date=date)
            sid = recipient.ids.get(FILE_ID_KEY)
            stem = self.prefix + "-".join(x for x in (sid, safe_name(recipient.email)) if x)
            path = write_new(self.directory, stem, data)
            paths.append(path)
            outcomes.append(Outcome(DeliveryState.ACCEPTED, message_id=msgid, where=str(path)))
        with self._lock:
            self.written.extend(paths)
        return outcomes
