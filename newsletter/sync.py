"""`newsletter sync`: apply SendGrid's suppression lists to the subscriber list.

For authors who never run `serve`: SendGrid keeps global unsubscribes, bounces, spam
reports and invalid emails; we fetch each list page by page and move the matching
subscribers to unsubscribed / bounced / complained / bounced (never to a weaker status).
"""

from __future__ import annotations

import json
import os
import urllib.error
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from newsletter.errors import ConfigError, TransportError
from newsletter.events import apply_status
from newsletter.store import schema

if TYPE_CHECKING:
    from newsletter.project import Project

API_KEY_ENV = "SENDGRID_API_KEY"
#: SendGrid list -> the status it means
LISTS = {
    "unsubscribes": "unsubscribed",
    "bounces": "bounced",
    "spam_reports": "complained",
    "invalid_emails": "bounced",
}
PAGE_SIZE = 500  # the most SendGrid returns per page of these lists


@dataclass
class SyncResult:
    fetched: dict[str, int] = field(default_factory=dict)  # addresses on each SendGrid list
    matched: dict[str, int] = field(default_factory=dict)  # of them, on our list
    changed: dict[str, int] = field(default_factory=dict)  # of them, whose status changed


def _fetch(client: Any, name: str, timeout: float, page_size: int) -> list[str]:
    from python_http_client.exceptions import HTTPError

    endpoint = getattr(client.client.suppression, name)
    addresses: list[str] = []
    offset = 0
    while True:
        try:
            response = endpoint.get(
                query_params={"limit": page_size, "offset": offset}, timeout=timeout
            )
        except HTTPError as exc:
            if exc.status_code == 401:
                raise TransportError(
                    "SendGrid rejected the API key (check SENDGRID_API_KEY)"
                ) from None
            if exc.status_code == 403:
                raise TransportError(
                    f"SendGrid refused to read the {name} list (403); give the API key "
                    "the Suppressions read permission"
                ) from None
            raise TransportError(
                f"SendGrid answered {exc.status_code} for the {name} list; try again later"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(
                f"cannot reach SendGrid ({reason}); check the network or SENDGRID_API_HOST"
            ) from None
        try:
            page = json.loads(response.body or b"[]")
        except ValueError:
            raise TransportError(f"SendGrid sent a {name} page that is not JSON") from None
        if not isinstance(page, list):
            raise TransportError(f"SendGrid sent a {name} page that is not a list")
        addresses += [
            item["email"]
            for item in page
            if isinstance(item, dict) and isinstance(item.get("email"), str)
        ]
        if len(page) < page_size:
            return addresses
        offset += page_size


def sync(project: Project, engine: Engine, *, page_size: int = PAGE_SIZE) -> SyncResult:
    from sendgrid import SendGridAPIClient

    from newsletter.project import sendgrid_host

    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise ConfigError(
            f"{API_KEY_ENV} is not set; export your SendGrid API key to sync suppressions"
        )
    timeout = float(project.config.section("sendgrid")["timeout"])
    client = SendGridAPIClient(api_key=key, host=sendgrid_host(project.config))
    result = SyncResult()
    fetched = {name: _fetch(client, name, timeout, page_size) for name in LISTS}
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for name, status in LISTS.items():
            keys = sorted({address.strip().lower() for address in fetched[name]})
            result.fetched[name] = len(keys)
            ids: list[int] = []
            for start in range(0, len(keys), 900):
                ids += conn.execute(
                    select(schema.subscribers.c.id).where(
                        schema.subscribers.c.email_key.in_(keys[start : start + 900])
                    )
                ).scalars()
            result.matched[name] = len(ids)
            result.changed[name] = apply_status(conn, ids, status, f"sendgrid:{name}", now)
    return result
