"""Shared test helpers: the pure rig (the SBC's two layers and the state store joined to
hand-driven peers, fake time) and the messages peers send. Caller = carrier-a at
127.0.0.1:5070; vendors = the lab's 127.0.0.1:5081 and :5082."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Protocol

import msgspec

from media.ng import MediaCommand
from sbc.call.controller import CallController
from sbc.config.loader import load_config
from sbc.config.schema import Config
from sbc.config.snapshot import Snapshot
from sbc.executor import Executor
from sbc.metrics import Metrics, SbcCollector
from sbc.sip.message import Request, Response
from sbc.sip.parser import parse_message
from sbc.sip.transaction import Target, TransactionLayer
from sbc.state import Notify
from sbc.state.memory import MemoryStore

CALLER = Target("udp", "127.0.0.1", 5070)
V1 = Target("udp", "127.0.0.1", 5081)
V2 = Target("udp", "127.0.0.1", 5082)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no sample {name} {labels}")


class Lab:
    def __init__(self, config: Config | None = None, **ingress: object) -> None:
        config = config or load_config("config/lab")
        if ingress:
            tgs = list(config.trunk_groups)
            tgs[0] = msgspec.structs.replace(tgs[0], **ingress)
            config = msgspec.structs.replace(config, trunk_groups=tgs)
        self.now = 0.0
        self.layer = TransactionLayer()
        self.store = MemoryStore()
        self.notified: list[Notify] = []
        self.ng: list[MediaCommand] = []  # ng commands sent; answer with answer_media()
        self.ctrl = CallController(self.layer, Snapshot.build(config), self.store)
        self.executor = Executor(
            self.layer,
            self.ctrl,
            lambda cmd, now: (True, self.store.execute(cmd, now)),
            self.ng.append,
            self.notified.append,
        )

    def scrape(self) -> str:
        """/metrics as the node would serve it now."""
        collector = SbcCollector(lambda: self.ctrl, self.layer, lambda: self.now, lambda: [])
        return Metrics(collector).render().decode()

    def feed(
        self, msg: Request | Response | bytes, src: Target
    ) -> list[tuple[Request | Response, Target]]:
        data = msg if isinstance(msg, bytes) else msg.to_bytes()
        self.layer.receive(data, src, self.now)
        return self.run()

    def advance(self, seconds: float) -> list[tuple[Request | Response, Target]]:
        self.now += seconds
        self.layer.handle_timer(self.now)
        self.ctrl.handle_timer(self.now)
        return self.run()

    def run(self) -> list[tuple[Request | Response, Target]]:
        """What the runtime's pump does (sbc.executor), with the memory state store; the
        messages sent, parsed."""
        self.executor.pump(self.now)
        return [(parse_message(d), t) for d, t in self.layer.datagrams_to_send()]

    def events(self, name: str) -> list[dict[str, object]]:
        return [n.fields for n in self.ctrl.pop_notices() if n.event == name]


def invite(user: str = "15551230000", branch: str = "z9hG4bKa1", body: bytes = SDP) -> bytes:
    return (
        f"INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        f'From: "Alice" <sip:15550001000@10.1.1.1>;tag=caller1\r\n'
        f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: a-leg-1@10.1.1.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n"
        f"User-Agent: SecretPBX 1.0\r\nP-Asserted-Identity: <sip:15550001000@10.1.1.1>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def only(out: list[tuple[Request | Response, Target]], to: Target) -> list[Request | Response]:
    return [m for m, t in out if t == to]


BASE = """
node:
  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]
  flood: {exempt: [127.0.0.1]}     # the tests' bursts come from one address in one instant
relationships: [{name: carrier-a}, {name: vendor-x}]
routeplans:
  - name: default
    routes: [{prefix: "", trunk_groups: [vendor-1, vendor-2]}]
"""
BASE_ONE_VENDOR = BASE.replace("[vendor-1, vendor-2]", "[vendor-1]")  # every call to vendor-1


def lab_with(tmp_path: Path, trunk_groups: str, extra: str = "", base: str = BASE) -> Lab:
    (tmp_path / "sbc.yaml").write_text(
        base + textwrap.dedent(trunk_groups) + textwrap.dedent(extra)
    )
    return Lab(load_config(tmp_path))


VENDORS = """
  - {name: vendor-1, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}], limits: {ports: 1}}
  - {name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5082}]}
