"""node.tcp decisions (sbc.tcpguard), with fake time."""

from __future__ import annotations

from sbc.config.node import TcpConfig
from sbc.sip.parser import StreamFramer
from sbc.tcpguard import Cap, sweep_period, verdict

CFG = TcpConfig(idle_timeout=120, header_timeout=10, max_connections=3)


def test_a_message_unfinished_after_header_timeout_closes_its_connection() -> None:
    # slowloris: bytes keep coming (last is recent) but the message began 10 s ago
    assert verdict(CFG, 9.9, last=9.8, pending_since=0.0, busy=False) is None
    assert verdict(CFG, 10.0, last=9.9, pending_since=0.0, busy=False) == "header_timeout"
    assert verdict(CFG, 10.0, last=9.9, pending_since=0.0, busy=True) == "header_timeout"


def test_an_idle_connection_closes_unless_its_host_has_calls() -> None:
    assert verdict(CFG, 119.0, last=0.0, pending_since=None, busy=False) is None
    assert verdict(CFG, 120.0, last=0.0, pending_since=None, busy=False) == "idle_timeout"
    assert verdict(CFG, 500.0, last=0.0, pending_since=None, busy=True) is None
    off = TcpConfig(idle_timeout=0, header_timeout=0)
    assert verdict(off, 1e9, last=0.0, pending_since=0.0, busy=False) is None


def test_the_cap_refuses_past_max_connections_and_logs_once_per_burst() -> None:
    cap = Cap()
    assert cap.admit(CFG, 2, 0.0) == (True, 0)
    assert cap.admit(CFG, 3, 0.0) == (False, 1)  # the first refusal: a line
    assert [cap.admit(CFG, 3, 0.1 * i) for i in range(1, 100)] == [(False, 0)] * 99
    assert cap.admit(CFG, 3, 61.0) == (False, 100)  # still full a minute on: 99 + this one
    assert cap.admit(CFG, 1, 62.0) == (True, 0)  # room again: the burst is over
    assert cap.admit(CFG, 3, 63.0) == (False, 1)  # a new burst: a new line
    assert cap.refused == 102
    assert cap.admit(TcpConfig(max_connections=0), 10**6, 64.0) == (True, 0)


def test_sweep_period_follows_the_shorter_timeout() -> None:
    assert sweep_period(CFG) == 1.0
    assert sweep_period(TcpConfig(header_timeout=2)) == 0.2
    assert sweep_period(TcpConfig(header_timeout=0, idle_timeout=0)) == 1.0


def test_the_framer_says_when_part_of_a_message_waits() -> None:
    f = StreamFramer()
    assert f.feed(b"OPTIONS sip:x SIP/2.0\r\n") == [] and f.pending
    assert f.feed(b"Content-Length: 0\r\n\r\n") and not f.pending
