"""Calls to a registered PBX's account: its contacts one after another. Pure.

An account may hold several contacts (sbc.registrar, RFC 3261 §10.3). A call to it tries
them in turn, highest q first (equal q: the most recently refreshed first), as a proxy's
sequential search does (RFC 3261 §16.6, §16.7): the first contact is the attempt, the others
wait in the call's redirections, each an attempt of its own (and a CDR attempt entry). A
contact that fails, does not answer within ``registrar.contact_timeout`` (CANCEL, outcome
``no_answer``), or is not there (B-timer, Timer B: 408), hands the call to the next
whatever the caller's route_advance codes say, since it is the same destination reached at
another address; a 6xx (a global failure, §21.6) or the caller's CANCEL ends the search.
After the last contact the ordinary route advance rules apply.

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


def _sibling_next(call: Call, a: Attempt) -> bool:
    if a.trunk_group.direction != "origination" or not call.redirects:
        return False
    nxt = call.redirects[0]
    return nxt.by is None and nxt.trunk_group.name == a.trunk_group.name and nxt.index == a.trunk
