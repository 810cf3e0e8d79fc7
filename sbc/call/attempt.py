"""One attempt's ladder: where a B-leg INVITE stands, and whether it may be cancelled. Pure.

    CALLING --1xx--> PROCEEDING --180/183--> RINGING --2xx--> ANSWERED
       |                 |                      |
       +-----------------+----------------------+--> FAILED  (a final failure, or left:
                                                              B-timer, Max PDD, Timer C,
                                                              the caller cancelled)

The timers read the phase: the B-timer gives up on an attempt still CALLING (no 100:
the trunk is not there), Max PDD on one not yet RINGING, Timer C (RFC 3261 §16.6 item 11)
on any live one, restarted by each provisional. Max PDD has two sources: the termination
trunk group's counts from each INVITE we send it (then hunting goes on), the origination
trunk group's from the caller's INVITE until the caller hears ringing (then it ends).
A CANCEL may only follow a provisional (§9.1): leaving an attempt that has none makes its
cancel PENDING, sent with its first provisional, if any ever comes. A 401/407 is answered
once (a new INVITE, CSeq + 1): the attempt is CALLING again, since its CANCEL must now wait
for the new INVITE's provisional.
"""

from __future__ import annotations

from sbc.call.model import LIVE, Attempt, Call, Cancel, Outcome, Phase

# What the guide's Max PDD and "stop route advance on 180/183" count as the caller hearing
# ringing: 180, 181 (being forwarded) and 182 (queued) ring or play early media, as 183
# does; 199 (RFC 6228, an early dialog ended) and 100 do not.
RINGING = frozenset((180, 181, 182, 183))


def heard(a: Attempt, status: int, now: float) -> bool:
    """A provisional from the vendor. True: send the CANCEL now (one was pending)."""
    if a.phase in LIVE:
        if status in RINGING:
            if a.provisional_at is None:  # its first ring, whichever INVITE it answers
                a.provisional_at = now
            a.phase = Phase.RINGING
        elif a.phase is Phase.CALLING:
            a.phase = Phase.PROCEEDING
    if a.cancel is Cancel.PENDING:
        a.cancel = Cancel.SENT
        return True
    return False


def leave(a: Attempt, outcome: Outcome, status: int) -> bool:
    """We give up on a live attempt (a timer, or the call no longer wants it). True: send
    the CANCEL now; False: it has had no provisional, so the CANCEL waits for one."""
    a.outcome = a.outcome or outcome
    if a.status is None:
        a.status = status
    return cancel(a)


def cancel(a: Attempt) -> bool:
    """The call wants this attempt gone. True: send the CANCEL now."""
    if a.cancel is not Cancel.NONE or a.phase not in LIVE:
        return False
    if a.phase is Phase.CALLING:
        a.cancel = Cancel.PENDING
        return False
    a.cancel = Cancel.SENT
    return True


def b_timer_due(a: Attempt) -> bool:
    return a.phase is Phase.CALLING and a.status is None


def max_pdd_due(a: Attempt) -> bool:
    """Max PDD: no 180/183 yet (one before a digest retry counts)."""
    return a.provisional_at is None and live(a)


def max_pdd_at(a: Attempt) -> float | None:
    """When Max PDD gives up on this attempt: its termination trunk group's Max PDD after
    its INVITE, or the caller's (``caller_pdd_at``), whichever comes first; None: never."""
    limit = a.trunk_group.limits.max_pdd
    dues = [a.started + limit] if limit else []
    caller = caller_pdd_at(a.call)
    if caller is not None:
        dues.append(caller)
    return min(dues, default=None)


def caller_pdd_at(call: Call) -> float | None:
    """The origination trunk group's Max PDD (the guide: from dialling until the caller
    hears ringing) runs from the caller's INVITE while no attempt has sent 180/183; past it
    the call stops hunting. None: no such limit, or the caller has heard ringing."""
    limit = call.ingress.limits.max_pdd
    if not limit or any(x.provisional_at is not None for x in call.attempts):
        return None
    return call.started + limit


def max_call_duration(a: Attempt) -> int:
    """Seconds the call answered on this attempt may last: the shorter of its origination
    and termination trunk groups' Max Call Duration (0 on both: no limit)."""
    limits = [tg.limits.max_call_duration for tg in (a.call.ingress, a.trunk_group)]
    return min((x for x in limits if x), default=0)


def live(a: Attempt) -> bool:
    """Still the call's hope: no final answer, not given up."""
    return a.phase in LIVE and a.status is None


def challenged(a: Attempt) -> bool:
    """A 401/407: may we answer it? Once per attempt; then the attempt is CALLING again (a
    CANCEL must wait for the new INVITE's provisional, §9.1), though it has rung if it did."""
    if a.challenged:
        return False
    a.challenged = True
    a.phase = Phase.CALLING
    return True
