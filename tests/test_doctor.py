"""`newsletter doctor` against a real DNS server on 127.0.0.1 (dnslib) serving good, missing
and wrong records, the fake SendGrid over HTTP for the authenticated domain, a real
`newsletter serve` for /healthz, and real databases for the list's rates."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from newsletter import events
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.schema import CUSTOM_ARG_ISSUE, CUSTOM_ARG_SUBSCRIBER, subscribers
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG
from tests.sendgrid_server import FakeSendGrid, authenticated_domain
from tests.support.dns_server import ZoneServer
from tests.support.serve_processes import serve_process

ALL_SECRETS = {
    "SENDGRID_API_KEY": "SG.test-key",
    "SENDGRID_WEBHOOK_PUBLIC_KEY": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE-not-checked-here",
    "NEWSLETTER_INBOUND_SECRET": "inbound-secret-1234",
}
REPLIES = '\n[replies]\ndomain = "reply.example.com"\n'
RETURN_PATH = '\n[doctor]\nreturn_path = "em1234.example.com"\n'

GOOD_SENDGRID = """
example.com.                 TXT    "v=spf1 include:_spf.google.com ~all"
em1234.example.com.          CNAME  u1.wl2.sendgrid.net.
s1._domainkey.example.com.   CNAME  s1.domainkey.u1.wl2.sendgrid.net.
s2._domainkey.example.com.   CNAME  s2.domainkey.u1.wl2.sendgrid.net.
_dmarc.example.com.          TXT    "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com"
reply.example.com.           MX     10 mx.sendgrid.net.
"""
EMPTY = """
www.example.com.             A      192.0.2.1
"""
WRONG = """
example.com.                 TXT    "v=spf1 include:_spf.google.com ~all"
s1._domainkey.example.com.   CNAME  s1.domainkey.mailchimp.example.net.
_dmarc.example.com.          TXT    "v=DMARC1; rua=mailto:dmarc@example.com"
reply.example.com.           MX     10 mail.example.com.
"""


def doctor(cli, root: Path, dns: ZoneServer, *args: str):
    return cli(root, "doctor", "--nameserver", dns.address, *args)


def rows(result) -> dict[str, dict]:
    data = json.loads(result.output)
    return {check["name"]: check for check in data["checks"]}


@pytest.fixture
def secrets(monkeypatch):
    for name, value in ALL_SECRETS.items():
        monkeypatch.setenv(name, value)


def test_good_sendgrid_domain_passes_every_dns_check(cli, make_project, secrets):
    root = make_project(config=CONFIG + REPLIES + RETURN_PATH)
    with ZoneServer(GOOD_SENDGRID) as dns:
        result = doctor(cli, root, dns, "--offline")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "✓  SPF" in text and "return path em1234.example.com -> u1.wl2.sendgrid.net" in text
    assert "✓  DKIM" in text and "s2._domainkey.example.com -> s2.domainkey" in text
    assert "✓  DMARC" in text and "p=quarantine" in text
    assert "✓  alignment" in text
    assert "✓  reply MX" in text and "reply.example.com MX mx.sendgrid.net" in text
    assert "-  serve" in text and "--offline" in text
    assert "✗" not in text
    for value in ALL_SECRETS.values():
        assert value not in text  # secrets: only whether they are set
    assert "All checks passed." in text or "warning" in text


def test_missing_records_each_get_the_record_to_add(cli, make_project, secrets):
    root = make_project(config=CONFIG + REPLIES)
    with ZoneServer(EMPTY) as dns:
        result = doctor(cli, root, dns, "--offline", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.output)["ok"] is False
    checks = rows(result)
    assert checks["SPF"]["status"] == "fail"
    assert 'add example.com TXT "v=spf1 include:sendgrid.net ~all"' in checks["SPF"]["fix"]
    assert checks["DKIM"]["status"] == "fail"
    assert "s1._domainkey.example.com has no CNAME" in checks["DKIM"]["found"]
    assert "add s1._domainkey.example.com CNAME" in checks["DKIM"]["fix"]
    assert "add s2._domainkey.example.com CNAME" in checks["DKIM"]["fix"]
    assert checks["DMARC"]["status"] == "fail"
    assert checks["DMARC"]["fix"] == (
        'add _dmarc.example.com TXT "v=DMARC1; p=none; rua=mailto:dmarc@example.com"'
    )
    assert checks["alignment"]["status"] == "fail"
    assert checks["reply MX"]["status"] == "fail"
    assert checks["reply MX"]["fix"] == "add reply.example.com MX 10 mx.sendgrid.net"


def test_wrong_records_are_named_with_the_change(cli, make_project, secrets):
    root = make_project(config=CONFIG + REPLIES)
    with ZoneServer(WRONG) as dns:
        result = doctor(cli, root, dns, "--offline", "--format", "json")
    assert result.exit_code == 1
    checks = rows(result)
    assert checks["SPF"]["status"] == "fail"
    assert "does not cover SendGrid" in checks["SPF"]["found"]
    assert (
        'change the SPF record of example.com to "v=spf1 include:sendgrid.net '
        'include:_spf.google.com ~all"' in checks["SPF"]["fix"]
    )
    assert (
        "s1._domainkey.example.com points to s1.domainkey.mailchimp.example.net"
        in (checks["DKIM"]["found"])
    )
    assert checks["DMARC"]["status"] == "fail" and "no valid policy" in checks["DMARC"]["found"]
    assert "points to mail.example.com" in checks["reply MX"]["found"]
    assert checks["reply MX"]["fix"] == (
        "make reply.example.com MX 10 mx.sendgrid.net its only MX record"
    )


def test_spf_include_on_the_from_domain_and_two_spf_records(cli, make_project, secrets):
    root = make_project(config=CONFIG)
    zone = GOOD_SENDGRID.replace("include:_spf.google.com", "include:sendgrid.net")
    with ZoneServer(zone) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "ok"
    assert "include:sendgrid.net" in checks["SPF"]["found"]
    # SendGrid's own return path: only DKIM is aligned, which is enough for DMARC.
    assert checks["alignment"]["status"] == "ok"
    assert "SPF checks" not in checks["alignment"]["found"]

    doubled = zone + 'example.com. TXT "v=spf1 a ~all"\n'
    with ZoneServer(doubled) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "fail"
    assert "2 SPF records" in checks["SPF"]["found"]


def test_spf_includes_are_followed_and_too_many_lookups_fail(cli, make_project, secrets):
    root = make_project(config=CONFIG)
    nested = (
        GOOD_SENDGRID.replace("include:_spf.google.com", "include:_spf.example.com")
        + '_spf.example.com. TXT "v=spf1 include:sendgrid.net ip4:192.0.2.0/24 ~all"\n'
    )
    with ZoneServer(nested) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "ok"
    assert "includes sendgrid.net" in checks["SPF"]["found"]

    chain = "".join(
        f'n{i}.example.com. TXT "v=spf1 include:n{i + 1}.example.com a mx ~all"\n' for i in range(5)
    )
    deep = (
        GOOD_SENDGRID.replace(
            "include:_spf.google.com", "include:n0.example.com include:sendgrid.net"
        )
        + chain
    )
    with ZoneServer(deep) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "fail"
    assert "DNS lookups; receivers stop at 10" in checks["SPF"]["found"]


@pytest.mark.slow
def test_return_path_learned_from_sendgrid(cli, make_project, monkeypatch, secrets):
    root = make_project(config=CONFIG)
    with FakeSendGrid() as sendgrid:
        sendgrid.whitelabel_domains = [
            authenticated_domain("example.com", "em5678", "u9.wl9.sendgrid.net")
        ]
        monkeypatch.setenv("SENDGRID_API_HOST", sendgrid.url)
        missing = GOOD_SENDGRID.replace("u1.wl2", "u9.wl9")
        with ZoneServer(missing) as dns:
            result = doctor(cli, root, dns, "--format", "json")
        checks = rows(result)
        assert checks["SendGrid domain"]["status"] == "ok"
        assert checks["SPF"]["status"] == "fail"
        assert checks["SPF"]["found"] == "the return path em5678.example.com has no CNAME"
        assert checks["SPF"]["fix"].startswith("add em5678.example.com CNAME u9.wl9.sendgrid.net")
        assert checks["DKIM"]["status"] == "ok"

        good = missing + "em5678.example.com. CNAME u9.wl9.sendgrid.net.\n"
        with ZoneServer(good) as dns:
            checks = rows(doctor(cli, root, dns, "--format", "json"))
        assert checks["SPF"]["status"] == "ok"
        assert "em5678.example.com -> u9.wl9.sendgrid.net" in checks["SPF"]["found"]
        assert "SPF checks em5678.example.com" in checks["alignment"]["found"]

        monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
        with ZoneServer(good) as dns:
            checks = rows(doctor(cli, root, dns, "--format", "json"))
        assert checks["SendGrid domain"]["status"] == "warn"
        assert "check SENDGRID_API_KEY" in checks["SendGrid domain"]["found"]
        assert "SG.wrong" not in json.dumps(checks)


SMTP = CONFIG + '\n[sending]\ntransport = "smtp"\n\n[smtp]\nhost = "smtp.example.com"\n'
SMTP_ZONE = """
example.com.                 TXT    "v=spf1 ip4:192.0.2.0/24 -all"
smtp.example.com.            A      192.0.2.25
nl._domainkey.example.com.   TXT    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"
_dmarc.example.com.          TXT    "v=DMARC1; p=reject"
"""


@pytest.mark.slow
def test_smtp_spf_covers_the_host_and_dkim_selectors(cli, make_project):
    root = make_project(config=SMTP + '\n[doctor]\ndkim_selectors = ["nl"]\n')
    with ZoneServer(SMTP_ZONE) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "ok"
    assert "smtp.example.com (ip4:192.0.2.0/24)" in checks["SPF"]["found"]
    assert checks["DKIM"]["status"] == "ok"
    assert "nl._domainkey.example.com has a key" in checks["DKIM"]["found"]
    assert checks["DMARC"]["found"].startswith("p=reject")
    assert checks["alignment"]["status"] == "ok"
    assert checks["transport"]["status"] == "ok"  # the SMTP transport needs no SendGrid key
    assert "webhook key" not in checks

    moved = SMTP_ZONE.replace("192.0.2.25", "198.51.100.7")
    root = make_project(config=SMTP, name="moved")
    with ZoneServer(moved) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "fail"
    assert "does not cover the SMTP host smtp.example.com" in checks["SPF"]["found"]
    assert "[doctor] spf_include" in checks["SPF"]["fix"]
    assert checks["DKIM"]["status"] == "warn"
    assert "[doctor] dkim_selectors" in checks["DKIM"]["fix"]


def test_smtp_spf_include(cli, make_project):
    config = SMTP + '\n[doctor]\nspf_include = "spf.mailbox.example"\n'
    root = make_project(config=config)
    with ZoneServer(SMTP_ZONE) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "fail"
    assert checks["SPF"]["fix"] == (
        'change the SPF record of example.com to "v=spf1 include:spf.mailbox.example '
        'ip4:192.0.2.0/24 -all"'
    )
    zone = SMTP_ZONE.replace("ip4:192.0.2.0/24", "include:spf.mailbox.example")
    with ZoneServer(zone) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["SPF"]["status"] == "ok"


@pytest.mark.slow
def test_dns_server_that_does_not_answer_is_not_a_missing_record(cli, make_project, secrets):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # takes the queries, never answers
        root = make_project(config=CONFIG)
        port = silent.getsockname()[1]
        result = cli(root, "doctor", "--offline", "--nameserver", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert "no answer from DNS: 127.0.0.1:" in result.output
    assert "--nameserver HOST[:PORT]" in result.output


def test_bad_nameserver_is_a_usage_error(cli, make_project):
    root = make_project(config=CONFIG)
    result = cli(root, "doctor", "--nameserver", "127.0.0.1:notaport")
    assert result.exit_code == 2
    assert "the port must be a number" in result.output


def test_setup_checks_name_what_is_missing(cli, make_project, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    config = CONFIG.replace(
        'base_url = "https://news.example.com"', 'base_url = "http://news.example.com"'
    )
    root = make_project(config=config + REPLIES)
    with ZoneServer(GOOD_SENDGRID) as dns:
        result = doctor(cli, root, dns, "--offline", "--format", "json")
    checks = rows(result)
    assert result.exit_code == 1
    assert checks["base_url"]["status"] == "fail"
    assert 'base_url = "https://news.example.com"' in checks["base_url"]["fix"]
    for name, variable in [
        ("secret key", "NEWSLETTER_SECRET_KEY"),
        ("webhook key", "SENDGRID_WEBHOOK_PUBLIC_KEY"),
        ("inbound secret", "NEWSLETTER_INBOUND_SECRET"),
    ]:
        assert checks[name]["status"] == "fail", name
        assert variable in checks[name]["found"]
        assert "newsletter secrets init" in checks[name]["fix"]
    assert checks["transport"]["status"] == "fail"
    assert "SENDGRID_API_KEY is not set" in checks["transport"]["found"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_serve(project: Path):
    """A real `newsletter serve` on 127.0.0.1; yields its base URL."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with serve_process(project, env) as url:
        yield url