"""


def one_vendor_lab(tmp_path: Path, vendor: str = "") -> Lab:
    """carrier-a (127.0.0.1) to vendor-1 alone (127.0.0.1:5081); ``vendor``: more of
    vendor-1's fields, each followed by ", "."""
    return lab_with(
        tmp_path,
        f"""
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1}}]}}
  - {{name: vendor-1, relationship: vendor-x, direction: termination,
     {vendor}trunks: [{{ip: 127.0.0.1, port: 5081}}]}}
""",
        base=BASE_ONE_VENDOR,
    )


def ingress(limits: str = "{}", more: str = "") -> str:
    return (
        f"""
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1}}], limits: {limits} {more}}}
"""
        + VENDORS
    )


def call(lab: Lab, n: int, src: Target = CALLER, user: str = "15551230000") -> list[Response]:
    """Send INVITE number n; return what the caller got back."""
    data = invite(user=user, branch=f"z9hG4bK{n}").replace(
        b"a-leg-1@10.1.1.1", f"a-leg-{n}@10.1.1.1".encode()
    )
    out = lab.feed(data, src)
    return [m for m in only(out, src) if isinstance(m, Response)]


def b_legs(out: list[tuple[Request | Response, Target]]) -> list[tuple[Request, Target]]:
    return [(m, t) for m, t in out if isinstance(m, Request) and m.method == "INVITE"]


TGS = (
    """
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1}]}
  - {name: pbx, relationship: carrier-a, direction: origination, routeplan: default,
     tech_prefix: "9#", trunks: [{type: registration, username: pbx1, password: s3cret}]}
"""
    + VENDORS
)


def register(user: str = "pbx1", cseq: int = 1, auth: str = "", expires: int = 300) -> bytes:
    extra = f"Authorization: {auth}\r\n" if auth else ""
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.9.9.9:5077;branch=z9hG4bKr{cseq}\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=r1\r\nTo: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@10.9.9.9:5077>\r\n"
        f"Expires: {expires}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


class Addr(Protocol):
    """Where a test peer sends from: a Target, or a harness.Peer."""

    host: str
    port: int


def request(
    method: str, call_id: str, from_tag: str, to_tag: str | None, cseq: int, me: Addr,
    body: bytes = b"", extra: str = "", ruri: str = "sip:sbc@127.0.0.1:5060",
) -> bytes:  # fmt: skip
    """A request as a peer at ``me`` (or an attacker posing as one) writes it, with its own
    Via (rport: answers go back to the source), a fresh branch and its own Contact."""
    to = f";tag={to_tag}" if to_tag else ""
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {me.host}:{me.port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
        f"From: <sip:15550001000@{me.host}>;tag={from_tag}\r\nTo: <sip:15551230000@x>{to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
        f"Contact: <sip:c@{me.host}:{me.port}>\r\n{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def register_from(src: Addr, cseq: int, user: str = "pbx1", auth: str = "") -> bytes:
    """A REGISTER for ``user`` at 127.0.0.1 from ``src``, answered back to its source."""
    extra = f"Authorization: {auth}\r\n" if auth else ""
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src.host}:{src.port};branch=z9hG4bKr{cseq};rport\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=r1\r\nTo: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: reg-{src.host}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{src.host}:{src.port}>\r\nExpires: 300\r\nMax-Forwards: 70\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def vendor_registrar(expires: int) -> str:
    """Trunk groups with a termination registration trunk at the registrar 127.0.0.1:5090."""
    return f"""
trunk_groups:
  - {{name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{{ip: 127.0.0.1}}]}}
  - {{name: vendor-1, relationship: vendor-x, direction: termination,
     trunks: [{{type: registration, ip: 127.0.0.1, port: 5090, username: u, password: p,
               expires: {expires}}}]}}
  - {{name: vendor-2, relationship: vendor-x, direction: termination,
     trunks: [{{ip: 127.0.0.1, port: 5082}}]}}
"""
