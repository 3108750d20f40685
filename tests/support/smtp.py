"""Shared test helpers: smtp."""

from __future__ import annotations

from tests.conftest import CONFIG
from tests.smtp_server import FakeSmtp

PASSWORD = "geheim-do-not-print"


def smtp_config(smtp: FakeSmtp, *, extra: str = "", security: str = "starttls") -> str:
    ca = f'ca_file = "{smtp.ca_file}"\n' if smtp.ca_file else ""
    user = 'username = "jens"\n' if smtp.users else ""
    return (
        CONFIG
        + '\n[sending]\ntransport = "smtp"\nbatch_size = 3\nconcurrency = 2\nmax_retries = 2\n'
        + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "{security}"\n'
        + user
        + ca
        + extra
    )
