"""TLS to a private server (an SMTP relay, an IMAP mailbox): the CA certificate that
`newsletter.toml` names in `[smtp] ca_file` or `[replies.imap] ca_file`.

The file is read once, when the transport or mailbox is set up (and by `doctor`), so a
missing or wrong file is one located error before anything connects, not a traceback from
the ssl module halfway through a send or a fetch.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import ConfigError
from newsletter.files import NotARegularFile, read_regular

if TYPE_CHECKING:
    from newsletter.project import Project

#: A CA bundle is a few hundred kilobytes at most.
MAX_CA_BYTES = 10 << 20


def ca_file_path(project: Project, ca_file: str) -> Path:
    """Where `ca_file` is: a relative path is taken from the project folder (where
    `newsletter.toml` is), like the database's, not from wherever the command runs."""
    path = Path(ca_file).expanduser()
    return path if path.is_absolute() else project.root / path


def ca_certificate(project: Project, table: str, ca_file: str) -> str:
    """The PEM text of `[table] ca_file`; a ConfigError naming the file and the key when it
    is missing, not a file, or not a PEM certificate (nor a wait on a named pipe)."""
    where = f"{project.config.path}: [{table}] ca_file {ca_file!r}"
    try:
        pem = read_regular(ca_file_path(project, ca_file), MAX_CA_BYTES, "CA certificate")
    except NotARegularFile as exc:
        if exc.missing:
            raise ConfigError(
                f"{where}: no such file; give the path of the server's CA certificate (PEM) "
                "or remove the key"
            ) from None
        raise ConfigError(f"{where}: {exc.reason}") from None
    # The certificates alone: a bundle may say whose they are in a comment (in German too),
    # which the ssl module, reading cadata, refuses.
    blocks = _PEM_BLOCK.findall(pem.decode("utf-8", "replace"))
    text = "\n".join(blocks)
    try:
        if not blocks:
            raise ValueError("no certificate")
        ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError):
        raise ConfigError(
            f"{where}: is not a PEM certificate (-----BEGIN CERTIFICATE-----); "
            "convert it with `openssl x509 -in FILE -out ca.pem`"
        ) from None
    return text


_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")
