"""A PBX registered over TCP to a node of two workers, with the real sbc and sipp on loopback
(ports 7700-7799: sbc :7700 UDP and TCP, carrier sipp :7710 UDP (control :7716, media
:7730), vendor sipp :7720 UDP (control :7717, media :7734)). The PBX is a Python socket
from 127.0.0.5 that shows every message it gets.

The PBX opens one TCP connection, which the kernel gives to one worker (call it Y; the other
is X), and registers over it; the REGISTER stays with Y, and the binding the siblings get
says the flow lives on Y. Then a carrier (sipp's stock uac) calls the PBX's DID six times;
the Call-IDs (``tcpw-1@carrier`` ...) land on both workers. A call X owns:

    carrier :7710 (udp)      sbc worker X           sbc worker Y             pbx 127.0.0.5
     |--INVITE DID---------->|                        |                        |
     |                       |--"out tcp pbx Y" INVITE-->|--INVITE (its conn.)-->|
     |                       |<--"tcp pbx Y" 200--------|<--200------------------|
     |<--100, 200------------|                        |                        |
     |--ACK----------------->|--"out" ACK------------>|--ACK------------------>|
     |--BYE----------------->|--"out" BYE------------>|--BYE------------------>|
     |                       |<--"tcp pbx Y" 200--------|<--200------------------|
     |<--200-----------------|                        |                        |

(a call Y owns goes straight over the connection). Then the PBX calls out over its
connection, with a Call-ID X owns; the vendor (sipp's stock uas) answers, the PBX hangs up:

    pbx 127.0.0.5            sbc worker Y           sbc worker X            vendor :7720
     |--INVITE-------------->|--"tcp pbx Y" INVITE--->|--INVITE--------------->|
     |<--100, 200------------|<--"out" 100, 200-------|<--100, 180, 200--------|
     |--ACK----------------->|--"tcp pbx Y" ACK------>|--ACK------------------>|
     |--BYE----------------->|--"tcp pbx Y" BYE------>|--BYE------------------>|
     |<--200-----------------|<--"out" 200------------|<--200------------------|

Every CDR says answered; the PBX's connection is the one it opened, never another. Last,
a flow that is gone: the holder answers ``fail`` and the call fails at once (the second
test's ladder).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

from sbc.sip.digest import authorization, pick_challenge
from tests.e2e import tlspeers

pytestmark = pytest.mark.e2e

PORT, CARRIER, VENDOR = 7700, 7710, 7720
DID, NUMBER = "15557770000", "15558880000"
CALLS = 6
# what the PBX registers, from whichever source port: a new connection's REGISTER replaces
# the binding the last one made (RFC 3261 §10.3: one contact), at its new source address
CONTACT = "sip:pbx1@127.0.0.5:5060;transport=tcp"
CONFIG = f"""
node:
  workers: 2
  listen:
    - {{address: 127.0.0.1, port: {PORT}, transport: udp}}
    - {{address: 127.0.0.1, port: {PORT}, transport: tcp}}
  unknown_source: reject
  flood: {{exempt: [127.0.0.1, 127.0.0.5]}}
  cdr: {{path: cdr/cdr.jsonl}}
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: {CARRIER}}}]}}
  - {{name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{type: registration, username: pbx1, password: s3cret}}]}}
  - {{name: vendor-pool, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: {VENDOR}}}]}}
routeplans:
  - name: default
    numbering: [{{number: "{DID}", trunk_group: pbx}}]
    routes: [{{prefix: "", trunk_groups: [vendor-pool]}}]
