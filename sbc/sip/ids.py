"""The identifiers we put on the wire: Call-IDs, tags and Via branches.

Each is 64 bits from the operating system's CSPRNG (``secrets``, read 4 KiB at a time),
hex: nothing in one tells another, or how many calls came before. A guessable Call-ID or
tag would let a stranger aim a BYE or re-INVITE at a live call (RFC 3261 §8.1.1.4 and
§19.3 ask for global uniqueness and cryptographic randomness; the dialog checks in
sbc.call.indialog do the rest).

In a node of several workers, each worker draws until the id steers to itself
(sbc.sip.steer.owns): a B-leg's Call-ID then brings the vendor's messages home. That costs
log2(workers) of the 64 bits and, on average, ``workers`` draws.
"""

from __future__ import annotations

import secrets

from sbc.sip import steer
from sbc.sip.steer import owns

_worker, _workers = 0, 1
_contact_user = steer.CONTACT_USER


def configure(worker: int, workers: int) -> None:
    """This process is worker ``worker`` of ``workers`` (sbc.worker, at start)."""
    global _worker, _workers, _contact_user
    _worker, _workers = worker, workers
    _contact_user = steer.contact_user(worker, workers)


def contact_user() -> str:
    """The user part of our Contact: it names this worker (sbc.sip.steer.contact_user)."""
    return _contact_user


_POOL = 4096  # bytes of the CSPRNG read at once: 512 ids a getrandom(2), not one each
_pool = b""
_at = 0


def _draw() -> str:
    global _pool, _at
    if _at + 8 > len(_pool):
        _pool, _at = secrets.token_bytes(_POOL), 0
    _at += 8
    return _pool[_at - 8 : _at].hex()


def new_id() -> str:
    """16 hex digits, 64 random bits (less log2(workers)), owned by this worker."""
    token = _draw()
    while _workers > 1 and not owns(token, _worker, _workers):
        token = _draw()
    return token
