"""A minimal HTTP/1.1 server on the event loop for /metrics and the admin endpoint.

GET only, one request per connection, bounded header size and read time: enough for
Prometheus and `sbc status`, with no thread reading the counters while the loop writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

Answer = tuple[int, str, bytes]  # (status, content type, body)
# A node's supervisor answers from its workers' replies: its handlers are coroutines.
Handler = Callable[[], Answer] | Callable[[], Awaitable[Answer]]

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}


class HttpServer:
    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = routes
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        answer = self._answer(head[:MAX_HEAD])
        if not isinstance(answer, tuple):
            answer = await answer
        status, ctype, body = answer
        reply = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        with contextlib.suppress(OSError):
            writer.write(reply)
            await writer.drain()
        writer.close()

    def _answer(self, head: bytes) -> Answer | Awaitable[Answer]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        handler = self.routes.get(target)
        if handler is None:
            return 404, "text/plain", b"not found\n"
        if method != b"GET":
            return 405, "text/plain", b"GET only\n"
        return handler()
