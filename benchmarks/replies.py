"""Replies as conversations: `replies fetch` of 10,000 messages from a real IMAP server
(Dovecot on 127.0.0.1, as the tests run it), and `replies` with 100,000 stored replies.

    python benchmarks/replies.py              # both, median of 3 runs each

Prints per run and as the median: the wall time of the whole `newsletter replies fetch`
process (connect, fetch, match, store, move) for 10,000 messages (9,000 replies to the
signed reply address, 1,000 unrelated mails left in the mailbox), and of the whole
`newsletter replies` process listing conversations when 100,000 replies (60,000 threads)
are stored. Targets: fetch <= 30 s; list <= 0.5 s. The floor beside the fetch is a bare
imap-tools client fetching the same 10,000 messages with the same chunk size.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import CONFIG, TEST_SECRET  # noqa: E402
from tests.imap_server import Dovecot  # noqa: E402

MESSAGES = 10_000
UNRELATED = 1_000
STORED = 100_000
THREADS = 60_000


def run(root: Path, *args: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "--project", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{args}: {done.stderr or done.stdout}")
    return took


def fill_mailbox(imap: Dovecot, messages: list[bytes]) -> None:
    """Write the messages into the INBOX's Maildir directly (appending 10,000 over IMAP would
    measure the set-up), owned as Dovecot expects."""
    inbox = imap.root / "mail" / imap.user
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    for n, raw in enumerate(messages):
        (inbox / "new" / f"{1700000000 + n}.M{n}P1.bench").write_bytes(raw)
    if os.geteuid() == 0:
        owner = (imap.root / "mail").stat()
        for path in [inbox, *inbox.rglob("*")]:
            os.chown(path, owner.st_uid, owner.st_gid)


def project(tmp: Path, imap: Dovecot) -> tuple[Path, list[bytes]]:
    from newsletter import tokens
    from newsletter.store.engine import open_engine
    from newsletter.store.issues import ensure_issue
    from newsletter.store.subscribers import add_subscriber

    root = tmp / "project"
    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(
        CONFIG
        + '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'
        + f'\n[replies.imap]\nhost = "127.0.0.1"\nport = {imap.port}\nsecurity = "starttls"\n'
        + f'username = "{imap.user}"\nca_file = "{imap.ca_file}"\nmove_to = "Newsletter"\n',
        encoding="utf-8",
    )
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    issue = ensure_issue(engine, slug="ki", title="KI", subject="Meta und KI", language="de")
    readers = [add_subscriber(engine, f"leser{n}@example.de").id for n in range(1000)]
    messages = []
    for n in range(MESSAGES):
        message = EmailMessage()
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain="leser.example")
        if n < MESSAGES - UNRELATED:
            reader = readers[n % len(readers)]
            message["From"] = f"leser{n % len(readers)}@example.de"
            message["To"] = tokens.reply_address_for(
                "replies.example.com", issue, reader, TEST_SECRET
            )
            message["Subject"] = "Re: Meta und KI"
            message.set_content(f"Danke für die Ausgabe, Nummer {n} – „sehr gut“.\n\n> zitiert\n")
        else:
            message["From"] = f"freund{n}@example.net"
            message["To"] = "jens@example.com"
            message["Subject"] = "Grillen?"
            message.set_content("Kommst du?")
        messages.append(message.as_bytes())
    engine.dispose()
    return root, messages


def bare_fetch(imap: Dovecot) -> float:
    import ssl

    from imap_tools import MailBoxStartTls

    started = time.perf_counter()
    context = ssl.create_default_context(cafile=imap.ca_file)
    with MailBoxStartTls("127.0.0.1", imap.port, ssl_context=context).login(
        imap.user, imap.password
    ) as box:
        count = sum(1 for _ in box.fetch("ALL", mark_seen=False, bulk=200))
    assert count == MESSAGES
    return time.perf_counter() - started


def fetch_figures(runs: int) -> None:
    env = {
        **os.environ,
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_IMAP_PASSWORD": Dovecot.password,
    }
    fetches, floors = [], []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="bench-replies-"))
        try:
            with Dovecot() as imap:
                root, messages = project(tmp, imap)
                fill_mailbox(imap, messages)
                floors.append(bare_fetch(imap))
                fetches.append(run(root, "replies", "fetch", env=env))
                left = len(imap.messages("INBOX"))
                assert left == UNRELATED, left
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"  fetch {MESSAGES:,}: {fetches[-1]:.2f} s (bare imap-tools fetch {floors[-1]:.2f} s)"
        )
    fetch, floor = statistics.median(fetches), statistics.median(floors)
    print(
        f"replies fetch of {MESSAGES:,} messages: median {fetch:.2f} s "
        f"({MESSAGES / fetch:,.0f} messages/s; target <= 30 s); bare fetch {floor:.2f} s, "
        f"ratio {fetch / floor:.1f}"
    )


def list_figures(runs: int) -> None:
    from sqlalchemy import insert

    from newsletter.store import schema
    from newsletter.store.engine import open_engine

    tmp = Path(tempfile.mkdtemp(prefix="bench-replies-list-"))
    try:
        root = tmp / "project"
        (root / "issues").mkdir(parents=True)
        (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(schema.subscribers),
                [
                    {
                        "email": f"leser{n}@example.de",
                        "email_key": f"leser{n}@example.de",
                        "status": "subscribed",
                        "fields": {},
                        "created_at": start,
                        "updated_at": start,
                    }
                    for n in range(20_000)
                ],
            )
            replies, threads = [], {}
            for n in range(STORED):
                thread = n % THREADS + 1
                at = start + timedelta(minutes=n)
                replies.append(
                    {
                        "id": n + 1,
                        "subscriber_id": thread % 20_000 + 1,
                        "from_email": "x@example.de",
                        "subject": "Re: KI",
                        "text": f"Antwort {n}\nzweite Zeile",
                        "attachments": [],
                        "received_at": at,
                        "automatic": n % 50 == 0,
                        "thread_id": thread,
                    }
                )
                threads.setdefault(
                    thread,
                    {
                        "id": thread,
                        "subscriber_id": thread % 20_000 + 1,
                        "state": "new",
                        "automatic": False,
                        "messages": 0,
                        "created_at": at,
                    },
                )
                threads[thread]["messages"] += 1
                threads[thread]["last_at"] = at
            conn.execute(insert(schema.replies), replies)
            conn.execute(insert(schema.reply_threads), list(threads.values()))
        engine.dispose()
        env = {**os.environ, "NEWSLETTER_SECRET_KEY": TEST_SECRET}
        run(root, "replies", env=env)  # bytecode and page cache, as a user's second call
        times = [run(root, "replies", env=env) for _ in range(runs)]
        for took in times:
            print(f"  replies with {STORED:,} stored: {took:.3f} s")
        print(
            f"replies (list) with {STORED:,} replies in {THREADS:,} threads: median "
            f"{statistics.median(times):.3f} s (target <= 0.5 s)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    list_figures(runs)
    fetch_figures(runs)
