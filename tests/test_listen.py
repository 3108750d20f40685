"""The listening socket `serve` and `preview` bind themselves (newsletter/listen.py)."""

from __future__ import annotations

import asyncio
import socket

from newsletter.listen import bind


def test_connections_to_the_bound_socket_answer_without_nagles_delay():
    """The socket was made with protocol 0, so asyncio left Nagle's algorithm on for every
    connection it accepted: each answer on a kept-alive connection waited about 40 ms for
    the client's delayed ACK (`newsletter serve` answered /healthz in 43 ms instead of 1 ms,
    and the Event Webhook's ingest fell by a third)."""
    sock, _ = bind("127.0.0.1", 0, take_free_port=False)
    port = sock.getsockname()[1]
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
