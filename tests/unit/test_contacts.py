"""Several contacts per registration account (RFC 3261 §10.3) and calls that try them in
q order (sbc.call.forking), pure, with fake time."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbc.sip.digest import authorization, pick_challenge
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from sbc.state import Bind, Binding, Denied, StateCommand
from sbc.state.memory import MemoryStore
from tests.helpers import CALLER, TGS, Lab, b_legs, invite, lab_with, only

BASE = """
node:
  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]
  registrar: {max_contacts: 3}
relationships: [{name: carrier-a}, {name: vendor-x}]
routeplans:
  - name: default
    numbering: [{number: "15557770000", trunk_group: pbx}]
    routes: [{prefix: "", trunk_groups: [vendor-1, vendor-2]}]
"""
DESK = Target("udp", "10.9.9.9", 5070)
SOFT = Target("udp", "10.9.9.8", 5072)


def register(
    lab: Lab, src: Target, contacts: list[str], cseq: int, expires: int | None = 300,
    call_id: str = "",
) -> Response:  # fmt: skip
    """REGISTER from ``src`` (its own Call-ID) naming ``contacts``, answered once to a 401
    with the account's credentials: the final answer."""
    lines = "".join(f"Contact: {c}\r\n" for c in contacts)
    exp = f"Expires: {expires}\r\n" if expires is not None else ""
    call_id = call_id or f"reg-{src.host}"

    def req(n: int, auth: str) -> bytes:
        extra = f"Authorization: {auth}\r\n" if auth else ""
        return (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src.host}:{src.port};branch=z9hG4bKr{n}x{cseq}{call_id};rport\r\n"
            f"From: <sip:pbx1@127.0.0.1>;tag=r1\r\nTo: <sip:pbx1@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {n} REGISTER\r\n{lines}{exp}Max-Forwards: 70\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    (challenge,) = only(lab.feed(req(cseq, ""), src), src)
    assert isinstance(challenge, Response) and challenge.status == 401
    params = pick_challenge(challenge.get_all("WWW-Authenticate"))
    assert params is not None
    auth = authorization(params, "REGISTER", "sip:127.0.0.1", "pbx1", "s3cret")
    (answer,) = only(lab.feed(req(cseq + 1, auth), src), src)
    assert isinstance(answer, Response)
    return answer


def registered(tmp_path: Path) -> Lab:
    """The desk phone (q=1) and the softphone (q=0.5) hold one account each from its own
    address."""
    lab = lab_with(tmp_path, TGS, base=BASE)
    ok = register(lab, DESK, ["<sip:desk@10.9.9.9:5070>"], 1)
    assert ok.status == 200
    ok = register(lab, SOFT, ["<sip:soft@10.9.9.8:5072>;q=0.5"], 1)
    assert ok.status == 200
    return lab


def test_each_contact_has_its_own_expires_and_q_and_the_200_lists_them_all(
    tmp_path: Path,
) -> None:
    """desk              sbc                soft
    |--REGISTER q=1--->|                  |
    |<------------200--|  <desk>;expires=300
    |       (10 s)     |<--REGISTER q=0.5-|  Contact: <soft>;q=0.5, Expires 60
    |                  |--200------------>|  <desk>;expires=290, <soft>;expires=60;q=0.5
    |       (61 s: soft's contact expired, desk's has 229 s left)
    """
    lab = lab_with(tmp_path, TGS, base=BASE)
    ok = register(lab, DESK, ["<sip:desk@10.9.9.9:5070>"], 1)
    assert ok.get_all("Contact") == ["<sip:desk@10.9.9.9:5070>;expires=300"]
    lab.advance(10)
    ok = register(lab, SOFT, ["<sip:soft@10.9.9.8:5072>;q=0.5"], 1, expires=60)
    assert ok.get_all("Contact") == [
        "<sip:desk@10.9.9.9:5070>;expires=290",
        "<sip:soft@10.9.9.8:5072>;expires=60;q=0.5",
    ]
    got = lab.events("registrar.registered")
    assert [(e["contact"], e["q"], e["source"]) for e in got] == [
        ("sip:desk@10.9.9.9:5070", 1.0, "udp:10.9.9.9:5070"),
        ("sip:soft@10.9.9.8:5072", 0.5, "udp:10.9.9.8:5072"),
    ]
    lab.advance(61)
    wall = lab.now + lab.ctrl.wall_offset
    live = lab.store.contacts_of("pbx", "pbx1", wall)
    assert [(b.contact, round(b.expires_at - wall)) for b in live] == [
        ("sip:desk@10.9.9.9:5070", 229)
    ]
    # a query (no Contact) lists what is left
    ok = register(lab, DESK, [], 3, expires=None)
    assert ok.get_all("Contact") == ["<sip:desk@10.9.9.9:5070>;expires=229"]


