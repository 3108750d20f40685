"""A real IMAP server for the tests: Debian's Dovecot, run on 127.0.0.1 on a free port with a
throwaway mail store and one user, STARTTLS and implicit TLS with a self-signed certificate.

    with Dovecot() as imap:                 # skips the test when dovecot is not installed
        imap.append(raw_bytes)              # put a message in the INBOX
        imap.port, imap.tls_port, imap.ca_file, imap.user, imap.password
        imap.messages("INBOX")              # [(flags, raw bytes)] of a folder, as it is now

`.ci/run` installs `dovecot-imapd`. As root, the mail store belongs to the `dovecot` user
(Dovecot never gives mailbox access to uid 0); otherwise everything runs as the caller.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.smtp_server import make_certificate

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = newsletter-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
first_valid_gid = {gid}
default_login_user = {login_user}
default_internal_user = {internal_user}
{maybe_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = home={root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    user = "leserpost@example.com"
    password = "imap-geheim-do-not-print"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-imap-"))
        self.port = _free_port()
        self.tls_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> str:
        return str(self.root / "cert.pem")

    def __enter__(self) -> Dovecot:
        if not os.path.exists(DOVECOT):
            pytest.skip("Debian's dovecot-imapd is not installed (.ci/run installs it)")
        cert, key = make_certificate(self.root)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("dovecot")
            uid, gid, login, internal, run_as = (
                owner.pw_uid,
                owner.pw_gid,
                "dovenull",
                "dovecot",
                "",
            )
        else:
            me = pwd.getpwuid(os.geteuid())
            uid, gid, login, internal = me.pw_uid, me.pw_gid, me.pw_name, me.pw_name
            run_as = ""
        (self.root / "mail").mkdir()
        (self.root / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        config = self.root / "dovecot.conf"
        config.write_text(
            CONFIG.format(
                root=self.root,
                cert=cert,
                key=key,
                port=self.port,
                tls_port=self.tls_port,
                uid=uid,
                gid=gid,
                login_user=login,
                internal_user=internal,
                maybe_user=run_as,
            )
        )
        if os.geteuid() == 0:
            os.chown(self.root / "mail", uid, gid)
            os.chmod(self.root, 0o755)
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (
                    (self.root / "dovecot.log").read_text()
                    if (self.root / "dovecot.log").exists()
                    else ""
                )
                raise AssertionError(f"dovecot did not start: {self.process.stderr.read()!r} {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("dovecot did not listen")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _client(self) -> imaplib.IMAP4:
        context = ssl.create_default_context(cafile=self.ca_file)
        client = imaplib.IMAP4("127.0.0.1", self.port)
        client.starttls(ssl_context=context)
        client.login(self.user, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        client = self._client()
        try:
            client.create(folder)  # an error when it exists, which is fine
            typ, _ = client.append(folder, None, None, raw)
            assert typ == "OK"
        finally:
            client.logout()

    def messages(self, folder: str = "INBOX") -> list[tuple[str, bytes]]:
        client = self._client()
        try:
            typ, _ = client.select(folder, readonly=True)
            if typ != "OK":
                return []
            typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
            out = []
            for item in data:
                if isinstance(item, tuple):
                    flags = item[0].decode().split("FLAGS (", 1)[1].split(")", 1)[0]
                    out.append((flags, item[1]))
            return out
        finally:
            client.logout()
