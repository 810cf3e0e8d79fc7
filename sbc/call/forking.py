"""Calls to a registered PBX's account: its contacts one after another. Pure.

An account may hold several contacts (sbc.registrar, RFC 3261 §10.3). A call to it tries
them in turn, highest q first (equal q: the most recently refreshed first), as a proxy's
sequential search does (RFC 3261 §16.6, §16.7): the first contact is the attempt, the others
wait in the call's redirections, each an attempt of its own (and a CDR attempt entry). A
contact that fails, does not answer within ``registrar.contact_timeout`` (CANCEL, outcome
``no_answer``), or is not there (B-timer, Timer B: 408), hands the call to the next
whatever the caller's route_advance codes say, since it is the same destination reached at
another address; a 6xx (a global failure, §21.6) or the caller's CANCEL ends the search.
After the last contact the caller hears the best of the contacts' failures (``best``, §16.7
step 6), and the ordinary route advance rules apply to it.

    carrier              sbc                  desk :5070 (q=1)       soft :5072 (q=0.5)
     |--INVITE DID------->|--INVITE-------------->|                       |
     |                    |<-------------------486|                       |
     |                    |--ACK----------------->|                       |
     |                    |--INVITE------------------------------------->|  attempt 2
     |<---------------200-|<------------------------------------------200-|
"""

from __future__ import annotations

from sbc.call.model import Attempt, Call
from sbc.call.redirect import Redirect, registered
from sbc.config.schema import TrunkGroup
from sbc.sip.message import Response
from sbc.state.memory import MemoryStore


def contacts(tg: TrunkGroup, index: int, store: MemoryStore, wall: float) -> list[Redirect]:
    """Where a call to account ``index`` of ``tg`` goes: each usable live contact, in the
    order they are tried."""
    username = tg.trunks[index].username
    found = (registered(tg, index, b) for b in store.contacts_of(tg.name, username, wall))
    return [r for r in found if r is not None]


def forks_on(call: Call, status: int) -> bool:
    """The current attempt went to one contact of an account and failed with ``status``:
    is another contact of the same account next?"""
    a = call.current
    return a is not None and status < 600 and _sibling_next(call, a)


def ring_limit(call: Call, attempt: Attempt) -> float:
    """Seconds ``attempt`` (to one contact) may go unanswered before the account's next
    contact is tried (``registrar.contact_timeout``); 0: no limit (none waits)."""
    if not _sibling_next(call, attempt):
        return 0.0
    return float(call.snap.config.node.registrar.contact_timeout)


# §16.7 step 6: within the class chosen, prefer answers that tell the caller how to retry
RETRY_HINTS = frozenset((401, 407, 415, 420, 484))


def best(call: Call, status: int, response: Response | None) -> tuple[int, Response | None, bool]:
    """The failure the caller is to hear after the current attempt failed with ``status``:
    with earlier contacts of the same account failed before it, the best of their failures
    (RFC 3261 §16.7 step 6: a 6xx if any, else the lowest class; a 503 only if all are, since
    it would tell the caller the whole account is out of service; a 408 of a contact that was
    not there after any real answer). The flag: the current attempt's own failure chosen."""
    prev = call.last_failure
    if prev is None or len(call.attempts) < 2 or not _same_account(call.attempts[-2], call.current):
        return status, response, True
    if _rank(status) <= _rank(prev[0]):
        return status, response, True
    return prev[0], prev[1], False


def _rank(status: int) -> tuple[int, int]:
    if status >= 600:
        return (0, 0)
    if status == 503:
        return (9, 0)
    return (status // 100, 0 if status in RETRY_HINTS else 2 if status == 408 else 1)


def _same_account(a: Attempt, b: Attempt | None) -> bool:
    return (
        b is not None
        and a.trunk_group.direction == "origination"
        and a.trunk_group.name == b.trunk_group.name
        and a.trunk == b.trunk
    )


def _sibling_next(call: Call, a: Attempt) -> bool:
    if a.trunk_group.direction != "origination" or not call.redirects:
        return False
    nxt = call.redirects[0]
    return nxt.by is None and nxt.trunk_group.name == a.trunk_group.name and nxt.index == a.trunk
