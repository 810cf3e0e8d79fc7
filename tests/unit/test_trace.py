"""The per-call trace ring (sbc.trace): bounded per call and in calls, least recently
heard call dropped first."""

from __future__ import annotations

from sbc.trace import Ring, first_line


def test_ring_keeps_the_last_messages_of_the_most_recent_calls() -> None:
    ring = Ring(per_call=3, calls=2)
    for i in range(5):
        ring.add("a1", (float(i), True, "udp:1.2.3.4:5060", "a1", f"m{i}"))
    assert [m["message"] for m in ring.ladder("a1")] == ["m2", "m3", "m4"]
    ring.add("a2", (9.0, False, "udp:1.2.3.5:5060", "b2", "INVITE sip:x SIP/2.0"))
    ring.add("a1", (10.0, True, "udp:1.2.3.4:5060", "a1", "BYE"))  # a1 heard last
    ring.add("a3", (11.0, True, "udp:1.2.3.4:5060", "a3", "INVITE"))  # a2 goes
    assert ring.ladder("a2") == [] and ring.ladder("a1")[-1]["message"] == "BYE"
    (m,) = ring.ladder("a3")
    assert (m["leg"], m["direction"], m["peer"]) == ("a", "in", "udp:1.2.3.4:5060")


def test_b_leg_is_what_does_not_carry_the_correlation_id() -> None:
    ring = Ring(per_call=4)
    ring.add("a1", (1.0, False, "udp:10.0.0.2:5081", "b1", "INVITE sip:1@10.0.0.2 SIP/2.0"))
    assert ring.ladder("a1")[0]["leg"] == "b"


def test_first_line() -> None:
    assert first_line(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n") == "SIP/2.0 200 OK"
    assert len(first_line(b"x" * 5000)) == 200
