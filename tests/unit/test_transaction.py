"""RFC 3261 §17 timers with fake time: no sleeps, the test jumps to each deadline."""

from __future__ import annotations

from sbc.sip.message import Response, make_response
from sbc.sip.parser import parse_message
from sbc.sip.transaction import (
    AckNotReceived,
    RequestReceived,
    State,
    Target,
    TransactionLayer,
    TransactionTimedOut,
)

PEER = Target("udp", "127.0.0.1", 5070)


def request(method: str, branch: str = "z9hG4bKabc", body: bytes = b"") -> bytes:
    return (
        f"{method} sip:1555@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}"
        f";rport\r\nFrom: <sip:a@127.0.0.1>;tag=f1\r\nTo: <sip:1555@127.0.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def sent_times(layer: TransactionLayer, until: float, step: float = 0.05) -> list[float]:
    """Advance fake time to ``until`` and return when datagrams went out."""
    times = []
    now = 0.0
    while now < until:
        now = round(now + step, 3)
        layer.handle_timer(now)
        if layer.datagrams_to_send():
            times.append(now)
    return times


def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    req = parse_message(request("INVITE"))
    tx = layer.send_request(req, PEER, 0.0)  # type: ignore[arg-type]
    assert layer.datagrams_to_send()  # the first transmission
    # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (T1 doubling, §17.1.1.2); Timer B at 32.
    assert sent_times(layer, 33.0) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.state is State.TERMINATED
    assert [type(e) for e in layer.pop_events()] == [TransactionTimedOut]


def test_non_invite_client_timer_e_caps_at_t2() -> None:
    layer = TransactionLayer()
    layer.send_request(parse_message(request("OPTIONS")), PEER, 0.0)  # type: ignore[arg-type]
    layer.datagrams_to_send()
    times = sent_times(layer, 20.0)
    assert times[:4] == [0.5, 1.5, 3.5, 7.5] and times[4] == 11.5  # +4 s once T2 is reached


def test_provisional_stops_timer_a_and_final_error_is_acked_by_the_transaction() -> None:
    layer = TransactionLayer()
    req = parse_message(request("INVITE"))
    tx = layer.send_request(req, PEER, 0.0)  # type: ignore[arg-type]
    layer.datagrams_to_send()
    ringing = make_response(req, 180, to_tag="t1")  # type: ignore[arg-type]
    layer.receive(ringing.to_bytes(), PEER, 0.2)
    assert tx.state is State.PROCEEDING and sent_times(layer, 5.0) == []
    busy = make_response(req, 486, to_tag="t1")  # type: ignore[arg-type]
    layer.receive(busy.to_bytes(), PEER, 6.0)
    ((ack, _),) = layer.datagrams_to_send()
    assert ack.startswith(b"ACK sip:1555@127.0.0.1 SIP/2.0") and b"branch=z9hG4bKabc" in ack
    layer.receive(busy.to_bytes(), PEER, 6.5)  # retransmitted 486: ACK again, no new event
    assert len(layer.datagrams_to_send()) == 1
    assert [e.response.status for e in layer.pop_events()] == [180, 486]  # type: ignore[union-attr]


def test_server_2xx_is_retransmitted_until_the_ack() -> None:
    layer = TransactionLayer()
    layer.receive(request("INVITE"), PEER, 0.0)
    (ev,) = layer.pop_events()
    assert isinstance(ev, RequestReceived) and ev.transaction is not None
    ok = make_response(ev.request, 200, to_tag="t9")
    layer.respond(ev.transaction, ok, 0.0)
    layer.datagrams_to_send()
    assert sent_times(layer, 1.6) == [0.5, 1.5]  # §13.3.1.4: T1, 2*T1, ...
    ack = request("ACK", branch="z9hG4bKother").replace(
        b"To: <sip:1555@127.0.0.1>", b"To: <sip:1555@127.0.0.1>;tag=t9"
    )
    layer.receive(ack, PEER, 1.7)
    assert [type(e) for e in layer.pop_events()] == [RequestReceived]
    assert sent_times(layer, 40.0) == []  # no more 200s, and no AckNotReceived


def test_server_2xx_without_ack_reports_it_after_64_t1() -> None:
    layer = TransactionLayer()
    layer.receive(request("INVITE"), PEER, 0.0)
    (ev,) = layer.pop_events()
    assert isinstance(ev, RequestReceived) and ev.transaction is not None
    layer.respond(ev.transaction, make_response(ev.request, 200, to_tag="t9"), 0.0)
    sent_times(layer, 33.0)
    assert [type(e) for e in layer.pop_events()] == [AckNotReceived]


def test_server_final_error_retransmits_until_ack_then_absorbs_it() -> None:
    layer = TransactionLayer()
    layer.receive(request("INVITE"), PEER, 0.0)
    (ev,) = layer.pop_events()
    assert isinstance(ev, RequestReceived) and ev.transaction is not None
    layer.respond(ev.transaction, make_response(ev.request, 486, to_tag="t9"), 0.0)
    layer.datagrams_to_send()
    assert sent_times(layer, 1.6) == [0.5, 1.5]  # Timer G
    ack = request("ACK").replace(b"To: <sip:1555@127.0.0.1>", b"To: <sip:1555@127.0.0.1>;tag=t9")
    layer.receive(ack, PEER, 2.0)
    assert ev.transaction.state is State.CONFIRMED
    assert layer.pop_events() == []  # the ACK for a non-2xx stays in the transaction layer
    assert sent_times(layer, 40.0) == []


def test_request_retransmission_gets_the_last_response_again() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS"), PEER, 0.0)
    (ev,) = layer.pop_events()
    assert isinstance(ev, RequestReceived) and ev.transaction is not None
    layer.respond(ev.transaction, make_response(ev.request, 200, to_tag="x"), 0.0)
    first = layer.datagrams_to_send()
    layer.receive(request("OPTIONS"), PEER, 0.3)
    assert layer.datagrams_to_send() == first and layer.pop_events() == []
    # sbc_sip_messages_total: in counts the peer's retransmission, out only our first 200
    assert layer.received[("OPTIONS", 0)] == 2 and layer.sent[("OPTIONS", 200)] == 1


def test_unparseable_request_gets_400_from_its_raw_headers() -> None:
    layer = TransactionLayer()
    bad = request("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    layer.receive(bad, PEER, 0.0)
    ((data, target),) = layer.datagrams_to_send()
    resp = parse_message(data)
    assert isinstance(resp, Response) and resp.status == 400 and target == PEER
    assert resp.call_id == "c1"


def test_invite_client_accepted_ends_64_t1_after_its_2xx_with_one_timer_entry() -> None:
    """RFC 6026 §8.4: Timer M, 64*T1 after the 2xx, ends the Accepted INVITE client
    transaction. Answered before Timer B's deadline, Timer B's entry arms it when it runs
    out (one heap entry per call, not two); answered after it, Timer M is armed at once."""
    layer = TransactionLayer()
    req = parse_message(request("INVITE"))
    tx = layer.send_request(req, PEER, 0.0)  # type: ignore[arg-type]
    layer.datagrams_to_send()
    ok = make_response(req, 200, to_tag="t1")  # type: ignore[arg-type]
    layer.receive(ok.to_bytes(), PEER, 10.0)
    assert tx.state is State.ACCEPTED and layer.timers_pending == 2  # Timer A's last, B
    layer.handle_timer(31.9)
    assert layer.timers_pending == 1  # Timer B's entry, still carrying Timer M
    layer.handle_timer(32.0)  # Timer B runs out: Accepted, so Timer M is armed
    assert tx.state is State.ACCEPTED and layer.timers_pending == 1
    layer.handle_timer(41.9)
    assert tx.state is State.ACCEPTED
    layer.handle_timer(42.0)
    assert tx.state is State.TERMINATED and layer.timers_pending == 0
    assert [e.response.status for e in layer.pop_events()] == [200]  # type: ignore[union-attr]
    # A 2xx after a long ringing (Timer B passed in Proceeding): Timer M at once.
    req = parse_message(request("INVITE", branch="z9hG4bKlate"))
    tx = layer.send_request(req, PEER, 100.0)  # type: ignore[arg-type]
    layer.receive(make_response(req, 180, to_tag="t2").to_bytes(), PEER, 100.1)  # type: ignore[arg-type]
    layer.handle_timer(140.0)
    assert tx.state is State.PROCEEDING and layer.timers_pending == 0
    layer.receive(make_response(req, 200, to_tag="t2").to_bytes(), PEER, 150.0)  # type: ignore[arg-type]
    assert tx.state is State.ACCEPTED and layer.timers_pending == 1
    layer.handle_timer(181.9)
    assert tx.state is State.ACCEPTED
    layer.handle_timer(182.0)
    assert tx.state is State.TERMINATED
