"""`sequences run`: send every step that is due, exactly once per person, crash-safe.

One run, per configured sequence:
1. Runs whose process is gone are reaped: their in-flight deliveries become `uncertain` (the
   transport may have taken them; nobody gets them again unless asked).
2. A sequence whose step file seems renamed (`renames.py`) is held back, untouched.
   If the steps' order, delays or hours changed, waiting people are rescheduled. So are people
   whose next step is due later than the steps allow: a run whose clock was far ahead (a forced
   `--now`, a wrong system clock) sent their last step "in the future"; it counts as sent now.
3. Due enrollments are claimed a batch at a time, in ONE transaction: the rows are locked
   (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so a second runner takes other people; SQLite: the
   write lock, taken first), each person's step is recorded `in_flight` in the ledger
   (UNIQUE issue+subscriber: never a second row) and their enrollment moves on to the next
   step. Then the batch goes to the transport and the ledger records the answer.
4. A batch the transport refused (nothing went out) is `failed` and due again later.
5. Ctrl-C or SIGTERM (systemd's restart), or `stop` set by `serve`: no batch is claimed after
   that, the batches in flight are settled (their answers recorded), and the run ends with
   `interrupted` set. Nothing it handed over is left `in_flight` for the next run to reap.

The schedule clock (`clock`, i.e. `--now`) decides what is due; the wall clock (`wall`) stamps
the run's sends and guards against a clock far ahead. Whether another runner's process is
alive is the send lease's question (`sending.ledger`, the system clock), as for `send`.

This module is the entry point (the CLI, `serve`): before the run loads SQLAlchemy, the
transport or the renderer, `precheck` asks the database with a few plain queries whether there
is anything to do at all (from cron every minute, there rarely is); the run itself is in
`batches.py`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError
from newsletter.masking import mask_addresses
from newsletter.sequences.clock import SYSTEM, Clock, refuse_far_ahead
from newsletter.sequences.precheck import nothing_to_do
from newsletter.sequences.report import RunReport, summary

if TYPE_CHECKING:
    from newsletter.project import Project
    from newsletter.sending.factory import Chosen

log = logging.getLogger("newsletter.sequences")


def run_due(
    project: Project,
    *,
    clock: Clock = SYSTEM,
    wall: Clock = SYSTEM,
    transport: Chosen | None = None,
    progress: Callable[[RunReport], None] | None = None,
    include_uncertain: bool = False,
    stop: threading.Event | None = None,
    force: bool = False,
) -> RunReport:
    """Send every due step of every configured sequence (see the module docstring). With
    `include_uncertain`, steps whose delivery is uncertain go out again (on purpose). Setting
    `stop` (or, in the main thread, Ctrl-C or SIGTERM) ends the run after the batches in
    flight are settled. A `clock` more than a day ahead of `wall` is refused unless `force`."""
    now = clock.now()
    if not force:
        refuse_far_ahead(now, wall.now())
    if not include_uncertain and nothing_to_do(project, now, wall.now()):
        return RunReport()
    # deferred: batches loads SQLAlchemy (190 ms at start-up), which a run with nothing due
    # (cron, every minute) never needs
    from newsletter.sequences.batches import send_due

    return send_due(
        project,
        now,
        wall=wall,
        transport=transport,
        progress=progress,
        include_uncertain=include_uncertain,
        stop=stop or threading.Event(),
    )


#: How long `serve` waits, when it stops, for the sequence run's batches in flight to be
#: answered (a transport's own timeouts end them well before; systemd waits 90 s).
STOP_TIMEOUT = 60.0


class BackgroundRunner:
    """`serve --sequences`: `run_due` every `interval` seconds in a thread, until `stop()`.
    A failing run is logged in one line and tried again at the next tick. `stop()` ends a run
    in progress the way Ctrl-C ends `sequences run`: nothing more is claimed, what is in
    flight is settled."""

    def __init__(self, project: Project, *, interval: float = 60.0, clock: Clock = SYSTEM) -> None:
        self.project = project
        self.interval = interval
        self.clock = clock
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sequences", daemon=True)

    def start(self) -> BackgroundRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "sequences: the run was still waiting for the transport after %.0f s; "
                "what it had in flight becomes uncertain at the next run",
                timeout,
            )

    def _loop(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError  # deferred: SQLAlchemy costs 190 ms at start-up

        while not self._stop.is_set():
            try:
                report = run_due(self.project, clock=self.clock, stop=self._stop)
                if report.total or report.error:
                    log.info("sequences: %s", summary(report))
                for error in report.errors + report.held_back:
                    # A refusal names its recipient ("x@y.de: 550 ..."): logs keep no address.
                    log.warning("sequences: %s", mask_addresses(error))
            except NewsletterError as exc:
                log.error("sequences run failed: %s", mask_addresses(str(exc)))
            except SQLAlchemyError as exc:
                log.error("sequences run failed: database error (%s)", type(exc).__name__)
            self.runs += 1
            self._stop.wait(self.interval)
