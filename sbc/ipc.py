"""The link between the supervisor and one worker: tuples over a Unix stream socketpair.

Each message is ``(kind, *args)``, pickled, behind a 4-byte big-endian length. Both ends are
processes of this program started by the supervisor (never a peer on the network), so
pickle is safe here and carries config snapshots and state commands as they are.

A closed link is final: the worker exits when it loses the supervisor, and the supervisor
treats the worker as dead (sbc.supervisor).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")
MAX = 64 * 1024 * 1024  # a snapshot of a very large config is far below this

Message = tuple[Any, ...]


class Link(asyncio.Protocol):
    """One end. ``on_message`` gets each tuple; ``on_lost`` once, when the other end is gone."""

    def __init__(self, on_message: Callable[[Message], None], on_lost: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []  # sent together once the loop is through this turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            (size,) = HEADER.unpack_from(buf)
            if size > MAX:
                self.close()
                return
            if len(buf) < 4 + size:
                return
            msg = pickle.loads(bytes(buf[4 : 4 + size]))
            del buf[: 4 + size]
            self.on_message(msg)

    def send(self, *msg: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        if not self._out:  # one write(2) per loop turn, however many messages it made
            asyncio.get_running_loop().call_soon(self._flush)
        self._out += (HEADER.pack(len(body)), body)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost()


async def connect(
    sock: socket.socket, on_message: Callable[[Message], None], on_lost: Callable[[], None]
) -> Link:
    """Wrap one end of a socketpair in a Link on the running loop."""
    loop = asyncio.get_running_loop()
    _, link = await loop.connect_accepted_socket(lambda: Link(on_message, on_lost), sock)
    return link
