"""The pure parts of a node of several workers: which worker owns a message (sbc.sip.steer),
the ids a worker mints (sbc.sip.ids), and one node's /metrics and /status from its
workers' (sbc.aggregate)."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbc import aggregate
from sbc.sip import ids
from sbc.sip.parser import parse_message
from sbc.sip.steer import call_id, contact_user, named_worker, owner

INVITE = (
    b"INVITE sip:15551230000@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"From: <sip:1@127.0.0.1>;tag=1\r\nTo: <sip:15551230000@127.0.0.1>\r\n"
    b"{cid}\r\nCSeq: 1 INVITE\r\nContent-Length: 11\r\n\r\n"
    b"Call-ID: no\r\n"
)


@pytest.mark.parametrize(
    "header",
    [
        b"Call-ID: abc@host",
        b"call-id: abc@host",
        b"CALL-ID:abc@host",
        b"i: abc@host",
        b"Call-Id :  abc@host ",
        b"cAlL-iD\t: abc@host",
    ],
)
def test_the_call_id_is_found_in_every_spelling_rfc3261_7_3_3(header: bytes) -> None:
    data = INVITE.replace(b"{cid}", header)
    assert call_id(data) == b"abc@host"
    assert str(parse_message(data).call_id) == "abc@host"  # the parser agrees


def test_the_body_is_never_read_for_a_call_id() -> None:
    assert call_id(INVITE.replace(b"{cid}", b"X-Other: 1")) is None


def test_a_peers_calls_spread_over_the_workers() -> None:
    """One sipp UAC, one source socket: the kernel gives all to one worker; the Call-IDs
    spread them."""
    spread = Counter(owner(f"{n}-1@127.0.0.1".encode(), 4) for n in range(4000))
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 800


def test_every_id_a_worker_mints_steers_back_to_it() -> None:
    try:
        for worker in range(3):
            ids.configure(worker, 3)
            minted = [ids.new_id() for _ in range(200)]
            assert {owner(i.encode(), 3) for i in minted} == {worker}
            assert len(set(minted)) == 200
            assert all(len(i) == 16 for i in minted)
    finally:
        ids.configure(0, 1)


@pytest.mark.parametrize(
    ("start", "named"),
    [
        (b"ACK sip:sbc07@127.0.0.1:5060 SIP/2.0", 7),
        (b"BYE sip:sbc00@[2001:db8::1]:5060 SIP/2.0", 0),
        (b"INFO sip:sbc12@127.0.0.1 SIP/2.0", 12),  # any method to our Contact
        (b"ACK sip:sbc@127.0.0.1 SIP/2.0", None),  # one worker's Contact: no digits
        (b"ACK sip:sbc7@127.0.0.1 SIP/2.0", None),
        (b"ACK sip:sbc0x@127.0.0.1 SIP/2.0", None),
        (b"ACK sip:15551230000@127.0.0.1 SIP/2.0", None),
        (b"SIP/2.0 200 OK", None),  # a response names no worker
        (b"ACK sip:sbc0", None),
    ],
)
def test_a_request_to_a_workers_contact_names_that_worker(start: bytes, named: int | None) -> None:
    """Our Contact's user names its worker (sip:sbc07@), so an in-dialog request finds the
    worker that holds its dialog whatever its Call-ID hashes to (sbc.sip.steer)."""
    assert named_worker(start + b"\r\nCall-ID: x\r\n\r\n") == named
    if named is not None:
        assert contact_user(named, 100) == start.split(b":")[1].split(b"@")[0].decode()


WORKER = """# HELP sbc_attempts_total Calls offered.
# TYPE sbc_attempts_total counter
sbc_attempts_total{{side="ingress",trunk_group="carrier-a"}} {attempts}
# HELP sbc_calls Calls this node holds.
# TYPE sbc_calls gauge
sbc_calls {calls}
# HELP sbc_trunk_up 1 while up.
# TYPE sbc_trunk_up gauge
sbc_trunk_up{{trunk="udp:127.0.0.1:5081",trunk_group="vendor-pool"}} {up}
# HELP sbc_pdd_seconds Post-dial delay.
# TYPE sbc_pdd_seconds histogram
sbc_pdd_seconds_bucket{{le="1.0",side="ingress",trunk_group="carrier-a"}} {attempts}
sbc_pdd_seconds_bucket{{le="+Inf",side="ingress",trunk_group="carrier-a"}} {attempts}
sbc_pdd_seconds_count{{side="ingress",trunk_group="carrier-a"}} {attempts}
sbc_pdd_seconds_sum{{side="ingress",trunk_group="carrier-a"}} 0.5
"""


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


def test_counters_and_counts_add_up_and_health_is_the_leaders() -> None:
    a = WORKER.format(attempts=3, calls=2, up=1).encode()
    b = WORKER.format(attempts=5, calls=1, up=0).encode()
    own = aggregate.gauge("sbc_workers", "Workers running.", 2)
    merged = samples(aggregate.merge_metrics([a, b], own))
    ingress = (("side", "ingress"), ("trunk_group", "carrier-a"))
    assert merged[("sbc_attempts_total", ingress)] == 8
    assert merged[("sbc_calls", ())] == 3
    assert merged[("sbc_pdd_seconds_count", ingress)] == 8
    assert merged[("sbc_pdd_seconds_bucket", (("le", "+Inf"), *ingress))] == 8
    assert merged[("sbc_pdd_seconds_sum", ingress)] == 1.0
    assert merged[("sbc_workers", ())] == 2
    up = (("trunk", "udp:127.0.0.1:5081"), ("trunk_group", "vendor-pool"))
    assert merged[("sbc_trunk_up", up)] == 1  # the highest: every worker has the leader's


def test_status_adds_calls_and_cps_per_group_and_keeps_the_leaders_health() -> None:
    def report(calls: int, health: str) -> dict[str, object]:
        return {
            "node": {"calls": calls},
            "trunk_groups": [
                {"name": "carrier-a", "calls": calls, "cps": 1, "trunks": [{"health": health}]}
            ],
            "capacity_groups": [{"name": "cg", "calls": calls, "cps": 2}],
            "alarms": [{"scope": "trunk_group", "owner": "carrier-a", "trigger": f"t{calls}"}],
        }

    merged = aggregate.merge_status([report(2, "up"), report(3, "down")], {"pid": 1})
    assert merged["node"] == {"pid": 1}
    assert merged["trunk_groups"] == [
        {"name": "carrier-a", "calls": 5, "cps": 2, "trunks": [{"health": "up"}]}
    ]
    assert merged["capacity_groups"] == [{"name": "cg", "calls": 5, "cps": 4}]
    assert [a["trigger"] for a in merged["alarms"]] == ["t2", "t3"]


def test_memory_sums_every_count_and_keeps_each_workers_report() -> None:
    a = {"rss_kb": 100, "calls": 2, "live_objects": {"Call": 2}, "gc": {"counts": [1, 2, 3]}}
    b = {"rss_kb": 50, "calls": 1, "live_objects": {"Call": 1, "Attempt": 1}}
    merged = aggregate.merge_memory([a, b], 10)
    assert merged["rss_kb"] == 160 and merged["supervisor_rss_kb"] == 10
    assert merged["calls"] == 3 and merged["live_objects"] == {"Call": 3, "Attempt": 1}
    assert merged["workers"] == [a, b]


def test_steering_a_replacing_dialog_a_workers_contact_and_a_register() -> None:
    """Worker 1 of 3 reads (Steer.owner_of): an INVITE with Replaces goes to the replaced
    call's worker and pins its Call-ID there; the caller's ACK to that worker's Contact
    goes there too, by its Request-URI, on whichever worker the kernel gave it; a REGISTER
    goes by its source, whatever URI it names (one worker counts an address's failures)."""
    from sbc.worker import Worker

    w, w2 = Worker(1, 3, 0, None), Worker(2, 3, 0, None)
    try:
        replaced = next(f"r{n}".encode() for n in range(99) if owner(f"r{n}".encode(), 3) == 2)
        new = next(f"n{n}".encode() for n in range(99) if owner(f"n{n}".encode(), 3) == 0)
        invite = b"INVITE sip:15551230000@127.0.0.1 SIP/2.0\r\nReplaces: " + replaced
        invite += b";to-tag=a;from-tag=b\r\nCall-ID: " + new + b"\r\n\r\n"
        assert w.steer.owner_of(new, invite) == 2 == w.steer.owner_of(new, b"SIP/2.0 200 OK")
        ack = b"ACK sip:" + contact_user(2, 3).encode() + b"@127.0.0.1 SIP/2.0\r\n\r\n"
        assert w2.steer.owner_of(new, ack) == 2  # no pin there
        assert w.steer.owner_of(new, ack.replace(b"sbc02", b"sbc05")) == 2  # pinned here
        other = next(f"o{n}".encode() for n in range(99) if owner(f"o{n}".encode(), 3) == 0)
        assert w.steer.owner_of(other, ack) == 2
        assert w.steer.owner_of(other, ack.replace(b"sbc02", b"sbc05")) == 0  # no worker 5
        register = b"REGISTER sip:sbc02@127.0.0.1 SIP/2.0\r\n\r\n"
        host = next(
            f"10.0.0.{n}".encode() for n in range(99) if owner(f"10.0.0.{n}".encode(), 3) != 2
        )
        assert w.steer.owner_of(host, register) == owner(host, 3)
    finally:
        w.sock.close()
        w2.sock.close()
        ids.configure(0, 1)
