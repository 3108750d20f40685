"""The outbox: each recipient's complete message as an .eml file; nothing is delivered.

Chosen by `--outbox DIR`, by `[sending] transport = "outbox"`, or when the configured
transport cannot be used (no SendGrid key): then the factory says so. It keeps no ledger,
so looking at the messages never blocks the real send.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from newsletter.errors import SendError
from newsletter.sending.message import Batch, Recipient
from newsletter.sending.mime import copy_for, date_header
from newsletter.sending.transports import Capabilities, Outcome, TransportSettings, register
from newsletter.store.schema import CUSTOM_ARG_SUBSCRIBER, DeliveryState

if TYPE_CHECKING:
    from newsletter.project import Project

#: Kept in file names: letters and digits of any script (`jörg@müller.de` stays
#: readable), and `. _ @ + -`; anything else becomes `_`.
_UNSAFE = re.compile(r"[^\w.@+-]+")
#: The recipient id that names the file, if the recipient carries one.
FILE_ID_KEY = CUSTOM_ARG_SUBSCRIBER


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", unicodedata.normalize("NFC", text)).strip("._")[:80] or "recipient"


def write_replacing(
    directory: Path, stem: str, data: bytes, *, replace: bool = True
) -> tuple[Path, bool]:
    """Write DIR/STEM.eml whole (a temporary file, then a rename), replacing an earlier copy
    of the same message to the same person; (the path, whether one was replaced). Without
    `replace` an earlier file stays and this one is STEM-2.eml, -3 ... (single mails: each
    confirmation or forwarded reply is a message of its own); the name is claimed with a
    hard link, so two writers at once never take the same one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.eml"
    temporary = directory / f".{stem}.{uuid.uuid4().hex}.tmp"
    # os.open with 0o666: the umask decides the mode, as for any new file.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if replace:
            replaced = path.exists()
            os.replace(temporary, path)
            return path, replaced
        number = 1
        while True:
            try:
                os.link(temporary, path)  # fails if the name is taken: try the next one
                return path, False
            except FileExistsError:
                number += 1
                path = directory / f"{stem}-{number}.eml"
    finally:
        temporary.unlink(missing_ok=True)


def _refuse_file_in_the_way(directory: Path) -> None:
    """Before anything is claimed: a file where the folder (or one of its parents) would be
    makes every write fail, and each recipient would end up "uncertain"."""
    for path in (directory, *directory.parents):
        if path.exists():
            if not path.is_dir():
                raise SendError(
                    f"{path}: is a file, not a folder, so the outbox {directory} cannot be "
                    "written; move the file away or pass another folder with --outbox DIR"
                )
            return


@register
class OutboxTransport:
    """Writes each recipient's complete message as an .eml file; sends nothing."""

    kind: ClassVar[str] = "outbox"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch=1000, keeps_ledger=False, delivers=False
    )
    accepted_label: ClassVar[str] = "written to the outbox"

    def __init__(self, directory: Path, prefix: str = "", *, keep_each: bool = False) -> None:
        self.directory = directory
        self.prefix = prefix
        #: Single mails (confirmations, forwarded replies, answers): every one is kept.
        self.keep_each = keep_each
        self.written: list[Path] = []
        self._lock = threading.Lock()

    @classmethod
    def unavailable(cls, project: Project) -> str | None:
        return None

    @classmethod
    def from_project(cls, project: Project, settings: TransportSettings) -> OutboxTransport:
        directory = settings.directory or project.root / "outbox"
        _refuse_file_in_the_way(directory)
        return cls(
            directory,
            settings.prefix,
            keep_each=settings.transactional,
        )

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
        # Named by what was sent (the slug, a sequence step's) and to whom: sending
        # the same again replaces those files instead of piling up copies.
        what = safe_name(batch.message.categories[0]) if batch.message.categories else None
        for recipient in batch.recipients:
            data, msgid, _ = copy_for(batch.message, recipient, date=date)
            sid = recipient.ids.get(FILE_ID_KEY)
            parts = (what, sid, safe_name(recipient.email))
            # A send's copy (and a test copy) replaces an earlier one; a single mail not.
            path, replaced = write_replacing(
                self.directory,
                self.prefix + "-".join(p for p in parts if p),
                data,
                replace=not self.keep_each,
            )
            paths.append(path)
            outcomes.append(
                Outcome(
                    DeliveryState.ACCEPTED, message_id=msgid, where=str(path), replaced=replaced
                )
            )
        with self._lock:
            self.written.extend(paths)
        return outcomes
