"""systemd's notification protocol (sd_notify(3)): READY, RELOADING, STOPPING, STATUS and
WATCHDOG datagrams to $NOTIFY_SOCKET. Without that variable (not under systemd) every call
is a no-op, so `sbc run` behaves the same in a terminal.

Also the signals systemd and a NOC send (SIGTERM, SIGINT, SIGHUP), handled from before the
node opens its first socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address: str | bytes = ""
        self.sock: socket.socket | None = None
        if address.startswith(("/", "@")):
            # '@' names a socket in the abstract namespace: a leading NUL byte on the wire.
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        # WatchdogSec=: ping at half the period; only the process the manager means (its pid).
        self.watchdog = (
            int(usec) / 2e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0.0
        )

    def send(self, *fields: str) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(OSError):  # the manager went away: nothing to do about it
            self.sock.sendto("\n".join(fields).encode(), self.address)

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match this to its SIGHUP.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def ping(self, status: str = "") -> None:
        self.send("WATCHDOG=1", *([f"STATUS={status}"] if status else []))


class Signals:
    """SIGTERM/SIGINT and SIGHUP handlers installed before the node starts. Its sockets answer
    before start() returns, so a peer (or `systemctl reload` racing a start) can already see
    it up: without a handler that SIGHUP would kill the process (the default action). One
    that arrives while starting is kept and carried out once ``started()`` is called."""

    def __init__(self, terminate: Callable[[], None], reload: Callable[[], object]) -> None:
        self._reload = reload
        self._started = False
        self._pending = False
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, terminate)
        loop.add_signal_handler(signal.SIGINT, terminate)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)

    def _hangup(self) -> None:
        if self._started:
            self._reload()
        else:
            self._pending = True

    def started(self) -> None:
        self._started = True
        if self._pending:
            self._pending = False
            self._reload()
