"""RFC 3261 §18.1.1: a request over 1300 bytes with the path MTU unknown goes over TCP,
where the trunk group reaches the vendor over TCP too."""

from __future__ import annotations

from pathlib import Path

from sbc.config.loader import load_config
from sbc.sip.message import Request
from tests.helpers import CALLER, SDP, Lab, invite

CONFIG = """
node:
  listen:
    - {address: 127.0.0.1, port: 5060, transport: udp}
    - {address: 127.0.0.1, port: 5060, transport: tcp}
  flood: {exempt: [127.0.0.1]}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, port: 0}]}
  - {name: vendor-1, relationship: vendor-x, direction: termination, hunting: failover,
     trunks: [{ip: 127.0.0.1, port: 5081, protocol: udp}, TWIN]}
routeplans:
  - {name: default, routes: [{prefix: "", trunk_groups: [vendor-1]}]}
"""
TWIN = "{ip: 127.0.0.1, port: 5081, protocol: tcp}"
BIG_SDP = SDP + b"".join(b"a=x-pad:%04d%s\r\n" % (i, b"p" * 40) for i in range(30))


def lab(tmp_path: Path, twin: str = TWIN) -> Lab:
    (tmp_path / "sbc.yaml").write_text(CONFIG.replace("TWIN", twin))
    return Lab(load_config(tmp_path))


def sent_invite(lab: Lab, body: bytes) -> tuple[Request, str, int]:
    out = lab.feed(invite(body=body), CALLER)
    ((inv, target),) = [(m, t) for m, t in out if isinstance(m, Request)]
    return inv, target.transport, len(inv.to_bytes())


def test_a_large_invite_goes_over_tcp_to_a_vendor_reachable_so(tmp_path: Path) -> None:
    inv, transport, size = sent_invite(lab(tmp_path), BIG_SDP)
    assert size > 1300 and transport == "tcp"
    assert inv.vias[0].transport == "TCP" and "transport=tcp" in inv.uri
    assert "transport=tcp" in (inv.get("Contact") or "")


def test_a_small_invite_stays_on_udp(tmp_path: Path) -> None:
    inv, transport, size = sent_invite(lab(tmp_path), SDP)
    assert size <= 1300 and transport == "udp" and inv.vias[0].transport == "UDP"


def test_without_a_tcp_trunk_a_large_invite_stays_on_udp(tmp_path: Path) -> None:
    twin_elsewhere = "{ip: 127.0.0.1, port: 5082, protocol: tcp}"
    _, transport, size = sent_invite(lab(tmp_path, twin_elsewhere), BIG_SDP)
    assert size > 1300 and transport == "udp"
