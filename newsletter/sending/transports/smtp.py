"""SMTP: one message per recipient, over a few reused connections (Postmark, Mailgun, SES,
Brevo, Fastmail or your own Postfix, with no provider code).

Configured by `[sending] transport = "smtp"` and `[smtp]` (host, port, security =
"starttls" | "tls" | "none", username, rate, max_per_connection, timeout, ca_file); the
password comes from NEWSLETTER_SMTP_PASSWORD only.

Each `send(batch)` holds one connection (the send runs `concurrency` batches at once, so
that many connections) and hands over its recipients one after another. Answers:
- 250 after DATA: `accepted`, with the Message-ID we set; SMTP reports nothing later, so
  it counts as delivered ("accepted by the mail server") until a bounce says otherwise.
- 4xx (421 included: reconnect): retried with exponential backoff, at most `max_retries`
  times; then that recipient `failed`.
- 5xx at RCPT or after DATA: that recipient `failed`; the others go on. A 5xx at RCPT (but
  a 5.7.x policy answer) is also a hard bounce: the reader is marked bounced, as a SendGrid
  bounce event would (`sending.answers`). 5xx at MAIL FROM: the sender is refused, so every
  message would be: the send stops.
- the connection lost after the message was written, before the server's answer: `uncertain`
  (the server may have queued it), never retried automatically. Lost earlier: nothing was
  queued, so it is retried on a new connection.
- refused login, TLS failure, unreachable server: one line, the send stops; the password is
  never in it.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, ClassVar

from newsletter.errors import ConfigError
from newsletter.secrets_file import secret_from_environment
from newsletter.sending.message import Batch, Recipient
from newsletter.sending.mime import copy_for, date_header, message_id
from newsletter.sending.transports import Capabilities, Outcome, TransportSettings, register
from newsletter.store.schema import DeliveryState
from newsletter.tls import ca_certificate

if TYPE_CHECKING:
    from newsletter.project import Project

PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"
BACKOFF_ENV = "NEWSLETTER_SEND_BACKOFF"
#: Recipients per batch: the unit claimed in the ledger before it goes out. Small, because
#: SMTP hands them over one by one and a crash leaves a whole batch uncertain.
MAX_BATCH = 50

_LEADING_DOT = re.compile(rb"(?m)^\.")


class _Stop(Exception):
    """The whole send must stop (refused login, TLS failure, unreachable, sender refused)."""


class _Lost(Exception):
    """The connection went away after the message was written: nobody knows if it was queued."""


class _Retry(Exception):
    """Nothing was queued (connection lost early, 4xx): try again on a fresh connection."""

    def __init__(self, reason: str, reconnect: bool = True) -> None:
        super().__init__(reason)
        self.reconnect = reconnect


class _Refused(Exception):
    """A 5xx for this recipient only."""

    def __init__(self, reason: str, hard_bounce: bool = False) -> None:
        super().__init__(reason)
        #: The server refused the address itself (at RCPT), not this message.
        self.hard_bounce = hard_bounce


#: An enhanced status code (RFC 3463) at the start of an answer's text: "5.1.1".
_ENHANCED = re.compile(r"^\d{3} ([245]\.\d{1,3}\.\d{1,3})\b")


def hard_bounce(answer: str) -> bool:
    """Whether a 5xx answer at RCPT says the address is dead. A 5.7.x answer is the server's
    policy (relaying denied, sender blocked), not the address: like SendGrid's "blocked"
    bounces it leaves the reader alone (else one misconfigured relay would mark every reader
    bounced)."""
    match = _ENHANCED.match(answer)
    return not (match and match.group(1).startswith("5.7."))


def _backoff() -> float:
    try:
        return float(os.environ.get(BACKOFF_ENV, "1.0"))
    except ValueError:
        return 1.0


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"[:300]


@register
class SmtpTransport:
    kind: ClassVar[str] = "smtp"
    capabilities: ClassVar[Capabilities] = Capabilities(max_batch=MAX_BATCH, keeps_ledger=True)
    accepted_label: ClassVar[str] = "accepted by the SMTP server"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        rate: float | None = None,
        max_per_connection: int = 100,
        max_retries: int = 5,
        ca_file: str | None = None,
        backoff: float | None = None,
        ca_data: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.rate = rate
        self.max_per_connection = max(1, max_per_connection)
        self.max_retries = max_retries
        self.backoff = _backoff() if backoff is None else backoff
        self._context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
        self._idle: list[tuple[smtplib.SMTP, int]] = []  # (connection, messages sent on it)
        self._lock = threading.Lock()
        self._next_slot = 0.0

    @classmethod
    def unavailable(cls, project: Project) -> str | None:
        section = project.config.section("smtp")
        if not section["host"]:
            return f'[smtp] host is not set in {project.config.path}; add host = "smtp.example.com"'
        try:
            password = secret_from_environment(PASSWORD_ENV)
        except ConfigError as exc:
            return str(exc)
        if section["username"] and not password:
            return f"{PASSWORD_ENV} is not set (the password for [smtp] username)"
        return None

    @classmethod
    def from_project(cls, project: Project, settings: TransportSettings) -> SmtpTransport:
        why = cls.unavailable(project)
        if why:
            raise ConfigError(why)
        section = project.config.section("smtp")
        security = section["security"]
        port = section["port"] or {"starttls": 587, "tls": 465, "none": 25}[security]
        ca_file = section["ca_file"]
        return cls(
            section["host"],
            int(port),
            security=security,
            username=section["username"],
            password=secret_from_environment(PASSWORD_ENV) if section["username"] else None,
            timeout=float(section["timeout"]),
            rate=section["rate"],
            max_per_connection=section["max_per_connection"],
            max_retries=min(settings.max_retries, 2)
            if settings.transactional
            else settings.max_retries,
            ca_data=ca_certificate(project, "smtp", ca_file) if ca_file else None,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def refuse(self, recipient: Recipient) -> str | None:
        return None

    def _clean(self, text: str) -> str:
        """Never let the password into a message, whatever a server echoes."""
        return text.replace(self._password, "***") if self._password else text

    # --- connections -------------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        where = self.where
        try:
            conn: smtplib.SMTP
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._context,
                    local_hostname="localhost",
                )  # fmt: skip
            else:
                conn = smtplib.SMTP(
                    self.host, self.port, timeout=self.timeout, local_hostname="localhost"
                )
            if self.security == "starttls":
                conn.ehlo()
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise _Stop(
                        f"the SMTP server {where} does not offer STARTTLS; set [smtp] security = "
                        '"tls" (port 465) or, only on a trusted network, "none"'
                    )
                conn.starttls(context=self._context)
                conn.ehlo()
            conn.ehlo_or_helo_if_needed()
            if self.username:
                conn.login(self.username, self._password or "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            raise _Stop(
                f"the SMTP server {where} refused the login for {self.username} "
                f"({self._clean(_answer(exc.smtp_code, exc.smtp_error))}); check [smtp] username "
                f"and {PASSWORD_ENV}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise _Stop(f"the SMTP server {where}: {exc}; check [smtp] security") from None
        except ssl.SSLError as exc:
            raise _Stop(
                f"TLS with the SMTP server {where} failed ({exc.reason or exc}); check [smtp] "
                "security and port, or [smtp] ca_file for a private certificate"
            ) from None
        except (ConnectionRefusedError, socket.gaierror, TimeoutError) as exc:
            raise _Retry(f"cannot reach the SMTP server {where} ({exc})") from None
        except smtplib.SMTPConnectError as exc:
            raise _Retry(
                f"the SMTP server {where} would not talk: {_answer(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
            raise _Retry(f"the SMTP server {where} closed the connection ({exc})") from None

    def _take(self) -> tuple[smtplib.SMTP, int]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect(), 0

    def _give_back(self, conn: smtplib.SMTP, used: int) -> None:
        if used >= self.max_per_connection:
            self._quit(conn)
            return
        with self._lock:
            self._idle.append((conn, used))

    @staticmethod
    def _quit(conn: smtplib.SMTP) -> None:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._quit(conn)

    def _pace(self) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            time.sleep(slot - now)

    # --- one message ---------------------------------------------------------------------------

    def _transaction(
        self, conn: smtplib.SMTP, sender: str, to: str, data: bytes, utf8: bool, eight: bool
    ) -> None:
        """MAIL, RCPT, DATA for one recipient; raises for anything but a 250 at the end."""
        options = ["BODY=8BITMIME"] if eight else []
        if utf8:
            if not conn.has_extn("smtputf8"):
                raise _Refused(
                    f"{to}: the SMTP server {self.where} does not support SMTPUTF8, which this "
                    "non-ASCII address needs"
                )
            options.append("SMTPUTF8")
        try:
            code, text = conn.mail(sender, options)
            if code != 250:
                self._after_refusal(conn, code, text, phase="MAIL FROM")
                if code >= 500:
                    raise _Stop(
                        f"the SMTP server {self.where} refused the sender {sender} "
                        f"({_answer(code, text)}); check [newsletter] from_email"
                    )
            code, text = conn.rcpt(to)
            if code not in (250, 251):
                self._after_refusal(conn, code, text, phase="RCPT")
            code, text = conn.docmd("DATA")
            if code != 354:
                self._after_refusal(conn, code, text, phase="DATA")
            body = _LEADING_DOT.sub(b"..", data)
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            conn.send(body + b".\r\n")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Retry(f"the connection to {self.where} was lost ({exc})") from None
        # The message is written: from here a lost connection leaves it unknown.
        try:
            code, text = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Lost(str(exc) or type(exc).__name__) from None
        if code != 250:
            self._after_refusal(conn, code, text, phase="DATA", reset=False)

    def _after_refusal(
        self, conn: smtplib.SMTP, code: int, text: bytes, *, phase: str, reset: bool = True
    ) -> None:
        if code == 421:  # the server is closing this connection
            raise _Retry(f"{_answer(code, text)} at {phase}")
        if reset:
            try:
                conn.rset()
            except (smtplib.SMTPException, OSError):
                raise _Retry(f"{_answer(code, text)} at {phase}") from None
        if 400 <= code < 500:
            raise _Retry(f"{_answer(code, text)} at {phase}", reconnect=False)
        if phase == "MAIL FROM":
            return  # the caller names the sender
        answer = _answer(code, text)
        raise _Refused(f"{answer} at {phase}", hard_bounce=phase == "RCPT" and hard_bounce(answer))

    def send(self, batch: Batch) -> list[Outcome]:
        message = batch.message
        date = date_header()
        outcomes: list[Outcome] = []
        conn: smtplib.SMTP | None = None
        used = 0
        stop: str | None = None
        try:
            for recipient in batch.recipients:
                if stop is not None:
                    outcomes.append(Outcome(DeliveryState.FAILED, error=stop, fatal=True))
                    continue
                msgid = message_id(message.from_email)
                built: tuple[bool, bytes, bool] | None = None
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        if conn is None:
                            conn, used = self._take()
                        # 8bit parts (no encoding, fewer lines) where the server takes them.
                        eight = conn.has_extn("8bitmime")
                        if built is None or built[0] != eight:
                            data, _, utf8 = copy_for(
                                message, recipient, date=date, msgid=msgid, eight_bit=eight
                            )
                            built = (eight, data, utf8)
                        self._pace()
                        self._transaction(
                            conn, message.from_email, recipient.email, built[1], built[2], eight
                        )
                        used += 1
                        outcomes.append(
                            Outcome(
                                DeliveryState.ACCEPTED,
                                message_id=msgid,
                                attempts=attempt,
                                where=self.where,
                            )
                        )
                        if used >= self.max_per_connection:
                            self._quit(conn)
                            conn = None
                        break
                    except _Retry as retry:
                        if retry.reconnect and conn is not None:
                            conn.close()
                            conn = None
                        if attempt > self.max_retries:
                            reason = self._clean(str(retry))
                            fatal = conn is None  # cannot even keep a connection: stop
                            error = f"{recipient.email}: {reason} (after {attempt} tries)"
                            outcomes.append(
                                Outcome(
                                    DeliveryState.FAILED, error=error, fatal=fatal, attempts=attempt
                                )
                            )
                            if fatal:
                                stop = error
                            break
                        time.sleep(self.backoff * 2 ** (attempt - 1))
                    except _Refused as refused:
                        outcomes.append(
                            Outcome(
                                DeliveryState.FAILED,
                                error=f"{recipient.email}: {self._clean(str(refused))}",
                                attempts=attempt,
                                hard_bounce=refused.hard_bounce,
                            )
                        )
                        break
                    except _Lost as lost:
                        if conn is not None:
                            conn.close()
                            conn = None
                        outcomes.append(
                            Outcome(
                                DeliveryState.UNCERTAIN,
                                message_id=msgid,
                                error=(
                                    f"the SMTP server {self.where} dropped the connection before "
                                    f"answering ({lost}); the message may have been queued"
                                ),
                                attempts=attempt,
                            )
                        )
                        break
                    except _Stop as exc:
                        if conn is not None:
                            conn.close()
                            conn = None
                        stop = self._clean(str(exc))
                        outcomes.append(
                            Outcome(DeliveryState.FAILED, error=stop, fatal=True, attempts=attempt)
                        )
                        break
        finally:
            if conn is not None:
                self._give_back(conn, used)
        return outcomes