@pytest.mark.slow  # starts a real server process
def test_healthz_of_the_real_serve(cli, project: Path, running_serve: str, secrets):
    config = (project / "newsletter.toml").read_text("utf-8")
    (project / "newsletter.toml").write_text(
        config.replace("https://news.example.com", running_serve), "utf-8"
    )
    with ZoneServer(GOOD_SENDGRID) as dns:
        checks = rows(doctor(cli, project, dns, "--format", "json"))
        assert checks["serve"]["status"] == "ok"
        assert f"{running_serve}/healthz answered 200" in checks["serve"]["found"]
        assert checks["base_url"]["status"] == "fail"  # http://, not HTTPS

        dead = f"http://127.0.0.1:{_free_port()}"
        (project / "newsletter.toml").write_text(
            config.replace("https://news.example.com", dead), "utf-8"
        )
        checks = rows(doctor(cli, project, dns, "--format", "json"))
    assert checks["serve"]["status"] == "fail"
    assert f"{dead}/healthz: no answer" in checks["serve"]["found"]
    assert "start `newsletter serve`" in checks["serve"]["fix"]


def _readers(engine, n: int) -> list[int]:
    """`n` subscribed readers at once (add_subscriber one by one is slow for 800)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(subscribers),
            [
                {
                    "email": f"leser{i}@example.org",
                    "email_key": f"leser{i}@example.org",
                    "status": "subscribed",
                    "fields": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )
        return list(conn.execute(select(subscribers.c.id).order_by(subscribers.c.id)).scalars())


def _events(engine, issue_id: int, name: str, ids: list[int]) -> None:
    now = datetime.now(UTC).timestamp()
    events.ingest(
        engine,
        [
            {
                "event": name,
                "sg_event_id": f"{name}-{i}",
                "timestamp": now,
                CUSTOM_ARG_SUBSCRIBER: str(i),
                CUSTOM_ARG_ISSUE: str(issue_id),
            }
            for i in ids
        ],
    )


@pytest.mark.parametrize(
    ("complaints", "status"), [(0, "ok"), (1, "warn"), (2, "warn"), (3, "fail")]
)
def test_complaint_rate_against_gmails_limits(
    cli, make_project, database_url, monkeypatch, secrets, complaints, status
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG)
    engine = open_engine(Project.load(root).database_url)
    ids = _readers(engine, 800)
    issue_id = ensure_issue(engine, slug="x", title="X", subject="X", language="de")
    _events(engine, issue_id, "delivered", ids)
    _events(engine, issue_id, "spamreport", ids[:complaints])
    with ZoneServer(GOOD_SENDGRID) as dns:
        checks = rows(doctor(cli, root, dns, "--offline", "--format", "json"))
    assert checks["complaint rate"]["status"] == status
    assert f"({complaints} of 800 delivered, last 30 days)" in checks["complaint rate"]["found"]


def test_bounce_rate_and_consent_evidence(cli, make_project, database_url, monkeypatch, secrets):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG)
    engine = open_engine(Project.load(root).database_url)
    for i in range(20):
        add_subscriber(engine, f"leser{i}@example.org")
    issue_id = ensure_issue(engine, slug="x", title="X", subject="X", language="de")
    ids = list(range(1, 21))
    _events(engine, issue_id, "delivered", ids[:18])
    _events(engine, issue_id, "bounce", ids[18:])
    with ZoneServer(GOOD_SENDGRID) as dns:
        result = doctor(cli, root, dns, "--offline", "--format", "json")
    checks = rows(result)
    assert checks["bounce rate"]["status"] == "fail"
    assert "10.00 % (2 of 20 sent" in checks["bounce rate"]["found"]
    assert checks["consent evidence"]["status"] == "warn"
    assert (
        "18 of 18 readers (100.0 %) have no consent evidence" in checks["consent evidence"]["found"]
    )
    assert "--no-consent-evidence" in checks["consent evidence"]["fix"]


def test_table_format_and_help(cli, make_project, secrets):
    root = make_project(config=CONFIG + RETURN_PATH)
    with ZoneServer(EMPTY) as dns:
        result = doctor(cli, root, dns, "--offline")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "DNS"
    spf = next(i for i, line in enumerate(lines) if "✗  SPF" in line)
    assert lines[spf + 1].strip().startswith("fix: add em1234.example.com CNAME")
    assert result.output.rstrip().endswith("(!).") or "problems (✗)" in lines[-1]
    help_text = cli(None, "doctor", "--help").output
    assert "--nameserver HOST[:PORT]" in help_text and "Example:" in help_text


def test_an_unreachable_database_is_one_row_and_the_rest_still_shows(
    cli, make_project, monkeypatch, secrets
):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens here once it is closed
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/none")
    root = make_project(config=CONFIG + RETURN_PATH)
    with ZoneServer(GOOD_SENDGRID) as dns:
        result = doctor(cli, root, dns, "--offline", "--format", "json")
    assert result.exit_code == 1
    checks = rows(result)
    assert checks["database"]["status"] == "fail"
    assert "NEWSLETTER_DATABASE_URL" in checks["database"]["fix"]
    assert checks["SPF"]["status"] == "ok" and checks["secret key"]["status"] == "ok"