"""
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\n"
    "m=audio 7740 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def owner(call_id: str) -> int:
    """The worker of two that owns ``call_id`` (sbc.sip.steer.owner)."""
    return zlib.crc32(call_id.encode()) % 2


headers, header = tlspeers.headers, tlspeers.header  # a message's header values


class Pbx(tlspeers.Flow):
    """A PBX on one TCP connection from 127.0.0.5: registers account pbx1, answers every
    INVITE with 200 and every BYE with 200 (a reader thread), and places calls of its own."""

    def __init__(self) -> None:
        super().__init__(socket.create_connection(("127.0.0.1", PORT), 5, ("127.0.0.5", 0)))
        self.host, self.port = self.sock.getsockname()[:2]
        self.me = f"{self.host}:{self.port}"
        self.got: list[str] = []  # every message received, in order
        self.responses: list[str] = []  # to our own requests
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.cseq = 0

    def register(self) -> None:
        first = self._register("")
        assert first.startswith("SIP/2.0 401 "), first
        params = pick_challenge(headers(first, "WWW-Authenticate"))
        assert params is not None, first
        uri = f"sip:127.0.0.1:{PORT}"
        ok = self._register(authorization(params, "REGISTER", uri, "pbx1", "s3cret"))
        assert ok.startswith("SIP/2.0 200 "), ok

    def _register(self, auth: str) -> str:
        self.cseq += 1
        extra = f"Authorization: {auth}\r\n" if auth else ""
        self.send(
            f"REGISTER sip:127.0.0.1:{PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.me};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
            f"From: <sip:pbx1@127.0.0.1>;tag=r{self.port}\r\n"
            f"To: <sip:pbx1@127.0.0.1>\r\nCall-ID: reg-pbx1-{self.port}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\nContact: <{CONTACT}>\r\n"
            f"Expires: 300\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        msg = self.read(5)
        assert msg is not None, "no answer to the REGISTER"
        return msg

    def serve(self) -> None:
        """The reader thread: answer what sbc asks, keep the answers to our requests."""
        while not self.stop.is_set() and not self.closed:
            msg = self.read(0.1)
            if msg is None:
                continue
            with self.lock:
                self.got.append(msg)
                if msg.startswith("SIP/2.0 "):
                    self.responses.append(msg)
            if msg.startswith("INVITE "):
                self.send(self.answer(msg, SDP))
            elif msg.startswith("BYE "):
                self.send(self.answer(msg))

    def answer(self, req: str, body: str = "") -> str:
        lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in headers(req, "Via"))]
        lines += [*(f"Record-Route: {v}" for v in headers(req, "Record-Route"))]
        to = header(req, "To")
        to = to if "tag=" in to else f"{to};tag=p1"
        lines += [f"From: {header(req, 'From')}", f"To: {to}"]
        lines += [f"Call-ID: {header(req, 'Call-ID')}", f"CSeq: {header(req, 'CSeq')}"]
        lines += [f"Contact: <sip:pbx1@{self.me};transport=tcp>"]
        if body:
            lines.append("Content-Type: application/sdp")
        return "\r\n".join([*lines, f"Content-Length: {len(body)}", "", body])

    def final(self, call_id: str, method: str, timeout: float = 10) -> str:
        """Our request's final response, as the reader thread keeps them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for r in self.responses:
                    status = int(r[8:11])
                    cseq = header(r, "CSeq")
                    if header(r, "Call-ID") == call_id and cseq.endswith(method) and status >= 200:
                        return r
            time.sleep(0.05)
        raise AssertionError(f"no final answer to our {method} ({call_id})")

    def call(self, call_id: str, dnis: str) -> tuple[str, str]:
        """INVITE ``dnis``; ACK its 200; hang up: (the INVITE's 200, the BYE's answer)."""
        ruri = f"sip:{dnis}@127.0.0.1:{PORT};transport=tcp"
        via = f"Via: SIP/2.0/TCP {self.me};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
        common = (
            f"From: <sip:{DID}@127.0.0.1>;tag=po\r\nCall-ID: {call_id}\r\n"
            f"Contact: <sip:pbx1@{self.me};transport=tcp>\r\nMax-Forwards: 70\r\n"
        )
        self.send(
            f"INVITE {ruri} SIP/2.0\r\n{via}{common}To: <sip:{dnis}@127.0.0.1>\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:pbx1@{self.me};transport=tcp>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
        )
        ok = self.final(call_id, "INVITE")
        assert ok.startswith("SIP/2.0 200 "), ok
        to = header(ok, "To")
        target = header(ok, "Contact").strip("<>").split(">")[0]
        routes = "".join(f"Route: {r}\r\n" for r in reversed(headers(ok, "Record-Route")))
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            branch = f"z9hG4bK{os.urandom(6).hex()}"
            self.send(
                f"{method} {target} SIP/2.0\r\nVia: SIP/2.0/TCP {self.me};branch={branch}\r\n"
                f"{common}To: {to}\r\nCSeq: {cseq} {method}\r\n{routes}Content-Length: 0\r\n\r\n"
            )
        return ok, self.final(call_id, "BYE")

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Sbc]:
    root = tmp_path_factory.mktemp("tcpworkers")
    with harness.sipp_servers(
        "uas", [VENDOR], root / "vendor",
        extra=["-mp", "7734", "-ci", "127.0.0.1", "-cp", "7717"],
    ):  # fmt: skip
        yield from harness.serving(root, CONFIG, PORT)


