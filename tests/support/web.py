"""Helpers for the web tests: a real uvicorn server on loopback, SendGrid-style signing,
Inbound Parse multipart bodies, and rows for a sent issue. (No tests in this file.)"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine

from newsletter.store import schema


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, access_log=False, lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Signer:
    """A real ECDSA P-256 key pair, as SendGrid holds for a signed Event Webhook."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": sign_events(self.private_key, body, ts),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        }


def event(
    kind: str,
    email: str,
    *,
    issue_id: int | None = None,
    subscriber_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One event as SendGrid posts it, custom_args as top-level keys."""
    data: dict[str, Any] = {
        "email": email,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "category": ["newsletter"],
    }
    if issue_id is not None:
        data[schema.CUSTOM_ARG_ISSUE] = str(issue_id)
    if subscriber_id is not None:
        data[schema.CUSTOM_ARG_SUBSCRIBER] = str(subscriber_id)
    data.update(extra)
    return data


def body_of(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()


def sign_events(private_key: Any, body: bytes, timestamp: str) -> str:
    """SendGrid's Event Webhook signature: ECDSA-SHA256 over timestamp + body, base64 DER."""
    from cryptography.hazmat.primitives import hashes

    return base64.b64encode(
        private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()


def sent_issue(
    engine: Engine,
    subscriber_ids: list[int],
    *,
    slug: str = "meta-ki-creator",
    subject: str = "Meta, KI und das Ende der Creator?",
    title: str = "Warum Metas KI Creator verdrängen könnte",
    language: str = "de",
) -> int:
    """Rows as a finished send leaves them: the issue, the send, one accepted delivery each."""
    with engine.begin() as conn:
        return record_sent(
            conn,
            subscriber_ids,
            slug=slug,
            subject=subject,
            title=title,
            language=language,
            when=datetime.now(UTC),
            message_ids={sid: f"msg{sid}" for sid in subscriber_ids},
        )


def record_sent(
    conn: Any,
    subscriber_ids: list[int],
    *,
    slug: str,
    title: str,
    when: datetime,
    subject: str | None = None,
    language: str = "de",
    message_ids: dict[int, str] | None = None,
) -> int:
    """`sent_issue` inside a transaction (the benchmarks write many at once)."""
    issue_id = conn.execute(
        schema.issues.insert().values(
            slug=slug, title=title, subject=subject or title, language=language, created_at=when
        )
    ).inserted_primary_key[0]
    send_id = conn.execute(
        schema.sends.insert().values(
            issue_id=issue_id,
            status="done",
            transport="sendgrid",
            segment=[],
            dry_run=False,
            started_at=when,
            finished_at=when,
        )
    ).inserted_primary_key[0]
    if subscriber_ids:
        conn.execute(
            schema.deliveries.insert(),
            [
                {
                    "issue_id": issue_id,
                    "subscriber_id": sid,
                    "send_id": send_id,
                    "state": "accepted",
                    "batch_no": 0,
                    "message_id": (message_ids or {}).get(sid),
                    "updated_at": when,
                }
                for sid in subscriber_ids
            ],
        )
    return int(issue_id)


def multipart(
    fields: dict[str, bytes | str], files: list[tuple[str, str, bytes]] = ()
) -> tuple[bytes, str]:  # type: ignore[assignment]
    """A multipart/form-data body as SendGrid's Inbound Parse posts it (raw bytes per field)."""
    boundary = "xYzZY" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8") if isinstance(value, str) else value
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += data + b"\r\n"
    for name, filename, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def wait_for_server(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read())
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")
