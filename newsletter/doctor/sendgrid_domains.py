"""What SendGrid knows of the From domain's authentication: `GET /v3/whitelabel/domains`.

With automated security, SendGrid gives three CNAMEs: the return path (`em1234.example.com`,
which carries SPF) and two DKIM keys (`s1`/`s2._domainkey.example.com`). The doctor checks
that DNS has them, pointing where SendGrid says.
"""

from __future__ import annotations

import json
import urllib.error
from dataclasses import dataclass
from typing import Any

from python_http_client.exceptions import HTTPError

from newsletter.project import Project, sendgrid_host


@dataclass(frozen=True)
class Cname:
    host: str
    target: str | None  # what SendGrid wants it to point at, if known


@dataclass(frozen=True)
class DomainAuthentication:
    """SendGrid's records for one authenticated domain."""

    domain: str
    return_path: Cname | None
    dkim: tuple[Cname, ...]


def _lower(value: Any) -> str | None:
    return value.strip().rstrip(".").lower() if isinstance(value, str) and value else None


def authentication_for(project: Project, domain: str, api_key: str) -> DomainAuthentication | str:
    """SendGrid's records for `domain` (or the domain it is a subdomain of), or one line
    saying why they could not be read."""
    # deferred: sendgrid costs 54 ms at start-up
    from sendgrid import SendGridAPIClient

    timeout = float(project.config.section("sendgrid")["timeout"])
    client = SendGridAPIClient(api_key, host=sendgrid_host(project.config))
    try:
        response = client.client.whitelabel.domains.get(
            query_params={"limit": 200}, timeout=timeout
        )
    except HTTPError as exc:
        if exc.status_code in (401, 403):
            return (
                f"SendGrid refused to list the authenticated domains ({exc.status_code}); "
                "check SENDGRID_API_KEY and its Sender Authentication read permission"
            )
        return f"SendGrid answered {exc.status_code} for the authenticated domains"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return f"cannot reach SendGrid ({getattr(exc, 'reason', exc)})"
    try:
        domains = json.loads(response.body or b"[]")
    except ValueError:
        return "SendGrid sent a list of authenticated domains that is not JSON"
    if not isinstance(domains, list):
        return "SendGrid sent a list of authenticated domains that is not a list"
    candidates = [
        item
        for item in domains
        if isinstance(item, dict)
        and (name := _lower(item.get("domain")))
        and (domain == name or domain.endswith("." + name))
    ]
    if not candidates:
        return f"SendGrid has no authenticated domain for {domain}"
    # The most specific domain wins (news.example.com over example.com).
    best = max(candidates, key=lambda item: len(item["domain"]))
    records: dict[str, Any] = best["dns"] if isinstance(best.get("dns"), dict) else {}
    return_path = _cname(records.get("mail_cname"))
    dkim = tuple(c for key in ("dkim1", "dkim2") if (c := _cname(records.get(key))))
    return DomainAuthentication(_lower(best["domain"]) or domain, return_path, dkim)


def _cname(record: Any) -> Cname | None:
    if not isinstance(record, dict) or str(record.get("type", "cname")).lower() != "cname":
        return None
    host = _lower(record.get("host"))
    return Cname(host, _lower(record.get("data"))) if host else None
