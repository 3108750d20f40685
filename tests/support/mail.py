"""Shared test helpers: mail."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup


def text_of(html: str) -> str:
    return " ".join(BeautifulSoup(html, "html.parser").get_text(" ").split())


def outbox_messages(root: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((root / "outbox").glob("*.eml"))
    ]


def newest_mail(root: Path) -> Any:
    newest = max((root / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return email.message_from_bytes(newest.read_bytes(), policy=email.policy.default)


def confirm_link(root: Path) -> str:
    text = newest_mail(root).get_body(("plain",)).get_content()
    return re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