def test_one_register_with_two_contacts_each_with_its_expires_then_one_removed(
    tmp_path: Path,
) -> None:
    lab = lab_with(tmp_path, TGS, base=BASE)
    ok = register(lab, DESK, ["<sip:a@10.9.9.9:5070>;expires=120, <sip:b@10.9.9.9:5070>;q=0.2"], 1)
    assert ok.get_all("Contact") == [
        "<sip:a@10.9.9.9:5070>;expires=120",
        "<sip:b@10.9.9.9:5070>;expires=300;q=0.2",
    ]
    ok = register(lab, DESK, ["<sip:a@10.9.9.9:5070>;expires=0"], 3)
    assert ok.get_all("Contact") == ["<sip:b@10.9.9.9:5070>;expires=300;q=0.2"]
    (gone,) = lab.events("registrar.unregistered")
    assert (gone["contact"], gone["expires"]) == ("sip:a@10.9.9.9:5070", 0)
    # the INVITEs of the PBX still belong to its trunk group: b is bound from that address
    assert lab.store.binding_from("udp", "10.9.9.9", 5070, lab.now) is not None


def test_wildcard_with_expires_0_removes_every_contact_of_the_account(tmp_path: Path) -> None:
    lab = registered(tmp_path)
    bad = register(lab, DESK, ["*"], 3, expires=300)
    assert bad.status == 400  # §10.2.2: * only with Expires: 0
    ok = register(lab, DESK, ["*"], 5, expires=0)
    assert ok.status == 200 and ok.get_all("Contact") == []
    removed = {e["contact"] for e in lab.events("registrar.unregistered")}
    assert removed == {"sip:desk@10.9.9.9:5070", "sip:soft@10.9.9.8:5072"}
    assert lab.store.bindings == {}
    assert lab.store.binding_from("udp", "10.9.9.8", 5072, lab.now) is None


def test_a_late_older_register_of_the_same_call_id_changes_nothing(tmp_path: Path) -> None:
    """§10.3 step 7: same Call-ID, CSeq not higher: the update is aborted."""
    lab = registered(tmp_path)  # DESK's binding came with CSeq 2
    late = register(lab, DESK, ["<sip:desk@10.9.9.9:5070>;expires=0"], 0)  # CSeq 1
    assert late.status == 400
    assert len(lab.store.contacts_of("pbx", "pbx1", lab.now)) == 2
    # another Call-ID (a rebooted phone) may
    ok = register(lab, DESK, ["<sip:desk@10.9.9.9:5070>;expires=0"], 0, call_id="reboot")
    assert ok.status == 200 and len(ok.get_all("Contact")) == 1


def test_more_contacts_than_max_contacts_gets_403_and_changes_nothing(tmp_path: Path) -> None:
    lab = registered(tmp_path)  # two of the three allowed
    two = "<sip:x@10.9.9.9:5070>, <sip:y@10.9.9.9:5070>"
    assert register(lab, DESK, [two], 3).status == 403
    assert len(lab.store.contacts_of("pbx", "pbx1", lab.now)) == 2
    assert register(lab, DESK, ["<sip:x@10.9.9.9:5070>"], 5).status == 200
    assert register(lab, DESK, ["<sip:x@10.9.9.9:5070>;q=2"], 7).status == 400  # bad q
    assert register(lab, DESK, ["<sip:z@10.9.9.9:5070>;expires=10"], 9).status == 423


def answer(
    lab: Lab, inv: Request, to: Target, status: int
) -> list[tuple[Request | Response, Target]]:
    return lab.feed(make_response(inv, status, to_tag=f"t{status}"), to)


