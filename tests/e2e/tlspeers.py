"""Certificates made with the openssl CLI, and small SIP peers over Python's ssl for the TLS
e2e tests (Debian's sipp is built without TLS), and the framing of SIP read by hand off a
TCP or TLS connection (``frame``, ``Flow``).

The peers speak just enough SIP for a call ladder: a UAS that answers INVITE (100, 200 with
the offer echoed), ACK, BYE and OPTIONS; a UAC that places one call and hangs up. Every
message either one sees is kept, as received, for the tests to assert on.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7050 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


# An SDES answer (RFC 4568) as Teams' media processor gives one: RTP/SAVP, one crypto line.
SRTP_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7052 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
)


def make_ca(d: Path, name: str) -> None:
    """``name``.pem / ``name``.key: a self-signed CA."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def make_cert(d: Path, name: str, ca: str, san: str = "IP:127.0.0.1,DNS:localhost") -> None:
    """``name``.pem / ``name``.key: a leaf for ``san`` signed by CA ``ca``."""
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


PING, PONG = b"\r\n\r\n", b"\r\n"  # RFC 5626 §4.4.1 keep-alives


def frame(buf: bytes) -> tuple[str | None, bytes]:
    """The first whole SIP message in a stream's bytes (framed by Content-Length, RFC 3261
    §18.3), and what follows it; (None, buf) while it has not all arrived."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return None, buf
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value)
    if len(rest) < length:
        return None, buf
    return (head + sep + rest[:length]).decode(), rest[length:]


class Flow:
    """One TCP or TLS connection, read by hand: SIP messages framed by Content-Length (RFC 3261
    §18.3), and every CRLF ping counted as it comes (none is lost to the framing)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.pings = 0
        self.closed = False  # sbc closed (FIN or RST)

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read(self, timeout: float, pong: bool = False) -> str | None:
        """The next SIP message within ``timeout`` s (None: none, or the flow closed);
        pings on the way are counted, and answered with ``pong``."""
        deadline = time.monotonic() + timeout
        while True:
            while self.buf.startswith(PING):
                self.buf = self.buf[len(PING) :]
                self.pings += 1
                if pong:
                    self.send(PONG)
            msg, self.buf = frame(self.buf)
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset
                data = b""
            if not data:
                self.closed = True
            self.buf += data


class Stream:
    """SIP messages framed by Content-Length off one TLS socket (RFC 3261 §18.3)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""

    def read(self, timeout: float = 5.0) -> str | None:
        self.sock.settimeout(timeout)
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            msg, self.buf = frame(self.buf)
            if msg is not None:
                return msg
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not data:
                return None
            self.buf += data

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())


def header(msg: str, name: str) -> str:
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name.lower():
            return v.strip()
    return ""


def headers(msg: str, name: str) -> list[str]:
    out = []
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name.lower():
            out.append(v.strip())
    return out


def response(req: str, status: str, tag: str, contact: str = "", body: str = "") -> str:
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {v}" for v in headers(req, "Via")]
    to = header(req, "To")
    if "tag=" not in to:
        to += f";tag={tag}"
    lines += [f"From: {header(req, 'From')}", f"To: {to}", f"Call-ID: {header(req, 'Call-ID')}"]
    lines += [f"CSeq: {header(req, 'CSeq')}"]
    if contact:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


class Uas:
    """A TLS vendor on 127.0.0.1:``port`` presenting ``cert``; answers every INVITE.
    ``ca``: ask the client (sbc) for a certificate signed by it."""

    def __init__(
        self, port: int, cert: Path, key: Path, ca: Path | None = None, sdp: str = SDP
    ) -> None:
        self.port = port
        self.sdp = sdp  # the answer
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if ca is not None:
            self.ctx.load_verify_locations(ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.received: list[str] = []
        self.handshakes = 0  # connections whose TLS handshake completed
        self.failed: list[str] = []  # handshakes that did not
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._conn, args=(raw,), daemon=True).start()

    def _conn(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.failed.append(str(e))
            raw.close()
            return
        self.handshakes += 1
        stream = Stream(tls)
        tag = uuid.uuid4().hex[:8]
        contact = f"<sip:vendor@127.0.0.1:{self.port};transport=tls>"
        with contextlib.closing(tls):
            while not self._stop.is_set():
                msg = stream.read(timeout=0.5)
                if msg is None:
                    if stream.sock.fileno() < 0:
                        return
                    continue
                self.received.append(msg)
                method = msg.split(" ", 1)[0]
                if method == "INVITE":
                    stream.send(response(msg, "100 Trying", tag))
                    stream.send(response(msg, "200 OK", tag, contact, self.sdp))
                elif method in ("BYE", "OPTIONS", "CANCEL"):
                    stream.send(response(msg, "200 OK", tag))

    def requests(self, method: str) -> list[str]:
        return [m for m in self.received if m.startswith(method + " ")]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=2)


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def connect(port: int, ctx: ssl.SSLContext) -> Stream:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return Stream(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))


def call(stream: Stream, port: int, dnis: str, hold: float = 0.2) -> list[str]:
    """One call over ``stream`` to sbc's TLS port: INVITE, the answers up to the final
    one, ACK and BYE on a 2xx; every message received, in order."""
    here = stream.sock.getsockname()[1]
    cid, tag, branch = uuid.uuid4().hex, uuid.uuid4().hex[:8], uuid.uuid4().hex
    common = (
        f"From: <sip:15550001000@127.0.0.1>;tag={tag}\r\n"
        f"Call-ID: {cid}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:caller@127.0.0.1:{here};transport=tls>\r\n"
    )
    stream.send(
        f"INVITE sip:{dnis}@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:{here};branch=z9hG4bK{branch};rport\r\n"
        f"To: <sip:{dnis}@127.0.0.1>\r\n{common}CSeq: 1 INVITE\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    )
    got: list[str] = []
    final = None
    while final is None:
        msg = stream.read(timeout=10)
        if msg is None:
            return got
        got.append(msg)
        if msg.startswith("SIP/2.0 ") and int(msg.split(" ")[1]) >= 200:
            final = msg
    status = int(final.split(" ")[1])
    to = header(final, "To")
    if status >= 300:
        return got  # the transaction layer ACKs non-2xx hop by hop; not awaited here
    target = header(final, "Contact").strip("<>").split(">")[0]
    for n, (method, seq) in enumerate((("ACK", 1), ("BYE", 2))):
        stream.send(
            f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{here};branch=z9hG4bK{branch}{n};rport\r\n"
            f"To: {to}\r\n{common}CSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
        if method == "ACK":
            time.sleep(hold)
    while (msg := stream.read(timeout=5)) is not None:
        got.append(msg)
        if msg.startswith("SIP/2.0 ") and "BYE" in header(msg, "CSeq"):
            break
    return got
