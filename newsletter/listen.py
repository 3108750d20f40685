"""A listening socket, bound before a server starts (`serve`, `preview`).

Binding it ourselves, before uvicorn runs, means the URL we print is the one that answers
(`--port 0` names the port it got) and an address that cannot be had is one line naming
it and the fix, instead of uvicorn's log line and exit 3 after "Serving ..." was printed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from newsletter.errors import NewsletterError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int, *, take_free_port: bool = True) -> tuple[socket.socket, bool]:
    """A listening socket on `host:port`; with `take_free_port`, on a free port if that one
    is taken (or needs root).

    Returns the socket and whether it had to fall back to another port. NewsletterError
    when the address cannot be had, naming it and what to do.
    """
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = (port, 0) if take_free_port and port != 0 else (port,)
    for candidate in candidates:
        # IPPROTO_TCP, not 0: asyncio switches Nagle's algorithm off (TCP_NODELAY) only on
        # connections whose socket says TCP. With 0 every answer on a kept-alive connection
        # waited ~40 ms for the client's delayed ACK (webhook ingest fell by a third).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            taken = exc.errno in (errno.EADDRINUSE, errno.EACCES)
            if taken and candidate != candidates[-1]:
                continue  # the free port next
            raise NewsletterError(
                f"cannot listen on {_address(host, candidate)}: {_why(exc, host)}"
            ) from None
        sock.listen(128)
        sock.set_inheritable(True)
        return sock, candidate != port
    raise AssertionError("unreachable")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: OSError, host: str) -> str:
    """What went wrong, and the fix."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this machine ({exc.strerror}); "
            "pass another --host, e.g. 127.0.0.1"
        )
    if exc.errno == errno.EADDRINUSE:
        return "another program listens there; stop it, or pass another --port"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need root; pass another --port, e.g. 8000"
    return f"{exc.strerror}; pass another --host or --port"


def url_of(sock: socket.socket) -> str:
    """The URL that answers on `sock` (a wildcard address as the loopback one)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"