def test_a_did_call_tries_the_contacts_in_q_order_the_next_on_failure(tmp_path: Path) -> None:
    """carrier          sbc                desk (q=1)          soft (q=0.5)
    |--INVITE DID---->|--INVITE---------->|                    |  R-URI sip:desk@...
    |                 |<---------------486|                    |
    |                 |--ACK------------->|                    |
    |                 |--INVITE-------------------------------->|  R-URI sip:soft@...
    |<-----------200--|<-------------------------------------200|
    carrier-a's route_advance (5xx by default) does not apply between contacts of one
    account; each contact is its own CDR attempt."""
    lab = registered(tmp_path)
    ((inv1, to1),) = b_legs(lab.feed(invite(user="15557770000"), CALLER))
    assert to1 == DESK and inv1.uri == "sip:desk@10.9.9.9:5070"
    out = answer(lab, inv1, DESK, 486)
    assert [m.method for m in only(out, DESK) if isinstance(m, Request)] == ["ACK"]
    ((inv2, to2),) = b_legs(out)
    assert to2 == SOFT and inv2.uri == "sip:soft@10.9.9.8:5072"
    assert inv2.to.uri.user == "15557770000"
    ok = make_response(inv2, 200, to_tag="s1", headers=[("Contact", "<sip:soft@10.9.9.8:5072>")])
    assert [m.status for m in only(lab.feed(ok, SOFT), CALLER)] == [200]  # type: ignore[union-attr]


def test_a_contact_that_never_answers_hands_the_call_to_the_next(tmp_path: Path) -> None:
    """desk is gone (a stale NAT binding): after registrar.contact_timeout (30 s, before
    Timer B's 32 s) soft is tried; when soft answers 480 too, that is the caller's answer."""
    lab = registered(tmp_path)
    ((_, to1),) = b_legs(lab.feed(invite(user="15557770000"), CALLER))
    assert to1 == DESK
    later: list[tuple[Request, Target]] = []
    for _ in range(70):
        later += b_legs(lab.advance(0.5))
        if any(t == SOFT for _, t in later):
            break
    (inv2,) = [m for m, t in later if t == SOFT]
    assert 30 <= lab.now <= 31
    out = answer(lab, inv2, SOFT, 480)
    finals = [m.status for m in only(out, CALLER) if isinstance(m, Response) and m.status >= 200]
    assert finals == [480]
    (record,) = lab.ctrl.cdrs
    got = [(a["trunk"], a["status"]) for a in record["attempts"]]
    assert got == [("10.9.9.9:5070", 480), ("10.9.9.8:5072", 480)]
    assert record["attempts"][0]["outcome"] == "no_answer"


def test_a_6xx_from_a_contact_ends_the_search(tmp_path: Path) -> None:
    lab = registered(tmp_path)
    ((inv1, _),) = b_legs(lab.feed(invite(user="15557770000"), CALLER))
    out = answer(lab, inv1, DESK, 603)
    assert b_legs(out) == []
    finals = [m.status for m in only(out, CALLER) if isinstance(m, Response) and m.status >= 200]
    assert finals == [603]


@pytest.mark.parametrize(("desk", "soft", "heard"), [(486, 503, 486), (503, 480, 480)])
def test_after_the_last_contact_the_caller_hears_the_best_failure(
    tmp_path: Path, desk: int, soft: int, heard: int
) -> None:
    """carrier          sbc                desk (q=1)          soft (q=0.5)
    |--INVITE DID---->|--INVITE---------->|                    |
    |                 |<--------------486-|                    |
    |                 |--INVITE-------------------------------->|
    |                 |<-------------------------------------503|
    |<-----------486--|                                         |
    RFC 3261 §16.7 step 6: the lowest class, and a 503 only if every contact said so (one
    desk phone out of service is not the account's). Each attempt keeps its own status."""
    lab = registered(tmp_path)
    ((inv1, _),) = b_legs(lab.feed(invite(user="15557770000"), CALLER))
    ((inv2, to2),) = b_legs(answer(lab, inv1, DESK, desk))
    assert to2 == SOFT
    out = answer(lab, inv2, SOFT, soft)
    finals = [m.status for m in only(out, CALLER) if isinstance(m, Response) and m.status >= 200]
    assert finals == [heard]
    (record,) = lab.ctrl.cdrs
    assert [a["status"] for a in record["attempts"]] == [desk, soft]


