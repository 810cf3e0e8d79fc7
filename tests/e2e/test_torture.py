"""RFC 4475 against the running sbc, each message one UDP datagram from a carrier-a address.

Pass criteria (issue 2): the sbc stays up and answers OPTIONS after every message; a valid
message is never refused as malformed; an invalid one is never forwarded. Vendors are plain
UDP sockets on 5081/5082 that record what reaches them. The sbc's log names every message it
refused (`sip.refused`) or dropped (`sip.dropped`) with the message's Call-ID.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

from tests.rfc4475 import MESSAGES, VALID, call_id_of

pytestmark = pytest.mark.e2e

INVALID = [(n, d, v) for n, d, v in MESSAGES if v != VALID]
VALID_ONES = [(n, d, v) for n, d, v in MESSAGES if v == VALID]


@pytest.fixture
def vendors() -> Iterator[list[socket.socket]]:
    socks = []
    for port in (5081, 5082):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def drain(socks: list[socket.socket]) -> list[bytes]:
    out = []
    for s in socks:
        while True:
            try:
                out.append(s.recv(65535))
            except BlockingIOError:
                break
    return out


def send(data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", 5060))


def transaction_key(data: bytes) -> tuple[bytes, ...]:
    """Branch, sent-by and method of the top Via, read from raw bytes: messages sharing them
    are one transaction to the sbc (RFC 3261 §17.2.3), the later ones retransmissions."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    via = next((ln for ln in head if ln.lower().startswith((b"via", b"v:", b"v "))), b"")
    return (
        via.split(b";branch=")[-1].split(b";")[0],
        via.split()[-1].split(b";")[0],
        head[0].split(b" ")[0],
    )


def refusals(sbc: harness.Sbc) -> dict[str | None, int]:
    out: dict[str | None, int] = {}
    for e in sbc.events():
        if e.get("event") in ("sip.refused", "sip.dropped"):
            out[e.get("sip_call_id")] = int(e["status"])  # type: ignore[arg-type]
    return out


def test_invalid_messages_are_refused_and_never_forwarded(
    sbc: harness.Sbc, vendors: list[socket.socket]
) -> None:
    drain(vendors)
    for name, data, _ in INVALID:
        send(data)
        assert harness.options() == 200, f"sbc stopped answering after {name}"
    time.sleep(0.5)
    assert drain(vendors) == [], "an invalid message reached a vendor"
    refused = refusals(sbc)
    seen: set[tuple[bytes, ...]] = set()
    for name, data, (_, status) in INVALID:  # type: ignore[misc]
        key = transaction_key(data)
        retransmission = key in seen
        seen.add(key)
        cid = call_id_of(data)
        if cid is not None and name != "multi01" and not retransmission:  # multi01: 2 Call-IDs
            assert refused.get(cid) == status, name


def test_valid_messages_are_never_refused_as_malformed(
    sbc: harness.Sbc, vendors: list[socket.socket]
) -> None:
    for name, data, _ in VALID_ONES:
        send(data)
        assert harness.options() == 200, f"sbc stopped answering after {name}"
    refused = refusals(sbc)
    for name, data, _ in VALID_ONES:
        assert call_id_of(data) not in refused, f"{name} was refused"
    # The valid INVITEs were routed: the vendors got B-leg INVITEs with our own Call-IDs.
    got = b"".join(drain(vendors))
    assert got.count(b"INVITE sip:") >= 1
    for _, data, _ in VALID_ONES:
        cid = call_id_of(data)
        assert cid is None or cid.encode() not in got, "a caller's Call-ID leaked to a vendor"


def test_sbc_check_names_file_line_and_field(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    shutil.copy(harness.LAB_CONFIG / "sbc.yaml", tmp_path / "sbc.yaml")
    (tmp_path / "extra.yaml").write_text(
        "trunk_groups:\n"
        "  - name: carrier-b\n"
        "    direction: origination\n"
        "    routeplan: default\n"
        "    limits: {ports: lots}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "check", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=harness.ROOT,
    )
    assert run.returncode == 1
    assert f"{tmp_path / 'extra.yaml'}:5: trunk_groups[0].limits.ports" in run.stderr
    (tmp_path / "extra.yaml").unlink()
    ok = subprocess.run(
        [sys.executable, "-m", "sbc.cli", "check", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=harness.ROOT,
    )
    assert ok.returncode == 0, ok.stderr
