"""Transports: where a batch of the neutral message goes (see `newsletter.sending.message`).

Every module in this folder defines one transport class and registers it with `@register`;
the registry imports them all, so a third transport (SES, Postmark ...) is one new file here
and nothing else. Code outside asks a transport what it can do (`capabilities`), never
what it is called:

- `max_batch`: most recipients per `send()` call;
- `keeps_ledger`: its sends write the per-recipient ledger (and so get the already-sent guard,
  the lease, `--resume`). A transport that delivers must keep it;
- `can_schedule`: it can deliver at a later time (`Message.send_at`) and cancel that;
- `has_sandbox`: it can validate without delivering (`Message.sandbox`, for `--dry-run`);
- `delivers`: it hands mail to someone who delivers it (the outbox only writes files);
- `reports_delivery`: its provider reports later what became of each message (SendGrid's
  Event Webhook: delivered, bounce). Without it (SMTP), the server's acceptance is the last
  word: it counts as delivered until a bounce says otherwise (see `sending.answers`);
- `suppression_lists`: it can list the provider's unsubscribes/bounces (for `sync`);
- `prepares`: `send(batch)` is `send_prepared(prepare(batch))`, where `prepare` does the CPU
  work without I/O and returns something small to pickle (the request's bytes): a big send
  prepares batches in worker processes and only posts them (see `PreparingTransport`).

A transport answers each `send(batch)` with one `Outcome` per recipient, in order.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from datetime import datetime

    from newsletter.project import Project
    from newsletter.sending.message import Batch, Recipient


@dataclass(frozen=True)
class Capabilities:
    max_batch: int
    keeps_ledger: bool
    can_schedule: bool = False
    has_sandbox: bool = False
    delivers: bool = True
    reports_delivery: bool = False
    suppression_lists: bool = False
    prepares: bool = False


@dataclass
class Outcome:
    """What became of one recipient's mail: `accepted`, `failed` or `uncertain`."""

    state: str
    message_id: str | None = None
    error: str | None = None
    #: The send must stop (bad key, unverified sender, bad payload, retries exhausted).
    fatal: bool = False
    attempts: int = 1
    #: Where it went, for a person reading (a file path, a host).
    where: str | None = None
    #: The receiving server refused the address itself for good (SMTP: 5xx at RCPT): a
    #: hard bounce, applied as the provider's bounce event would be.
    hard_bounce: bool = False
    #: It took the place of an earlier copy at `where` (the outbox, sending an issue again).
    replaced: bool = False


def outcome_runs(outcomes: Sequence[Outcome]) -> Iterator[tuple[Outcome, int]]:
    """Each outcome with how many times in a row it comes: a request answered as a whole
    (SendGrid) repeats one Outcome object for its 1000 readers, so counting runs is cheap."""
    for _, run in groupby(outcomes, key=id):
        same = list(run)
        yield same[0], len(same)


@dataclass(frozen=True)
class TransportSettings:
    """What the factory hands a transport besides the project: `[sending]` values and flags."""

    batch_size: int = 1000
    concurrency: int = 4
    max_retries: int = 5
    #: For the outbox: the folder (`--outbox DIR`); None: the project's `outbox/`.
    directory: Path | None = None
    #: One message for a waiting web request (a confirmation): few retries, fail fast.
    transactional: bool = False
    #: File name prefix for the outbox (test copies, transactional mail).
    prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Transport(Protocol):
    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: "accepted by SendGrid", "written to the outbox": what a handed-over recipient got.
    accepted_label: ClassVar[str]

    @property
    def where(self) -> str: ...

    def send(self, batch: Batch) -> list[Outcome]:
        """One outcome per recipient, in order. A recipient over a provider limit (see
        `refuse`) gets a failed outcome of their own; the others still go."""
        ...

    def refuse(self, recipient: Recipient) -> str | None:
        """Why this recipient cannot go through this transport (a provider limit), or None.
        For callers that must know before sending (a sequence step does not retry a
        refused reader); `send` makes the same check itself."""
        ...

    def close(self) -> None: ...


class SchedulingTransport(Transport, Protocol):
    """What a transport whose `capabilities.can_schedule` is true also has."""

    def create_schedule(self) -> str: ...

    def cancel_schedule(self, schedule_id: str) -> None: ...


class PreparingTransport(Transport, Protocol):
    """What a transport whose `capabilities.prepares` is true also has."""

    def prepare(self, batch: Batch) -> Any:
        """The batch made ready to go, no I/O (it may run in a forked worker process)."""
        ...

    def send_prepared(self, prepared: Any) -> list[Outcome]:
        """`send` of the batch `prepared` was made from."""
        ...


class SuppressionListTransport(Transport, Protocol):
    """What a transport whose `capabilities.suppression_lists` is true also has."""

    def suppressions(self, name: str, page_size: int) -> dict[str, datetime | None]:
        """Every address on the provider's list `name`, with when it was put there."""
        ...

    def lift_bounce(self, email: str) -> None:
        """Take `email` off the provider's bounce list (it took mail again)."""
        ...


class TransportClass(Protocol):
    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    accepted_label: ClassVar[str]

    @classmethod
    def unavailable(cls, project: Project) -> str | None:
        """Why this transport cannot be used now (a missing key), or None."""
        ...

    @classmethod
    def from_project(cls, project: Project, settings: TransportSettings) -> Transport: ...


_REGISTRY: dict[str, TransportClass] = {}
_T = TypeVar("_T")


def register(cls: _T) -> _T:
    """Class decorator: make a transport known by its `kind` (the `[sending] transport` value)."""
    _REGISTRY[cls.kind] = cls  # type: ignore[attr-defined,assignment]
    return cls


_loaded = False


def registry() -> dict[str, TransportClass]:
    """kind -> transport class, every module of this folder loaded."""
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return dict(_REGISTRY)


def transport_class(kind: str, *, where: str = "[sending] transport") -> TransportClass:
    known = registry()
    if kind not in known:
        raise ConfigError(f"{where} {kind!r} is not known; use one of: {', '.join(sorted(known))}")
    return known[kind]


def kinds_that(test: Callable[[Capabilities], bool]) -> list[str]:
    """The kinds whose capabilities pass `test` (for messages such as "only X can schedule")."""
    return sorted(kind for kind, cls in registry().items() if test(cls.capabilities))


def capabilities_of(kind: str) -> Capabilities | None:
    """A stored send's transport's capabilities (None for a kind no longer known)."""
    cls = registry().get(kind)
    return cls.capabilities if cls else None
