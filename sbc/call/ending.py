"""The end of a call: when it may be forgotten, and what is written about it. Pure.

A call is forgotten once nobody needs us any more: the caller has its final answer or its
BYE, every BYE we sent is answered, no attempt may still answer us, and no rtpengine answer
is due. Then its record (sbc.cdr) and its ``call.end`` line are made, and its reference
cycles are broken so reference counting frees it at once.
"""

from __future__ import annotations

from typing import Any

from sbc import cdr, manipulate
from sbc.call.model import Call, Hangup, Headers, Leg
from sbc.call.outbox import Outbox
from sbc.sip.transaction import State


def hang_up(
    out: Outbox, call: Call, side: Hangup, now: float, skip: Leg | None, reason: str
) -> bool:
    """End a call that is up (or ringing): BYE every confirmed leg except ``skip`` (which
    hung up itself), with ``Reason: SIP;cause=200;text=reason`` when sbc decided it. False
    when the call was already ending."""
    if call.state not in ("answered", "routing"):
        return False
    call.state = "ending"
    call.hangup = call.hangup or side
    call.ended_at = now
    extra = [("Reason", f'SIP;cause=200;text="{reason}"')] if reason else []
    for leg in ("a", "b"):
        dialog = call.a_dialog if leg == "a" else call.b_dialog
        if leg == skip or dialog is None:
            continue
        transport = call.source.transport if leg == "a" else dialog.peer.transport
        out.bye(call, dialog, transport, now, extra)
    return True


def fail_caller(
    out: Outbox,
    call: Call,
    status: int,
    now: float,
    reason: str | None,
    headers: Headers,
) -> None:
    """The caller's final answer to a call that did not connect, after the ingress trunk
    group's sip_code manipulation (the new code brings its own reason phrase)."""
    mapped = manipulate.sip_code(call.snap.rules[call.ingress.name], status)
    if mapped != status:
        status, reason = mapped, None
    call.final_status = status
    call.state = "ended"
    call.ended_at = now
    out.respond(call.a_tx, status, now, reason, headers=headers, to_tag=call.a_dialog.local_tag)


def can_forget(call: Call) -> bool:
    if call.state not in ("ending", "ended") or call.byes > 0:
        return False
    for a in call.attempts:
        # Wait for attempts that may still answer us, but not for one we gave up on with
        # no provisional (quiet): its late 2xx, if any, is still ACKed and hung up, and the
        # call's ports must not stay held until that vendor's Timer B (32 s).
        tx = a.tx
        if tx is not None and tx.state in (State.CALLING, State.PROCEEDING) and not tx.quiet:
            return False
    return not call.media_busy  # an ng answer is due: it comes back here


def record(call: Call, wall_offset: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The call's CDR and the fields of its ``call.end`` line; the call is released."""
    assert call.ended_at is not None
    media: dict[str, Any] | None = None
    if call.media_stats is not None:
        media = call.media_stats.as_dict()
        legs = {call.a_tag: "a", call.tag("b"): "b"}
        media["legs"] = {legs[t]: v for t, v in media["legs"].items() if t in legs}
    duration = round(call.ended_at - call.answered_at, 3) if call.answered_at is not None else 0.0
    record = cdr.from_call(call, wall_offset, media)
    attempts = [
        {
            "n": a.n,
            "trunk_group": a.trunk_group.name,
            "trunk": f"{a.target.host}:{a.target.port}",
            "status": a.status,
            "outcome": a.outcome,
        }
        for a in call.attempts
    ]
    release(call)
    fields = {
        "status": call.final_status,
        "hangup": call.hangup or "",
        "duration": duration,
        "attempts": attempts,
        "media": media,
    }
    return record, fields


def release(call: Call) -> None:
    """Break an ended call's reference cycles (call and its attempts, an attempt and its
    transaction, the call and its INVITE transaction), so reference counting frees it as
    soon as the last transaction lets go of it, not the cyclic collector some time later.
    Late answers still work: an attempt keeps its call, a transaction its attempt."""
    call.a_tx.ctx = None
    for a in call.attempts:
        a.tx = None
    call.b_dialog_kept = call.b_dialog  # a Dialog holds no call: no cycle
    call.attempts = []
    call.current = call.answered = None
