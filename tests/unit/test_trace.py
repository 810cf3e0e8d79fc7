"""The per-call trace ring (sbc.trace): bounded per call and in calls, least recently
heard call dropped first; packed per call, and the same after a repack."""

from __future__ import annotations

from sbc.trace import Ring, first_line, head


def test_ring_keeps_the_last_messages_of_the_most_recent_calls() -> None:
    ring = Ring(per_call=3, calls=2)
    for i in range(5):
        ring.add("a1", float(i), True, "udp:1.2.3.4:5060", "a1", f"m{i}".encode())
    assert [m["message"] for m in ring.ladder("a1")] == ["m2", "m3", "m4"]
    assert [m["time"] for m in ring.ladder("a1")] == [2.0, 3.0, 4.0]
    ring.add("a2", 9.0, False, "udp:1.2.3.5:5060", "b2", b"INVITE sip:x SIP/2.0")
    ring.add("a1", 10.0, True, "udp:1.2.3.4:5060", "a1", b"BYE")  # a1 heard last
    ring.add("a3", 11.0, True, "udp:1.2.3.4:5060", "a3", b"INVITE")  # a2 goes
    assert ring.ladder("a2") == [] and ring.ladder("a1")[-1]["message"] == "BYE"
    (m,) = ring.ladder("a3")
    assert (m["leg"], m["direction"], m["peer"]) == ("a", "in", "udp:1.2.3.4:5060")


def test_b_leg_is_what_does_not_carry_the_correlation_id() -> None:
    ring = Ring(per_call=4)
    ring.add("a1", 1.0, False, "udp:10.0.0.2:5081", "b1", b"INVITE sip:1@10.0.0.2 SIP/2.0")
    ring.add("a1", 1.5, True, "udp:10.0.0.1:5070", "a1", b"ACK sip:sbc SIP/2.0")
    b, a = ring.ladder("a1")
    assert (b["leg"], b["sip_call_id"], b["direction"]) == ("b", "b1", "out")
    assert (a["leg"], a["sip_call_id"], a["direction"]) == ("a", "a1", "in")


def test_repack_keeps_every_ladder_in_order() -> None:
    ring = Ring(per_call=3, calls=10)
    for n in range(12):
        for i in range(n % 5):
            ring.add(f"c{n}@h\xe9", n + i / 10, bool(i % 2), f"udp:10.0.0.{n}:5060", f"b{i}", b"x")
    before = {key: ring.ladder(key) for key in ring.rings}
    order = list(ring.rings)
    ring.repack()
    assert list(ring.rings) == order and {k: ring.ladder(k) for k in ring.rings} == before
    ring.add("c9@h\xe9", 99.0, True, "udp:10.0.0.1:5060", "c9@h\xe9", b"BYE")  # goes on
    assert [m["message"] for m in ring.ladder("c9@h\xe9")][-1] == "BYE"
    assert len(ring.ladder("c9@h\xe9")) == 3
    empty = Ring(per_call=3)
    empty.repack()
    assert not empty.rings


def test_first_line() -> None:
    assert first_line(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n") == "SIP/2.0 200 OK"
    assert len(first_line(b"x" * 5000)) == 200
    assert head(b"BYE sip:x SIP/2.0\r\n\r\n") == b"BYE sip:x SIP/2.0"
