"""A real SMTP server on 127.0.0.1 (aiosmtpd), for the SMTP transport's tests and benchmark.

    with FakeSmtp(users={"jens": "geheim"}, tls=True) as smtp:   # STARTTLS + AUTH required
        smtp.port, smtp.ca_file          # where to connect, the certificate to trust
        smtp.messages                    # every accepted message: Received(mail_from, rcpt, data)
        smtp.recipients()                # their addresses, in order
        smtp.inject("RCPT", "451 4.7.1 Try again later")    # the next RCPT gets this answer
        smtp.inject("DATA", "550 5.1.1 Mailbox unknown", address="x@example.org")
        smtp.inject("DATA", "drop")      # take the message, then drop the connection unanswered
        smtp.inject("MAIL", "421 4.3.2 Shutting down")
        smtp.delay = 0.05                # pause before answering each DATA

The certificate is self-signed, made with `cryptography` for 127.0.0.1. As a separate process
(the kill -9 test, the benchmark sink)::

    python -m tests.smtp_server --port 0 --log FILE [--delay S] [--count-only]

prints `PORT <n>` once it listens and appends one JSON line per accepted message to FILE
({"to": [...]}); `--count-only` keeps only a count (printed on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ModuleNotFoundError:
    if __name__ != "__main__":
        raise
    # Run by hand after the quick start's plain install: a hint, not a traceback.
    sys.exit(
        "aiosmtpd is not installed; in your clone of newsletter run "
        "`.venv/bin/pip install -e '.[test]'` (the test extra has the fake SMTP server's deps)"
    )


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem): a self-signed certificate for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Handler:
    def __init__(self, server: FakeSmtp) -> None:
        self.server = server

    def _fault(self, phase: str, address: str | None = None) -> str | None:
        with self.server.lock:
            for fault in self.server.faults:
                if fault["phase"] == phase and fault.get("address") in (None, address):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.server.faults.remove(fault)
                    return str(fault["answer"])
        return None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        fault = self._fault("MAIL", address)
        if fault:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        fault = self._fault("RCPT", address)
        if fault:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        address = envelope.rcpt_tos[0] if envelope.rcpt_tos else None
        fault = self._fault("DATA", address)
        if fault == "drop":
            # Queued, but the answer never arrives.
            self.server.keep(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
            )
            server.transport.abort()
            return "250 OK"
        if fault:
            return fault
        self.server.keep(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK queued"


class FakeSmtp:
    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        port: int | None = None,
        log: Path | None = None,
        count_only: bool = False,
    ) -> None:
        self.users = users or {}
        self.tls = tls
        self.port = port or free_port()
        self.log = log
        self.count_only = count_only
        self.count = 0
        self.messages: list[Received] = []
        self.faults: deque[dict[str, Any]] = deque()
        self.delay = 0.0
        self.lock = threading.Lock()
        self.logins: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="fake-smtp-")
        self.ca_file: str | None = None
        self._controller: Controller | None = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode()
            if self.users.get(user) == auth_data.password.decode():
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def keep(self, received: Received) -> None:
        with self.lock:
            self.count += 1
            if not self.count_only:
                self.messages.append(received)
            if self.log is not None:
                with open(self.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"to": received.rcpt_tos}) + "\n")

    def inject(
        self, phase: str, answer: str, *, count: int = 1, address: str | None = None
    ) -> None:
        with self.lock:
            self.faults.append(
                {"phase": phase, "answer": answer, "count": count, "address": address}
            )

    def recipients(self) -> list[str]:
        return [to for m in self.messages for to in m.rcpt_tos]

    def start(self) -> FakeSmtp:
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": True}
        if self.tls:
            cert, key = make_certificate(Path(self._dir.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.ca_file = str(cert)
            kwargs.update(tls_context=context, require_starttls=True)
        if self.users:
            kwargs.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=self.tls
            )
        self._controller = Controller(Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
        self._dir.cleanup()

    def __enter__(self) -> FakeSmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import signal

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--count-only", action="store_true")
    args = parser.parse_args(argv)
    server = FakeSmtp(port=args.port or None, log=args.log, count_only=args.count_only)
    server.delay = args.delay
    server.start()
    print(f"PORT {server.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    print(f"COUNT {server.count}", flush=True)
    server.stop()
    time.sleep(0.1)
    sys.exit(0)


if __name__ == "__main__":
    main()