def test_a_contact_that_rings_too_long_is_cancelled_for_the_next(tmp_path: Path) -> None:
    """carrier          sbc               desk (q=1)          soft (q=0.5)
    |--INVITE DID---->|--INVITE--------->|                    |
    |<-----------180--|<-------------180-|                    |
    |   (registrar.contact_timeout, 30 s)|                    |
    |                 |--CANCEL--------->|                    |  outcome no_answer
    |                 |--INVITE-------------------------------->|
    The last contact rings on: nothing cancels it but the caller or Timer C."""
    lab = registered(tmp_path)
    ((inv1, to1),) = b_legs(lab.feed(invite(user="15557770000"), CALLER))
    lab.feed(make_response(inv1, 180, to_tag="d1"), to1)
    assert b_legs(lab.advance(29.5)) == []
    out = lab.advance(1.0)
    cancels = [m for m in only(out, DESK) if isinstance(m, Request) and m.method == "CANCEL"]
    assert len(cancels) == 1
    ((inv2, to2),) = b_legs(out)
    assert to2 == SOFT
    lab.feed(make_response(inv2, 180, to_tag="s1"), SOFT)
    out = lab.advance(60)
    assert [m for m in only(out, SOFT) if isinstance(m, Request) and m.method == "CANCEL"] == []
    ok = make_response(inv2, 200, to_tag="s1", headers=[("Contact", "<sip:soft@10.9.9.8:5072>")])
    assert [m.status for m in only(lab.feed(ok, SOFT), CALLER)] == [200]  # type: ignore[union-attr]
    (call,) = lab.ctrl.calls.values()
    assert [(a.status, a.outcome) for a in call.attempts] == [(480, "no_answer"), (200, "answered")]


def test_the_store_indexes_each_contact_and_applies_shared_changes() -> None:
    """What the supervisor and the workers do with a REGISTER's changes (sbc.state.Bind):
    each binding is one contact; a removal (expires_at 0) takes only that contact."""
    store = MemoryStore()
    a = Binding("pbx", "pbx1", "udp", "10.9.9.9", 5070, "sip:a@10.9.9.9", 300.0, 0.5)
    b = Binding("pbx", "pbx1", "udp", "10.9.9.9", 5070, "sip:b@10.9.9.9", 200.0, 1.0)
    c = Binding("pbx", "pbx1", "udp", "10.9.9.8", 5072, "sip:c@10.9.9.8", 250.0, 1.0)
    for x in (a, b, c):
        store.apply(x)
    assert [x.contact for x in store.contacts_of("pbx", "pbx1", 100.0)] == [
        "sip:c@10.9.9.8",  # q 1, the later expiry first
        "sip:b@10.9.9.9",
        "sip:a@10.9.9.9",
    ]
    assert [x.contact for x in store.contacts_of("pbx", "pbx1", 220.0)] == [
        "sip:c@10.9.9.8",
        "sip:a@10.9.9.9",
    ]
    store.apply(Binding("pbx", "pbx1", "", "", 0, "sip:a@10.9.9.9", 0.0))
    assert store.binding_from("udp", "10.9.9.9", 5070, 100.0) == b  # b still from there
    store.apply(Binding("pbx", "pbx1", "", "", 0, "sip:b@10.9.9.9", 0.0))
    assert store.binding_from("udp", "10.9.9.9", 5070, 100.0) is None
    assert not store.host_bound("10.9.9.9", 100.0) and store.host_bound("10.9.9.8", 100.0)
    store.unbind("pbx", "pbx1")
    assert store.bindings == {} and store.binding_of("pbx", "pbx1", 100.0) is None


def test_expired_contacts_are_pruned_and_the_removals_shared(tmp_path: Path) -> None:
    """A phone that registers a new Contact each time (a new port after a NAT rebinding)
    must not grow the account's list, nor any sibling's copy of it (sbc.state.Bind)."""
    lab = lab_with(tmp_path, TGS, base=BASE)
    register(lab, DESK, ["<sip:desk@10.9.9.9:6001>;expires=60"], 1)
    lab.advance(61)
    shared: list[Bind] = []
    execute = lab.executor.state

    def state(cmd: StateCommand, now: float) -> tuple[bool, Denied | None]:
        if isinstance(cmd, Bind):
            shared.append(cmd)
        return execute(cmd, now)

    lab.executor.state = state
    register(lab, DESK, ["<sip:desk@10.9.9.9:6002>;expires=60"], 3)
    assert [b.contact for b in lab.store.bindings.values()] == ["sip:desk@10.9.9.9:6002"]
    (bind,) = shared
    got = [(b.contact, b.expires_at) for b in bind.bindings]
    assert got[1:] == [("sip:desk@10.9.9.9:6001", 0.0)]  # the expired one, removed
    assert not lab.events("registrar.unregistered")  # pruned silently
    store = MemoryStore()
    store.bind(Binding("pbx", "pbx1", "udp", "h", 1, "sip:old@h", 10.0))
    store.prune(20.0)
    assert store.bindings == {}
