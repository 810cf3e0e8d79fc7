r"""CRLF keep-alives (RFC 5626 §4.4.1) on the TCP/TLS flows sbc needs later, through the real
sbc on loopback (ports 7500-7599: sbc :7500 UDP and TCP, :7501 TLS, metrics :7599, carrier
:7512 UDP, vendor :7520 TCP), one process (workers: 1). keepalive_interval is
1 s; a ping's pong must come within 10 s (sbc.tcpguard.PONG_TIMEOUT). The peers are Python
sockets that show every byte.

Two PBXs register, each on a connection it opened (pbx1 over TCP from 127.0.0.5, pbx2 over
TLS from 127.0.0.6), then stay quiet. Both get pings; pbx1 answers each, pbx2 never does:

    pbx1 127.0.0.5 (tcp)     sbc :7500 tcp, :7501 tls      pbx2 127.0.0.6 (tls)
     |--SYN; REGISTER-------->|                             |
     |<--401 WWW-Authenticate-|                             |
     |--REGISTER + digest---->|                             |
     |<--200 Contact;expires--|<--TLS; REGISTER, 401, REGISTER + digest--|
     |                        |--200----------------------->|
     |      (1 s quiet)       |         (1 s quiet)         |
     |<--\r\n\r\n-------------|--\r\n\r\n------------------>|
     |--\r\n----------------->|                             |  (no pong)
     |<--\r\n\r\n (1 s on)----|                             |
     |--\r\n----------------->|                             |
     |   ... every second     |--RST, 10 s after the ping-->|  keepalive failures +1
     |                        |<--INVITE DID (UDP)-- carrier :7512
     |<--INVITE (over the connection pbx1 opened)           |
     |--486------------------>|--486------------------------> carrier
     |<--ACK------------------|<--ACK------------------------- carrier

The last test is the same PBX behind two workers (sbc :7540, carrier :7552): every call
reaches it over its connection, whichever worker owns the call (sbc.worker steers its messages).

A vendor over TCP answers a call, then stays quiet on the connection sbc opened to it:

    carrier :7512 (udp)      sbc :7500                    vendor :7520 (tcp)
     |--INVITE--------------->|--SYN; INVITE--------------->|
     |<--100, 200-------------|<--200-----------------------|
     |--ACK------------------>|--ACK----------------------->|
     |                        |--\r\n\r\n (1 s quiet)------>|  (no pong)
     |                        |--RST (10 s on)------------->|  keepalive failures +1
     |--BYE------------------>|--SYN; BYE (a new connection)-->|
     |<--200------------------|<--200-----------------------|
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.steer import owner
from tests.e2e import tlspeers

pytestmark = pytest.mark.e2e

PORT, TLS, CARRIER, VENDOR, METRICS = 7500, 7501, 7512, 7520, 7599
DID, NUMBER = "15557770000", "15558880000"
PING, PONG = tlspeers.PING, tlspeers.PONG
CONFIG = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: {PORT}, transport: udp}}
    - {{address: 127.0.0.1, port: {PORT}, transport: tcp}}
    - {{address: 127.0.0.1, port: {TLS}, transport: tls}}
  # one process: its log and counters are the whole node's (workers: the last test)
  workers: 1
  unknown_source: reject
  metrics: {{listen: "127.0.0.1:{METRICS}"}}
  tls: {{certificate: tls/sbc.pem, private_key: tls/sbc.key}}
  tcp: {{keepalive_interval: 1}}
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: {CARRIER}}}]}}
  - {{name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{type: registration, username: pbx1, password: s3cret}},
              {{type: registration, username: pbx2, password: s3cret2}}]}}
  - {{name: vendor-tcp, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: {VENDOR}, protocol: tcp}}]}}
routeplans:
  - name: default
    numbering: [{{number: "{DID}", trunk_group: pbx}}]
    routes: [{{prefix: "", trunk_groups: [vendor-tcp]}}]
"""
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7530 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca, and sbc's certificate of it for IP 127.0.0.1 (tests/e2e/tlspeers)."""
    d = tmp_path_factory.mktemp("keepalive-tls")
    tlspeers.make_ca(d, "ca")
    tlspeers.make_cert(d, "sbc", "ca")
    return d


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[harness.Sbc]:
    root = tmp_path_factory.mktemp("keepalive")
    (root / "config").mkdir()
    shutil.copytree(tls_dir, root / "config" / "tls")
    (root / "config" / "sbc.yaml").write_text(CONFIG)
    node = harness.start_sbc(root / "sbc", root / "config", port=PORT)
    yield node
    assert node.alive(), "sbc died during the tests"
    assert node.stop() == 0


