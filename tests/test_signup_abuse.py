"""Sign-up abuse (issue 26 item 4, issue 28 item 6): honeypot and fill time, throwaway
domains, per-network limits (IPv4 address, IPv6 /64) shared by every serve process, one
confirmation mail per address per 10 minutes and 3 a day. Blocked attempts answer like real
ones and are counted in `stats --list`. In-process and over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select, update
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG
from tests.support.serve_processes import serve_processes
from tests.support.web import live_server

SUBSCRIBED_PAGE = "Bitte bestätige"  # what a real sign-up's answer says (German project)


@pytest.fixture
def signup_project(
    make_project: Callable[..., Path], database_url: str
) -> Callable[..., tuple[Project, TestClient]]:
    """A project on the parametrized database, with `[subscribe]` lines added; and a
    TestClient whose requests come from `client_ip`."""

    def make(subscribe: str = "", client_ip: str = "192.0.2.10") -> tuple[Project, TestClient]:
        config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
        root = make_project(config + "\n[subscribe]\n" + subscribe + "\n")
        project = Project.load(root)
        app = create_app(project, open_engine(project.database_url))
        return project, TestClient(app, client=(client_ip, 50000))

    return make


def mails(project: Project) -> list[str]:
    return sorted(p.name for p in (project.root / "outbox").glob("*.eml"))


def blocked_counts(cli, project: Project) -> dict[str, int]:
    result = cli(project.root, "stats", "--list", "--by", "month", "--format", "json")
    assert result.exit_code == 0, result.output
    periods = json.loads(result.output)["periods"]
    total: dict[str, int] = {"blocked": sum(p["blocked"] for p in periods)}
    for period in periods:
        for reason, n in period["blocked_by"].items():
            total[reason] = total.get(reason, 0) + n
    return total


def shown_stamp(client: TestClient) -> str:
    form = BeautifulSoup(client.get("/subscribe").text, "html.parser")
    return form.find("input", attrs={"name": "shown"})["value"]


def test_bots_get_the_same_answer_and_are_counted(signup_project, cli, monkeypatch):
    project, client = signup_project()
    real = client.post("/subscribe", data={"email": "echt@example.de"})
    honeypot = client.post(
        "/subscribe", data={"email": "bot@example.de", "website": "https://spam.example"}
    )
    too_fast = client.post(
        "/subscribe", data={"email": "schnell@example.de", "shown": shown_stamp(client)}
    )
    forged = client.post("/subscribe", data={"email": "falsch@example.de", "shown": "x.y.z"})
    assert real.status_code == honeypot.status_code == too_fast.status_code == 200
    assert real.text == honeypot.text == too_fast.text == forged.text
    assert SUBSCRIBED_PAGE in real.text
    engine = open_engine(project.database_url)
    for address in ("bot@example.de", "schnell@example.de", "falsch@example.de"):
        assert find_subscriber(engine, address) is None
    assert len(mails(project)) == 1

    # A person who took their time: the stamp of a form shown ten seconds ago.
    from itsdangerous.timed import TimestampSigner

    with monkeypatch.context() as m:
        m.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 10)
        stamp = shown_stamp(client)
    client.post("/subscribe", data={"email": "geduldig@example.de", "shown": stamp})
    assert find_subscriber(engine, "geduldig@example.de").status == "unconfirmed"
    assert blocked_counts(cli, project) == {"blocked": 3, "bot": 3}
    table = cli(project.root, "stats", "--list").output
    assert "BLOCKED" in table.splitlines()[0]


def test_fill_time_can_be_switched_off(signup_project):
    project, client = signup_project("min_fill_seconds = 0")
    client.post("/subscribe", data={"email": "schnell@example.de", "shown": shown_stamp(client)})
    engine = open_engine(project.database_url)
    assert find_subscriber(engine, "schnell@example.de").status == "unconfirmed"


def test_throwaway_domains_are_turned_away_unless_switched_off(signup_project, cli):
    project, client = signup_project()
    for address in ("wegwerf@mailinator.com", "wegwerf@Sub.Mailinator.com"):
        answer = client.post("/subscribe", data={"email": address})
        assert answer.status_code == 200 and SUBSCRIBED_PAGE in answer.text
    engine = open_engine(project.database_url)
    assert find_subscriber(engine, "wegwerf@mailinator.com") is None
    assert mails(project) == []
    assert blocked_counts(cli, project) == {"blocked": 2, "domain": 2}

    project, client = signup_project("block_disposable = false", client_ip="192.0.2.11")
    client.post("/subscribe", data={"email": "wegwerf@mailinator.com"})
    engine = open_engine(project.database_url)
    assert find_subscriber(engine, "wegwerf@mailinator.com").status == "unconfirmed"


def _age_attempts(project: Project, by: timedelta) -> None:
    """Move every recorded sign-up attempt `by` into the past (time passing)."""
    engine = open_engine(project.database_url)
    table = schema.signup_attempts
    with engine.begin() as conn:
        for row_id, at in conn.execute(select(table.c.id, table.c.attempted_at)).all():
            conn.execute(update(table).where(table.c.id == row_id).values(attempted_at=at - by))


def test_one_confirmation_mail_per_address_per_10_minutes_and_3_a_day(signup_project, cli):
    """Issue 28 item 6: the form mailed an address as often as it was posted."""
    project, client = signup_project("rate_limit_per_hour = 1000")
    for _ in range(3):
        answer = client.post("/subscribe", data={"email": "opfer@example.de"})
        assert answer.status_code == 200 and SUBSCRIBED_PAGE in answer.text
    assert len(mails(project)) == 1
    _age_attempts(project, timedelta(minutes=11))
    client.post("/subscribe", data={"email": "Opfer@example.de"})
    assert len(mails(project)) == 2
    _age_attempts(project, timedelta(minutes=11))
    client.post("/subscribe", data={"email": "opfer@example.de"})
    _age_attempts(project, timedelta(minutes=11))
    client.post("/subscribe", data={"email": "opfer@example.de"})
    assert len(mails(project)) == 3  # three a day, then no more
    _age_attempts(project, timedelta(hours=24))
    client.post("/subscribe", data={"email": "opfer@example.de"})
    assert len(mails(project)) == 4  # a day after the first
    assert blocked_counts(cli, project) == {"blocked": 3, "address": 3}
    # Another address is not held up by this one.
    client.post("/subscribe", data={"email": "andere@example.de"})
    assert len(mails(project)) == 5


def test_a_confirmed_address_may_sign_up_again_at_once(signup_project):
    """The mails before a confirmation were wanted: they do not count against the address."""
    project, client = signup_project()
    client.post("/subscribe", data={"email": "zurueck@example.de"})
    engine = open_engine(project.database_url)
    (path,) = (project.root / "outbox").glob("*.eml")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text = mail.get_body(("plain",)).get_content()
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
    assert client.post(link).status_code == 200
    from newsletter.store.subscribers import set_status

    person = find_subscriber(engine, "zurueck@example.de")
    set_status(engine, person.id, "unsubscribed")
    client.post("/subscribe", data={"email": "zurueck@example.de"})
    assert find_subscriber(engine, "zurueck@example.de").status == "unconfirmed"
    assert len(mails(project)) == 2


def test_network_is_an_ipv4_address_or_an_ipv6_64() -> None:
    from newsletter.signup_guard import network_of

    assert network_of("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:2::ffff") == network_of("2001:db8:1:2:ffff::1")
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
    assert network_of("192.0.2.7") == "192.0.2.7" != network_of("192.0.2.8")
    assert network_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert network_of(None) == network_of("") == "unknown"


def test_the_attempts_table_keeps_a_day_and_no_addresses(signup_project):
    project, client = signup_project()
    client.post("/subscribe", data={"email": "privat@example.de"})
    engine = open_engine(project.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(schema.signup_attempts)).all()
    assert {row.scope for row in rows} == {"network", "address"}
    for row in rows:
        assert "privat" not in row.key_hash and "192.0.2" not in row.key_hash
    _age_attempts(project, timedelta(hours=25))
    client.post("/subscribe", data={"email": "neu@example.de"})
    with engine.connect() as conn:
        assert len(conn.execute(select(schema.signup_attempts)).all()) == 2  # only the new ones


def _post(base: str, address: str, client_ip: str) -> httpx.Response:
    # The server trusts X-Forwarded-For from 127.0.0.1, as behind its reverse proxy.
    return httpx.post(
        f"{base}/subscribe",
        data={"email": address},
        headers={"X-Forwarded-For": client_ip},
        timeout=30,
        follow_redirects=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_limits_hold_across_two_serve_processes_on_postgres(
    make_project, database_url, cli, monkeypatch
):
    """Issue 28 item 6 over HTTP: 200 sign-ups from 200 addresses of one IPv6 /64, sent
    alternately to two `newsletter serve` processes on one PostgreSQL database, used to add
    200 people and send 200 mails (the limit was per full address and per process)."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + "\n[subscribe]\nrate_limit_per_hour = 10\n")
    project = Project.load(root)
    engine = open_engine(project.database_url)  # migrated before the servers race to it

    with serve_processes(root, 2) as bases:

        def one(i: int) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            answer = _post(bases[i % 2], f"leser{i}@example.de", f"2001:db8:aa:bb::{i:x}")
            return answer, time.perf_counter() - started

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(200)))
        answers = [answer for answer, _ in results]
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1 and SUBSCRIBED_PAGE in answers[0].text

        with engine.connect() as conn:
            added = conn.execute(select(schema.subscribers.c.email)).scalars().all()
        assert len(added) == 10
        assert len(mails(project)) == 10
        # Blocked answers took as long as real ones, give or take (no bot learns from timing).
        took = {f"leser{i}@example.de": seconds for i, (_, seconds) in enumerate(results)}
        real = [took[address] for address in added]
        turned = [seconds for address, seconds in took.items() if address not in added]
        assert statistics.median(turned) > statistics.median(real) / 10

        # Another /64 and other IPv4 addresses have their own limits.
        assert _post(bases[0], "nachbar@example.de", "2001:db8:aa:cc::1").status_code == 200
        for i in range(3):
            _post(bases[i % 2], f"v4-{i}@example.de", f"198.51.100.{i + 1}")
        # One address posted to both processes at once: one mail.
        with ThreadPoolExecutor(6) as pool:
            list(
                pool.map(
                    lambda i: _post(bases[i % 2], "ziel@example.de", f"203.0.113.{i + 1}"),
                    range(6),
                )
            )
    with engine.connect() as conn:
        emails = set(conn.execute(select(schema.subscribers.c.email)).scalars())
    assert {"nachbar@example.de", "v4-0@example.de", "v4-2@example.de"} <= emails
    assert len(mails(project)) == 10 + 1 + 3 + 1
    assert blocked_counts(cli, project) == {"blocked": 190 + 5, "network": 190, "address": 5}


