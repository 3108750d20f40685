"""`newsletter stats` as text: the tables, CSV and JSON the command prints."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from newsletter.insights.metrics import GROWTH_METRICS, ISSUE_METRICS, RATE_BASES
from newsletter.insights.queries import (
    GrowthPeriod,
    IssueSummary,
    LinkClicks,
    growth_dicts,
    link_dicts,
    summary_dicts,
)

if TYPE_CHECKING:
    from datetime import datetime

OPENS_NOTE = (
    "* Opens are estimates: Apple Mail and scanners load images for nobody; "
    "machine opens (sg_machine_open) are left out."
)


ACCEPTED_NOTE = (
    "† Sent by SMTP: delivered means accepted by the mail server (SMTP reports no later "
    "delivery); a bounce still counts as bounced."
)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"


def _day(value: datetime | None, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d") if value else "-"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first `left` ones left-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(cell).ljust(widths[i]) if i < left else str(cell).rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def overview(rows: list[IssueSummary], tz: ZoneInfo, opens: bool, fmt: str) -> str:
    """One row per sent issue, newest first."""
    if fmt == "json":
        return json.dumps(
            {"opens_are_estimates": opens, "issues": summary_dicts(rows, opens)},
            ensure_ascii=False,
            indent=2,
        )
    if fmt == "csv":
        header = [
            "date",
            "issue",
            "title",
            "recipients",
            "delivered",
            "bounced",
            "unique_clicks",
            "click_rate",
            "replies",
            "reply_rate",
            "unsubscribed",
            "complained",
        ]
        if opens:
            header += ["opens_estimate", "open_rate_estimate"]
        data = []
        for row in rows:
            c, r = row.counts, row.rates
            line: list[Any] = [
                _day(row.sent_at, tz),
                row.slug,
                row.title,
                c["recipients"],
                c["delivered"],
                c["bounced"],
                c["clicked"],
                "" if r["clicked"] is None else round(r["clicked"], 4),
                c["replied"],
                "" if r["replied"] is None else round(r["replied"], 4),
                c["unsubscribed"],
                c["complained"],
            ]
            if opens:
                line += [c["opened"], "" if r["opened"] is None else round(r["opened"], 4)]
            data.append(line)
        return _csv(header, data)
    if not rows:
        return "No issue has been sent yet."
    header = [
        "DATE",
        "ISSUE",
        "RECIPIENTS",
        "DELIVERED",
        "BOUNCED",
        "CLICKS",
        "CLICK%",
        "REPLIES",
        "REPLY%",
        "UNSUBS",
        "COMPLAINTS",
    ]
    if opens:
        header += ["OPENS*", "OPEN%*"]
    table = []
    for row in rows:
        c, r = row.counts, row.rates
        line = [
            _day(row.sent_at, tz),
            row.slug[:40],
            str(c["recipients"]),
            str(c["delivered"]) + ("†" if row.delivered_means_accepted else ""),
            str(c["bounced"]),
            str(c["clicked"]),
            _pct(r["clicked"]),
            str(c["replied"]),
            _pct(r["replied"]),
            str(c["unsubscribed"]),
            str(c["complained"]),
        ]
        if opens:
            line += [str(c["opened"]), _pct(r["opened"])]
        table.append(line)
    out = _table(header, table, left=2)
    footnote = "Rates are over delivered; replies exclude auto-replies."
    if any(row.delivered_means_accepted for row in rows):
        footnote += f"\n{ACCEPTED_NOTE}"
    return out + "\n\n" + footnote + ("\n" + OPENS_NOTE if opens else "")


def issue_detail(
    row: IssueSummary,
    links: list[LinkClicks],
    unsubscribes: list[tuple[date, int]],
    opens: bool,
    fmt: str,
    answered: int = 0,
) -> str:
    """One issue: its counts and rates, clicks per link, unsubscribes per day, and how many
    of the readers who replied got an answer."""
    stats = [s for s in ISSUE_METRICS if s != "opened" or opens]
    if fmt == "json":
        return json.dumps(
            {
                "issue": row.slug,
                "title": row.title,
                "sent_at": row.sent_at.isoformat() if row.sent_at else None,
                "counts": {
                    "recipients": row.counts["recipients"],
                    **{s: row.counts[s] for s in stats},
                },
                "rates": {s: row.rates[s] for s in stats},
                "rate_bases": {s: RATE_BASES[s] for s in stats},
                "delivered_means": row.delivered_means,
                "answered": answered,
                "opens_are_estimates": opens,
                "links": link_dicts(links),
                "unsubscribes_per_day": [
                    {"day": day.isoformat(), "unsubscribed": n} for day, n in unsubscribes
                ],
            },
            ensure_ascii=False,
            indent=2,
        )
    if fmt == "csv":
        lines: list[list[Any]] = [["section", "key", "text", "count", "rate"]]
        lines.append(["counts", "recipients", "", row.counts["recipients"], ""])
        for s in stats:
            rate = row.rates[s]
            lines.append(["counts", s, "", row.counts[s], "" if rate is None else round(rate, 4)])
        lines.append(["answers", "answered", "", answered, ""])
        for link in links:
            lines.append(["link", link.url, link.text or "", link.clicks, ""])
        for day, n in unsubscribes:
            lines.append(["unsubscribes_per_day", day.isoformat(), "", n, ""])
        return _csv(lines[0], lines[1:])
    out = [f"{row.title} ({row.slug})", f"  {'recipients':14}{row.counts['recipients']:>8}"]
    for s in stats:
        label = "opened*" if s == "opened" else s
        line = f"  {label:14}{row.counts[s]:>8}  {_pct(row.rates[s]):>7}  of {RATE_BASES[s]}"
        if s == "delivered" and row.delivered_means_accepted:
            line += f" ({row.delivered_means}, until a bounce says otherwise)"
        out.append(line)
        if s == "replied" and row.counts[s]:
            out.append(f"  {'answered':14}{answered:>8}  of the readers who replied")
    out += ["", "Clicks per link:"]
    if links:
        out.append(
            _table(
                ["CLICKS", "LINK", "URL"],
                [[str(x.clicks), (x.text or "-")[:40], x.shown_url] for x in links],
                left=0,
            )
        )
    else:
        out.append("  no clicks recorded")
    out += ["", "Unsubscribes per day (UTC):"]
    if unsubscribes:
        out += [f"  {day.isoformat()}  {n:>6}" for day, n in unsubscribes]
    else:
        out.append("  none")
    if opens:
        out += ["", OPENS_NOTE]
    return "\n".join(out)


GROWTH_HEADERS = {
    "new_form": "NEW FORM",
    "new_import": "NEW IMPORT",
    "new_added": "NEW ADDED",
    "confirmed": "CONFIRMED",
    "unsubscribed": "UNSUBSCRIBED",
    "bounced": "BOUNCED",
    "complained": "COMPLAINED",
}


def growth(rows: list[GrowthPeriod], by: str, tz: ZoneInfo, fmt: str) -> str:
    """List growth per period, oldest first."""
    if fmt == "json":
        return json.dumps(
            {"by": by, "timezone": tz.key, "periods": growth_dicts(rows)},
            ensure_ascii=False,
            indent=2,
        )
    if fmt == "csv":
        return _csv(
            ["period", *GROWTH_METRICS, "inactive", "blocked", "net_size"],
            [
                [
                    p.start.isoformat(),
                    *(p.counts[c] for c in GROWTH_METRICS),
                    p.inactive,
                    p.blocked,
                    p.net_size,
                ]
                for p in rows
            ],
        )
    if not rows:
        return "No subscribers yet."
    header = [
        by.upper(),
        *(GROWTH_HEADERS[c] for c in GROWTH_METRICS),
        "INACTIVE",
        "BLOCKED",
        "NET SIZE",
    ]
    body = [
        [
            p.start.isoformat(),
            *(str(p.counts[c]) for c in GROWTH_METRICS),
            str(p.inactive),
            str(p.blocked),
            str(p.net_size),
        ]
        for p in rows
    ]
    return (
        _table(header, body)
        + f"\n\nPeriods start in {tz.key}; weeks start on Monday. INACTIVE: removed by"
        " `subscribers sunset --apply` (not in UNSUBSCRIBED). BLOCKED: sign-ups the form"
        " turned away (bots, throwaway domains, too many from one network or to one address)."
    )