def failures() -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5).read()
    found = re.search(rb"^sbc_tcp_keepalive_failures_total (\S+)$", text, re.M)
    assert found, text
    return float(found[1])


headers, header = tlspeers.headers, tlspeers.header  # a message's header values


def answer(req: str, status: str, tag: str, body: str = "", contact: str = "") -> str:
    """A response to ``req`` (its Via, From, To with ``tag``, Call-ID, CSeq), our Contact
    ``contact`` (default: the vendor's)."""
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {v}" for v in headers(req, "Via")]
    lines += [f"From: {header(req, 'From')}", f"To: {header(req, 'To')};tag={tag}"]
    lines += [f"Call-ID: {header(req, 'Call-ID')}", f"CSeq: {header(req, 'CSeq')}"]
    lines += [f"Contact: <{contact or f'sip:{VENDOR}@127.0.0.1:{VENDOR};transport=tcp'}>"]
    if body:
        lines.append("Content-Type: application/sdp")
    return "\r\n".join([*lines, f"Content-Length: {len(body)}", "", body])


class Pbx(tlspeers.Flow):
    """A PBX that registers account ``user`` from ``host`` over a TCP connection it opens,
    or a TLS one trusting ``ca``."""

    def __init__(
        self, host: str, user: str, password: str, ca: Path | None = None, sbc: int = PORT
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", TLS if ca else sbc), 5, (host, 0))
        if ca is not None:
            sock = ssl.create_default_context(cafile=str(ca)).wrap_socket(
                sock, server_hostname="127.0.0.1"
            )
        super().__init__(sock)
        self.transport = "tls" if ca else "tcp"
        self.sbc = sbc
        self.host, self.port = self.sock.getsockname()[:2]
        self.user, self.password = user, password
        self.cseq = 0

    def register(self) -> None:
        first = self._register("")
        assert first.startswith("SIP/2.0 401 "), first
        params = pick_challenge(headers(first, "WWW-Authenticate"))
        assert params is not None, first
        uri = f"sip:127.0.0.1:{self.sbc}"
        ok = self._register(authorization(params, "REGISTER", uri, self.user, self.password))
        assert ok.startswith("SIP/2.0 200 "), ok

    def call(self, dnis: str, call_id: str) -> list[str]:
        """An INVITE over the flow; the statuses of what comes back until the final one
        (which is ACKed, RFC 3261 §17.1.1.3)."""
        me = f"{self.host}:{self.port}"
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        ruri = f"sip:{dnis}@127.0.0.1:{self.sbc}"

        def request(method: str, to: str, body: str = "") -> str:
            kind = "Content-Type: application/sdp\r\n" if body else ""
            return (
                f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{self.transport.upper()} {me};"
                f"branch={branch}\r\nFrom: <sip:{self.user}@127.0.0.1>;tag=o{call_id}\r\n"
                f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:{self.user}@{me};transport={self.transport}>\r\n"
                f"Max-Forwards: 70\r\n{kind}Content-Length: {len(body)}\r\n\r\n{body}"
            )

        self.send(request("INVITE", f"<sip:{dnis}@127.0.0.1>", SDP))
        statuses = []
        while (msg := self.read(10, pong=True)) is not None:
            statuses.append(msg[8:11])
            if msg[8] != "1":
                self.send(request("ACK", header(msg, "To")))
                break
        return statuses

    def _register(self, auth: str) -> str:
        self.cseq += 1
        me, extra = f"{self.host}:{self.port}", f"Authorization: {auth}\r\n" if auth else ""
        self.send(
            f"REGISTER sip:127.0.0.1:{self.sbc} SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.transport.upper()} {me};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
            f"From: <sip:{self.user}@127.0.0.1>;tag=r{self.port}\r\n"
            f"To: <sip:{self.user}@127.0.0.1>\r\nCall-ID: reg-{self.user}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{self.user}@{me};transport={self.transport}>\r\n"
            f"Expires: 300\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        msg = self.read(5)
        assert msg is not None, f"no answer to {self.user}'s REGISTER"
        return msg


class Carrier:
    """The calling carrier on UDP 127.0.0.1:``local`` (7512), one call at a time."""

    def __init__(self, local: int = CARRIER, sbc: int = PORT) -> None:
        self.peer = harness.Peer("127.0.0.1", local)
        self.local, self.sbc = local, sbc
        self.call_id = ""
        self.to = ""

    def invite(self, dnis: str, call_id: str = "") -> str:
        """An INVITE to ``dnis``; its final answer (the 200 or the failure, ACKed if not 2xx)."""
        self.call_id = call_id or f"ka-{os.urandom(4).hex()}"
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        self._send(
            "INVITE", f"sip:{dnis}@127.0.0.1:{self.sbc}", 1, branch, f"<sip:{dnis}@127.0.0.1>", SDP
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for raw in self.peer.replies(0.5):
                text = raw.decode()
                status = int(text[8:11])
                if status >= 200:
                    self.to = header(text, "To")
                    if status >= 300:  # §17.1.1.3: the ACK of a failure, its own branch
                        self._send("ACK", f"sip:{dnis}@127.0.0.1:{self.sbc}", 1, branch, self.to)
                    return text
        raise AssertionError(f"no final answer to the INVITE to {dnis}")

    def ack(self, answer: str) -> None:
        self._send("ACK", self._target(answer), 1, f"z9hG4bK{os.urandom(6).hex()}", self.to)

    def bye(self, answer: str) -> str | None:
        self._send("BYE", self._target(answer), 2, f"z9hG4bK{os.urandom(6).hex()}", self.to)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for raw in self.peer.replies(0.3):
                if b" BYE\r\n" in raw and raw.startswith(b"SIP/2.0 2"):
                    return raw.decode()
        return None

    @staticmethod
    def _target(answer: str) -> str:
        return header(answer, "Contact").strip("<>").split(">")[0]

    def _send(self, method: str, ruri: str, cseq: int, branch: str, to: str, sdp: str = "") -> None:
        body = "Content-Type: application/sdp\r\n" if sdp else ""
        self.peer.send(
            (
                f"{method} {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.local};branch={branch};rport\r\n"
                f"From: <sip:{NUMBER}@127.0.0.1>;tag=c{self.call_id}\r\nTo: {to}\r\n"
                f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:{NUMBER}@127.0.0.1:{self.local}>\r\nMax-Forwards: 70\r\n"
                f"{body}Content-Length: {len(sdp)}\r\n\r\n{sdp}"
            ).encode(),
            self.sbc,
        )

    def close(self) -> None:
        self.peer.close()


def test_a_registered_pbx_flow_is_pinged_kept_while_it_answers_and_called_over(
    sbc: harness.Sbc, tls_dir: Path
) -> None:
    """pbx1 (TCP) answers every ping and keeps its connection (the call to its DID comes
    over it); pbx2 (TLS) never answers, and its connection is closed 10 s after its ping."""
    before = failures()
    pbx1 = Pbx("127.0.0.5", "pbx1", "s3cret")
    pbx2 = Pbx("127.0.0.6", "pbx2", "s3cret2", tls_dir / "ca.pem")
    carrier = Carrier()
    invites: list[str] = []
    stop = threading.Event()

    def pbx1_answers() -> None:  # pongs every ping; answers the call with 486
        while not stop.is_set() and not pbx1.closed:
            msg = pbx1.read(0.1, pong=True)
            if msg is not None and msg.startswith("INVITE "):
                invites.append(msg)
                pbx1.send(answer(msg, "486 Busy Here", "pbx1"))

    try:
        pbx1.register()
        pbx2.register()
        registered = time.monotonic()
        answering = threading.Thread(target=pbx1_answers, daemon=True)
        answering.start()
        assert pbx2.read(3) is None and pbx2.pings == 1 and not pbx2.closed  # pinged at ~1 s
        while not pbx2.closed and time.monotonic() - registered < 16:
            pbx2.read(0.5)  # no pong
        closed_after = time.monotonic() - registered
        assert pbx2.closed and 10.5 < closed_after < 13.5, closed_after
        assert pbx2.pings == 1  # one ping, then the close
        assert failures() == before + 1
        final = carrier.invite(DID)
        assert final.startswith("SIP/2.0 486 "), final
        assert harness.wait_for(lambda: len(invites) == 1)
        stop.set()
        answering.join(5)
        assert not pbx1.closed  # still the connection pbx1 opened: the INVITE came over it
        assert pbx1.pings >= 9, pbx1.pings  # one a second or so, each answered
        assert header(invites[0], "Via").startswith("SIP/2.0/TCP ")
        assert f"sip:pbx1@127.0.0.5:{pbx1.port};transport=tcp" in invites[0].split("\r\n")[0]
    finally:
        stop.set()
        carrier.close()
        pbx1.sock.close()
        pbx2.sock.close()
    assert failures() == before + 1  # pbx1's flow never failed


def test_a_quiet_vendor_flow_that_gives_no_pong_is_closed_and_the_bye_opens_a_new_one(
    sbc: harness.Sbc,
) -> None:
    before = failures()
    server = socket.create_server(("127.0.0.1", VENDOR))
    flows: list[tlspeers.Flow] = []
    byes: list[str] = []
    stop = threading.Event()

    def vendor() -> None:  # answers INVITE with 200 and BYE with 200; never a pong
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                flows.append(tlspeers.Flow(server.accept()[0]))
            for flow in flows:
                msg = flow.read(0.05)
                if msg is None:
                    continue
                if msg.startswith("INVITE "):
                    flow.send(answer(msg, "200 OK", "v1", SDP))
                elif msg.startswith("BYE "):
                    byes.append(msg)
                    flow.send(answer(msg, "200 OK", "v1"))

    carrier = Carrier()
    serving = threading.Thread(target=vendor, daemon=True)
    serving.start()
    try:
        ok = carrier.invite(NUMBER)
        assert ok.startswith("SIP/2.0 200 "), ok
        carrier.ack(ok)
        answered = time.monotonic()
        assert harness.wait_for(lambda: bool(flows) and flows[0].closed, timeout=15)
        closed_after = time.monotonic() - answered
        assert 10.5 < closed_after < 13.5, closed_after
        assert flows[0].pings == 1
        assert failures() == before + 1
        assert carrier.bye(ok) is not None  # over a new connection to the vendor
        assert len(flows) == 2 and len(byes) == 1 and not flows[1].closed
    finally:
        stop.set()
        serving.join(5)
        carrier.close()
        server.close()
        for flow in flows:
            flow.sock.close()


WORKERS_PORT, WORKERS_CARRIER = 7540, 7552
WORKERS_CONFIG = f"""
node:
  listen:
    - {{address: 127.0.0.1, port: {WORKERS_PORT}, transport: udp}}
    - {{address: 127.0.0.1, port: {WORKERS_PORT}, transport: tcp}}
  workers: 2
  unknown_source: reject
relationships: [{{name: carrier-a}}, {{name: vendor-x}}]
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1, port: {WORKERS_CARRIER}}}]}}
  - {{name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{type: registration, username: pbx1, password: s3cret}}]}}
  - {{name: vendor-tcp, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: {VENDOR}, protocol: tcp}}]}}
routeplans:
  - name: default
    numbering: [{{number: "{DID}", trunk_group: pbx}}]
    routes: [{{prefix: "", trunk_groups: [vendor-tcp]}}]
"""


def call_ids(workers: int, each: int) -> list[str]:
    """Call-IDs ``each`` of which every worker owns (sbc.sip.steer), alternating."""
    mine: dict[int, list[str]] = {k: [] for k in range(workers)}
    n = 0
    while min(len(v) for v in mine.values()) < each:
        cid = f"ka-w-{n}"
        n += 1
        mine[owner(cid.encode(), workers)].append(cid)
    return [v[i] for i in range(each) for v in mine.values()]


def test_with_workers_every_call_to_a_pbx_registered_over_tcp_goes_over_its_flow(
    tmp_path: Path,
) -> None:
    """Two workers: pbx1 registers over TCP (one worker holds its connection); the carrier
    places 4 calls to its DID over UDP, two owned by each worker (their Call-IDs), and
    hangs each up. Every INVITE, ACK and BYE reaches pbx1 over the connection it opened,
    whichever worker owns the call (sbc.worker: the owner hands its messages to the holder,
    the holder steers pbx1's answers to the owner):

        carrier :7552     worker owning the call   worker holding the flow     pbx1 (tcp)
          |--INVITE------->|--relay INVITE---------->|--INVITE------------------->|
          |                |<--steer 200 (tcp)-------|<--200----------------------|
          |<--200----------|                         |                            |
          |--ACK---------->|--relay ACK------------->|--ACK---------------------->|
          |--BYE---------->|--relay BYE------------->|--BYE---------------------->|
          |<--200----------|<--steer 200 (tcp)-------|<--200----------------------|

    Then pbx1 calls out over its flow, one call owned by each worker; no vendor listens:
          |                |<--steer INVITE----------|<--INVITE-------------------|
          |                |--relay 100, 503-------->|--100, 503----------------->|
          |                |<--steer ACK-------------|<--ACK----------------------|
    """
    root = tmp_path
    (root / "config").mkdir()
    (root / "config" / "sbc.yaml").write_text(WORKERS_CONFIG)
    node = harness.start_sbc(root / "sbc", root / "config", port=WORKERS_PORT)
    pbx = Pbx("127.0.0.5", "pbx1", "s3cret", sbc=WORKERS_PORT)
    carrier = Carrier(WORKERS_CARRIER, WORKERS_PORT)
    seen: list[str] = []
    stop = threading.Event()

    def answers() -> None:
        while not stop.is_set() and not pbx.closed:
            msg = pbx.read(0.1, pong=True)
            if msg is None:
                continue
            seen.append(f"{msg.split(' ')[0]} {header(msg, 'Call-ID')}")
            me = f"sip:pbx1@{pbx.host}:{pbx.port};transport=tcp"  # as registered
            if msg.startswith("INVITE "):
                pbx.send(answer(msg, "200 OK", "pbx1", SDP, me))
            elif msg.startswith("BYE "):
                pbx.send(answer(msg, "200 OK", "pbx1", "", me))

    answering = threading.Thread(target=answers, daemon=True)
    try:
        pbx.register()
        answering.start()
        for cid in call_ids(2, 2):
            ok = carrier.invite(DID, cid)
            assert ok.startswith("SIP/2.0 200 "), ok
            carrier.ack(ok)
            assert carrier.bye(ok) is not None
        assert harness.wait_for(lambda: len(node.events("call.end")) == 4)
        stop.set()
        answering.join(5)
        # pbx1 calls out over its flow, one call owned by each worker; nothing listens at
        # the vendor (:7520), so each gets 503, back over the flow
        outbound = [pbx.call(NUMBER, cid) for cid in call_ids(2, 1)]
    finally:
        stop.set()
        answering.join(5)
        carrier.close()
        pbx.sock.close()
        assert node.stop() == 0
    assert sorted({int(str(e["worker"])) for e in node.events("call.start")}) == [0, 1]
    ends = node.events("call.end")
    assert [e["status"] for e in ends] == [200] * 4 + [503] * 2, ends
    starts = [(e["trunk_group"], e["worker"]) for e in node.events("call.start")[4:]]
    assert starts == [("pbx", 0), ("pbx", 1)]  # pbx1's account, each worker its own call
    assert outbound == [["100", "503"]] * 2, outbound
    methods = [m.split(" ")[0] for m in seen]
    assert methods == ["INVITE", "ACK", "BYE"] * 4, seen
    assert len({m.split(" ")[1] for m in seen}) == 4  # one B-leg Call-ID per call