# --- what a form post may carry (a hostile walk through `serve`) -----------------------------


def test_raw_utf8_in_a_urlencoded_form_is_read_as_utf8(signup_project):
    """Browsers percent-encode; `curl -d 'name=Jörg'` and many a server's form post do not.
    Starlette read those bytes as Latin-1: "JÃ¶rg", and the confirmation went to a wrong
    address."""
    project, client = signup_project("min_fill_seconds = 0")
    body = "email=jörg@example.de&name=Jörg Weiß".encode()
    answer = client.post(
        "/subscribe",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert answer.status_code == 200
    engine = open_engine(project.database_url)
    stored = find_subscriber(engine, "jörg@example.de")
    assert stored is not None and stored.name == "Jörg Weiß"
    assert mails(project) and "jörg@example.de" in mails(project)[0]


def test_an_address_with_bytes_that_are_no_text_is_refused(signup_project):
    project, client = signup_project("min_fill_seconds = 0")
    answer = client.post("/subscribe", content=b"email=%ff%fe@example.com",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status_code == 400
    with open_engine(project.database_url).connect() as conn:
        assert conn.execute(select(schema.subscribers.c.email)).all() == []
    assert mails(project) == []


def test_a_page_field_with_a_nul_is_left_out_of_the_evidence(signup_project):
    """PostgreSQL's text refuses a NUL: the sign-up answered 500."""
    project, client = signup_project("min_fill_seconds = 0")
    answer = client.post(
        "/subscribe", data={"email": "seite@example.de", "page": "https://x.example/\x00a"}
    )
    assert answer.status_code == 200
    with open_engine(project.database_url).connect() as conn:
        pages = conn.execute(select(schema.consent_records.c.page_url)).scalars().all()
    assert pages == [None]


def test_an_oversized_chunked_form_gets_413(signup_project):
    """The form parser's `except Exception` answered the body limit with 400 "Bad form"."""
    project, _client = signup_project()

    def chunks():
        for _ in range(12):
            yield b"x" * 100_000

    with live_server(create_app(project, open_engine(project.database_url))) as base:
        answer = httpx.post(
            base + "/subscribe",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 413


def test_a_confirmation_that_could_not_be_sent_leaves_the_next_try_free(
    make_project, database_url, tmp_path
):
    """The SMTP server was down: 503, but the address's one mail per ten minutes was spent,
    and the retry once it was up said "we sent you a mail" and sent nothing."""
    from tests.smtp_server import FakeSmtp, free_port

    port = free_port()
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    config += (
        '\n[subscribe]\nmin_fill_seconds = 0\n\n[sending]\ntransport = "smtp"\nmax_retries = 0\n'
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )
    project = Project.load(make_project(config))
    client = TestClient(create_app(project, open_engine(project.database_url)))
    down = client.post("/subscribe", data={"email": "geduld@example.de"})
    assert down.status_code == 503
    with FakeSmtp(port=port) as smtp:
        again = client.post("/subscribe", data={"email": "geduld@example.de"})
        assert again.status_code == 200
        assert smtp.recipients() == ["geduld@example.de"]
