"""node.worker_port, pure: which requests name the worker's own port in their Via (and so
leave from its own socket, sbc.listeners), and which stay on the listening port.

    caller 5070        sbc (listens 5060, this worker's own port 5101)        vendor 5081
       |--INVITE------->|                                                        |
       |                |--INVITE  Via 127.0.0.1:5101 --------------------------->|
       |                |<-180 / 200 (to 5101: the worker that owns the call)-----|
       |                |--ACK     Via 127.0.0.1:5101 --------------------------->|
       |<-200  Contact 5060 (the caller's dialog stays on the listener)           |
       |--BYE---------->|--BYE     Via 127.0.0.1:5101 --------------------------->|

    A vendor's BYE is relayed to the caller with Via 127.0.0.1:5060: a caller may sit
    behind NAT or filter on our listening port. So may a vendor trunk group with nat.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sbc.config.loader import ConfigError, load_config
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import CALLER, SDP, Lab, invite, one_vendor_lab, only
from tests.unit.test_ops import a_bye

VENDOR = Target("udp", "127.0.0.1", 5081)
OWN = {4: 5101}


def answered(lab: Lab) -> tuple[Request, str, list[tuple[Request | Response, Target]]]:
    """The B-leg INVITE, the caller's To tag, and what the vendor's 200 brought."""
    out = lab.feed(invite(), CALLER)
    (b_inv,) = only(out, VENDOR)
    assert isinstance(b_inv, Request)
    ok = make_response(
        b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")], body=SDP
    )
    ok.headers.append(("Content-Type", "application/sdp"))
    out = lab.feed(ok, VENDOR)
    (a_ok,) = only(out, CALLER)
    assert isinstance(a_ok, Response) and a_ok.to.tag
    return b_inv, a_ok.to.tag, out


def test_a_vendors_requests_name_the_own_port_and_the_callers_the_listener(
    tmp_path: Path,
) -> None:
    lab = one_vendor_lab(tmp_path)
    lab.ctrl.out.own_ports = dict(OWN)
    b_inv, a_tag, out = answered(lab)
    assert (b_inv.vias[0].port, b_inv.contacts[0].uri.port) == (5101, 5060)
    (ack,) = only(out, VENDOR)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.vias[0].port == 5101
    (a_ok,) = only(out, CALLER)
    assert isinstance(a_ok, Response) and a_ok.contacts[0].uri.port == 5060
    out = lab.feed(a_bye(a_tag), CALLER)
    (b_bye,) = only(out, VENDOR)
    assert isinstance(b_bye, Request) and b_bye.method == "BYE" and b_bye.vias[0].port == 5101


def test_a_vendors_bye_reaches_the_caller_from_the_listener(tmp_path: Path) -> None:
    lab = one_vendor_lab(tmp_path)
    lab.ctrl.out.own_ports = dict(OWN)
    b_inv, _, _ = answered(lab)
    bye = (
        f"BYE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5081;branch=z9hG4bKv2"
        f"\r\nFrom: <sip:15551230000@127.0.0.1>;tag=v1\r\nTo: {b_inv.get('From')}\r\n"
        f"Call-ID: {b_inv.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    out = lab.feed(bye, VENDOR)
    (a_bye,) = [m for m in only(out, CALLER) if isinstance(m, Request)]
    assert a_bye.method == "BYE" and a_bye.vias[0].port == 5060


def test_a_cancel_leaves_as_its_invite_did(tmp_path: Path) -> None:
    """RFC 3261 §9.1: the CANCEL's Via is the INVITE's, so its answer comes back alike."""
    lab = one_vendor_lab(tmp_path)
    lab.ctrl.out.own_ports = dict(OWN)
    out = lab.feed(invite(), CALLER)
    (b_inv,) = only(out, VENDOR)
    assert isinstance(b_inv, Request)
    lab.feed(make_response(b_inv, 180, to_tag="v1"), VENDOR)
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip", 1).replace(b"1 INVITE", b"1 CANCEL")
    cancel = cancel.split(b"\r\n\r\n", 1)[0].replace(b"Content-Type: application/sdp\r\n", b"")
    cancel = cancel.replace(b"Content-Length: %d" % len(SDP), b"Content-Length: 0") + b"\r\n\r\n"
    out = lab.feed(cancel, CALLER)
    (b_cancel,) = [m for m in only(out, VENDOR) if isinstance(m, Request)]
    assert b_cancel.method == "CANCEL" and b_cancel.vias[0].raw == b_inv.vias[0].raw


def test_a_vendor_behind_nat_and_no_own_port_keep_the_listener(tmp_path: Path) -> None:
    lab = one_vendor_lab(tmp_path, "nat: true, ")
    lab.ctrl.out.own_ports = dict(OWN)
    b_inv, _, _ = answered(lab)
    assert b_inv.vias[0].port == 5060
    plain = one_vendor_lab(tmp_path)  # a lone process, or worker_port 0: no own ports
    b_inv, _, _ = answered(plain)
    assert b_inv.vias[0].port == 5060


def test_worker_ports_may_not_overlap_a_listener(tmp_path: Path) -> None:
    (tmp_path / "sbc.yaml").write_text(
        "node:\n  workers: 2\n  worker_port: 5059\n"
        "  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert refused.value.field == "node.worker_port" and refused.value.line == 3
