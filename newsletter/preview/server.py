"""Run the preview app with uvicorn: on a port we bound ourselves, stopping cleanly.

We bind the socket before uvicorn starts (`newsletter.listen`), so "port taken, pick another"
has no race and the printed URL is the one that answers. An open event stream would make
uvicorn wait for it on Ctrl-C; `PreviewServer` ends the streams first so the server stops at
once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from newsletter.errors import NewsletterError
from newsletter.listen import bind, url_of


class PreviewServer(uvicorn.Server):
    """uvicorn that closes the preview's event streams when asked to stop."""

    def __init__(self, app: Starlette, **options: Any):
        options.setdefault("log_level", "warning")
        options.setdefault("lifespan", "on")
        options.setdefault("timeout_graceful_shutdown", 3)
        super().__init__(uvicorn.Config(app, **options))
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.app.state.hub.close()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Ask the server to stop (from any thread)."""
        self.app.state.hub.close()
        self.should_exit = True


@dataclass
class RunningServer:
    """A preview server in a background thread (tests and benchmarks use this)."""

    server: PreviewServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)


def start_in_thread(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve `app` on a thread; returns once it answers (or raises if it failed to start)."""
    sock, _moved = bind(host, port)
    server = PreviewServer(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="newsletter-preview", daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise NewsletterError("the preview server failed to start; see the messages above")
        thread.join(timeout=0.02)
    return RunningServer(server=server, thread=thread, url=url_of(sock))