def cdrs(sbc: harness.Sbc, call_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The CDRs of the A-leg Call-IDs ``call_ids``, by them, once all are written."""
    path = sbc.log_path.parent / "cdr" / "cdr.jsonl"

    def records() -> dict[str, dict[str, Any]]:
        if not path.exists():
            return {}
        found = [json.loads(x) for x in path.read_text().splitlines()]
        return {r["sip_call_id"]: r for r in found if r["sip_call_id"] in call_ids}

    assert harness.wait_for(lambda: len(records()) == len(call_ids), timeout=10), records()
    return records()


def test_calls_reach_a_pbx_registered_over_tcp_whichever_worker_owns_them(
    sbc: harness.Sbc, tmp_path: Path
) -> None:
    call_ids = [f"tcpw-{n}@carrier" for n in range(1, CALLS + 1)]
    assert {owner(c) for c in call_ids} == {0, 1}  # both workers own some
    pbx = Pbx()
    reader = threading.Thread(target=pbx.serve, daemon=True)
    try:
        pbx.register()
        (reg,) = [e for e in sbc.events("registrar.registered") if e["username"] == "pbx1"]
        assert reg["source"] == f"tcp:127.0.0.5:{pbx.port}"
        holder = int(str(reg["worker"]))  # Y: the worker the kernel gave the connection
        reader.start()

        # the carrier's calls to the DID, over UDP, owned by both workers
        before = len(sbc.events("call.end"))
        r = harness.run_sipp(
            "uac", calls=CALLS, rate=5, port=CARRIER, workdir=tmp_path / "carrier",
            remote=f"127.0.0.1:{PORT}", timeout=30,
            extra=["-s", DID, "-d", "300", "-cid_str", "tcpw-%u@carrier",
                   "-mp", "7730", "-ci", "127.0.0.1", "-cp", "7716"],
        )  # fmt: skip
        assert r.returncode == 0 and r.count("SuccessfulCall") == CALLS, r.output
        ends = sbc.wait_events("call.end", before + CALLS)[before:]
        worker_of = {str(e["call_id"]): e["worker"] for e in ends}  # sbc's own call ids
        records = cdrs(sbc, call_ids)
        handled = {c: worker_of[rec["call_id"]] for c, rec in records.items()}
        assert handled == {c: owner(c) for c in call_ids}
        assert set(handled.values()) == {0, 1}  # X reached the PBX through Y, Y directly
        for c, rec in records.items():
            assert (rec["status"], rec["dnis"], rec["disposition"]) == (200, DID, "answered")
            attempts = [(a["trunk_group"], a["status"], a["outcome"]) for a in rec["attempts"]]
            assert attempts == [("pbx", 200, "answered")], (c, rec)

        # what the PBX saw, all on the one connection it opened
        with pbx.lock:
            got = list(pbx.got)
        requests = [m for m in got if not m.startswith("SIP/2.0 ")]
        methods = sorted(m.split(" ", 1)[0] for m in requests)
        assert methods == sorted(["INVITE", "ACK", "BYE"] * CALLS), [m[:40] for m in requests]
        for m in requests:
            assert header(m, "Via").startswith(f"SIP/2.0/TCP 127.0.0.1:{PORT};"), m
        assert not pbx.closed

        # the PBX's own call, over its connection, with a Call-ID the other worker owns
        other = 1 - holder
        cid = harness.on_worker("pbx-out", other)
        before = len(sbc.events("call.end"))
        ok, bye = pbx.call(cid, NUMBER)
        assert bye.startswith("SIP/2.0 200 "), bye
        assert header(ok, "Via").startswith(f"SIP/2.0/TCP {pbx.me};"), ok
        (end,) = sbc.wait_events("call.end", before + 1)[before:]
        rec = cdrs(sbc, [cid])[cid]
        assert (end["call_id"], end["worker"]) == (rec["call_id"], other)
        assert (rec["trunk_group"], rec["status"], rec["hangup"]) == ("pbx", 200, "caller"), rec
        assert rec["source"] == f"tcp:127.0.0.5:{pbx.port}"
        attempts = [(a["trunk_group"], a["status"], a["outcome"]) for a in rec["attempts"]]
        assert attempts == [("vendor-pool", 200, "answered")], rec
        assert not pbx.closed
    finally:
        pbx.close()
        reader.join(5)
    assert not [e for e in sbc.events("transport.error")]


def test_a_call_to_a_pbx_whose_connection_is_gone_fails_as_a_transport_error(
    sbc: harness.Sbc,
) -> None:
    """The PBX registers again on a new connection (the same Contact: its binding now names
    this flow) and then closes it; a carrier's INVITE that the other worker owns is handed
    to the holder, which has no connection left and says so (``fail``): the attempt fails
    as on a transport error, at once (no Timer B).

        carrier (udp)        sbc worker X              sbc worker Y          pbx
         |--INVITE DID------>|--"out tcp pbx Y" INVITE->|  (no connection)    |  (FIN)
         |                   |<--"fail tcp pbx Y"-------|                     |
         |<--100, 503--------|  attempt outcome transport
         |--ACK------------->|
    """
    pbx = Pbx()
    try:
        before = len(sbc.events("registrar.registered"))
        pbx.register()
        reg = sbc.wait_events("registrar.registered", before + 1)[before]
        assert reg["source"] == f"tcp:127.0.0.5:{pbx.port}"
        holder = int(str(reg["worker"]))
    finally:
        pbx.close()
    time.sleep(0.3)  # the holder sees the FIN
    carrier = harness.Peer("127.0.0.1", CARRIER)
    cid = harness.on_worker("gone", 1 - holder)
    branch = f"z9hG4bK{os.urandom(6).hex()}"
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{CARRIER};branch={branch};rport\r\n"
    common = f"{via}From: <sip:{NUMBER}@127.0.0.1>;tag=c1\r\nCall-ID: {cid}\r\n"
    errors = len(sbc.events("transport.error"))
    started = time.monotonic()
    try:
        carrier.send(
            (
                f"INVITE sip:{DID}@127.0.0.1:{PORT} SIP/2.0\r\n{common}"
                f"To: <sip:{DID}@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:{NUMBER}@127.0.0.1:{CARRIER}>\r\nMax-Forwards: 70\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
            ).encode(),
            PORT,
        )
        final = ""
        while not final and time.monotonic() - started < 10:
            for raw in carrier.replies(0.3):
                if int(raw[8:11]) >= 200:
                    final = raw.decode()
        assert final and int(final[8:11]) >= 400, final
        assert time.monotonic() - started < 3  # not Timer B's 32 s
        to = header(final, "To")
        carrier.send(
            (
                f"ACK sip:{DID}@127.0.0.1:{PORT} SIP/2.0\r\n{common}To: {to}\r\n"
                f"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            PORT,
        )
    finally:
        carrier.close()
    rec = cdrs(sbc, [cid])[cid]
    attempts = [(a["trunk_group"], a["outcome"]) for a in rec["attempts"]]
    assert attempts == [("pbx", "transport")], rec
    found = sbc.wait_events("transport.error", errors + 1)[errors:]
    assert [(e["target"], e["detail"], e["worker"]) for e in found] == [
        (f"tcp:127.0.0.5:{pbx.port}", f"no connection on worker {holder}", 1 - holder)
    ]
