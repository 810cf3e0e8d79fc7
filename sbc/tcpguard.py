"""TCP connection hygiene (``node.tcp``): when a connection is to be closed, and whether a
new one may stay. Pure: times and counts in, decisions out; sbc.transport acts on them.

- **header_timeout**: a message must arrive whole within this many seconds of its first
  byte. A slowloris peer (one byte every 100 ms, never the blank line) holds a connection
  and up to 32 KB of buffer for ever otherwise.
- **idle_timeout**: a connection that carried nothing either way (a CRLF keep-alive counts,
  RFC 5626 §4.4.1) for this long is closed, unless its host has live calls (their in-dialog
  requests may come back over it) or a live registration binding names it (calls to the
  PBX go over it: it opened the connection, we cannot open one back through its NAT).
- **keepalive_interval**: on a connection we need later (one we opened toward a vendor, or
  one a PBX registered over), a CRLF ping after this many quiet seconds; the peer's CRLF
  pong, or any byte, answers it. None within ``PONG_TIMEOUT`` and the flow has failed (RFC
  5626 §4.4.1): the connection is closed and its transactions fail as on a reset, so
  hunting moves on and a dead NAT binding or firewall state is found before the next call
  or in-dialog request needs it.
- **max_connections**: inbound connections held at once; one more is closed as it arrives
  (our own connections toward vendors never count nor are refused). A burst of refusals is
  one ``tcp.full`` line: the first refusal after the node was below the cap, and at most one
  every ``LOG_EVERY`` seconds while it stays there.
"""

from __future__ import annotations

from typing import Literal

from sbc.config.node import TcpConfig

Close = Literal["header_timeout", "idle_timeout", "keepalive"]
LOG_EVERY = 60.0  # seconds between two tcp.full lines while the cap holds
PONG_TIMEOUT = 10.0  # RFC 5626 §4.4.1: a ping unanswered this long means the flow failed


def verdict(
    cfg: TcpConfig, now: float, last: float, pending_since: float | None, busy: bool
) -> Close | None:
    """Close a connection whose last byte either way was at ``last`` and whose unfinished
    message (if any) began at ``pending_since``? ``busy``: its host has live calls."""
    pending = pending_since is not None and now - pending_since >= cfg.header_timeout
    if cfg.header_timeout and pending:
        return "header_timeout"
    if cfg.idle_timeout and not busy and now - last >= cfg.idle_timeout:
        return "idle_timeout"
    return None


def keepalive(
    cfg: TcpConfig, now: float, last: float, ping_sent: float | None
) -> Literal["ping", "dead"] | None:
    """For a flow we need (opened by us, or registered over), quiet since ``last``, our
    unanswered ping (if any) sent at ``ping_sent``: ping now, or give the flow up?"""
    if not cfg.keepalive_interval:
        return None
    if ping_sent is not None:
        return "dead" if now - ping_sent >= PONG_TIMEOUT else None
    return "ping" if now - last >= cfg.keepalive_interval else None


def quiet_enough(cfg: TcpConfig) -> float:
    """Seconds of quiet before keepalive or idle_timeout can act on a connection (inf: never):
    a sweep asks whether a binding names a connection only past this."""
    timeouts = [t for t in (cfg.keepalive_interval, cfg.idle_timeout) if t]
    return min(timeouts) if timeouts else float("inf")


def sweep_period(cfg: TcpConfig) -> float:
    """How often to look: a tenth of the shorter timeout, between 0.1 s and 1 s."""
    timeouts = [t for t in (cfg.header_timeout, cfg.idle_timeout, cfg.keepalive_interval) if t]
    return min(1.0, max(0.1, min(timeouts) / 10)) if timeouts else 1.0


class Cap:
    """The inbound connection cap, and the one line per burst of refusals."""

    def __init__(self) -> None:
        self.refused = 0  # connections refused, all told (sbc_sip_dropped_total{reason="tcp_full"})
        self._burst = 0  # refused since the last line
        self._full = False
        self._logged_at = float("-inf")

    def admit(self, cfg: TcpConfig, held: int, now: float) -> tuple[bool, int]:
        """A new inbound connection while ``held`` are open: (keep it, and when a
        ``tcp.full`` line is due the number of refusals it stands for, else 0)."""
        if not cfg.max_connections or held < cfg.max_connections:
            self._full = False
            return True, 0
        self.refused += 1
        self._burst += 1
        if self._full and now - self._logged_at < LOG_EVERY:
            return False, 0
        self._full, self._logged_at = True, now
        n, self._burst = self._burst, 0
        return False, n
