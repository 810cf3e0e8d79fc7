"""systemd's notification protocol (sd_notify(3)): READY, RELOADING, STOPPING, STATUS and
WATCHDOG datagrams to $NOTIFY_SOCKET. Without that variable (not under systemd) every call
is a no-op, so `sbc run` behaves the same in a terminal.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


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
