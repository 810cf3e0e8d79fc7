"""Which worker owns a SIP message: one cheap rule every worker computes alike. Pure.

With ``node.workers`` > 1, every worker binds the SIP port with SO_REUSEPORT, and the kernel
picks a socket by the 4-tuple: every message from one peer socket (a carrier trunk always
sending from 5060, one sipp UAC) lands on one worker. So a worker that reads a datagram asks
``owner(call_id)``; a message another worker owns is handed to it whole (sbc.worker), and
the owner answers from its own socket on the same address, so peers see one SBC.

The owner is the Call-ID's CRC-32 modulo the number of workers:

- an A-leg's Call-ID is the caller's: its calls spread over the workers by their Call-IDs,
  like Kamailio's children share one socket;
- every id a worker mints (sbc.sip.ids) is drawn until it hashes to that worker, so a
  B-leg's Call-ID names its owner: a vendor's responses and in-dialog requests steer home.

An INVITE with Replaces (RFC 3891) belongs with the call it replaces, which lives with the
Call-ID that Replaces names (``replaced_call_id``): the worker that reads it hands it there
and pins its own Call-ID to that worker, so the caller's ACK, BYE and re-INVITEs of the new
dialog (from the same socket: the same worker reads them) follow it.

A worker's Contact user names it (``contact_user``: ``sbc07``), and a peer sends its
in-dialog requests to our Contact: a request to ``sip:sbc07@`` goes to worker 7
(``named_worker``), which holds that dialog (it wrote the Contact), whatever its Call-ID
hashes to (the dialog of an INVITE with Replaces lives with the replaced call). The kernel
takes that step itself for ACK and BYE (sbc.reuseport): the supervisor binds the workers'
shared UDP sockets in worker order under a classic BPF program that reads the same bytes,
so they reach worker 7's socket with no hand-over. The kernel's choice is only a shortcut:
every worker still steers.

Any Call-ID a stranger invents only picks which worker checks it; each worker checks
everything (sbc.call.gate, sbc.call.indialog). A TCP/TLS connection stays with the worker
that accepted or opened it (RFC 3261 §18.2.2 reuses it for the responses); its messages are
steered by Call-ID too, and the owner's answers go back through that worker (sbc.worker).
"""

from __future__ import annotations

from zlib import crc32

# RFC 3261 §7.3.3 / §20.8: "Call-ID" or its compact form "i", any case, optional spaces
# before the colon. The common spellings are found with one bytes.find each.
_EXACT = (b"\nCall-ID:", b"\nCall-Id:", b"\ni:", b"\nCALL-ID:", b"\ncall-id:")


def call_id(data: bytes) -> bytes | None:
    """The Call-ID of a raw SIP message, or None when the headers name none (the owner
    then parses it and answers 400). Only the header section is searched (in place: this
    runs on every datagram a worker reads, and on every one the trace ring keeps)."""
    end = data.find(b"\r\n\r\n")
    end = len(data) if end < 0 else end + 2
    for name in _EXACT:
        at = data.find(name, 0, end)
        if at >= 0:
            return _value(data, at + len(name), end)
    lower = data[:end].lower()  # rare spellings: "call-ID  :" and the like
    at = lower.find(b"\ncall-id")
    while at >= 0:
        colon = at + 8
        while colon < end and lower[colon] in b" \t":
            colon += 1
        if colon < end and lower[colon] == 0x3A:
            return _value(data, colon + 1, end)
        at = lower.find(b"\ncall-id", at + 1)
    return None


def _value(data: bytes, start: int, end: int) -> bytes:
    stop = data.find(b"\n", start, end)
    return data[start : stop if stop >= 0 else end].strip()


def owner(cid: bytes, workers: int) -> int:
    """The worker (0..workers-1) that owns every message with this Call-ID."""
    return crc32(cid) % workers


def owns(cid: str, worker: int, workers: int) -> bool:
    """Whether an id we are about to mint would steer to ``worker``."""
    return workers <= 1 or crc32(cid.encode()) % workers == worker


CONTACT_USER = "sbc"
KERNEL_STEERED = 100  # workers the two digits of a Contact user can name (sbc.reuseport)
_NAMED = b"sip:" + CONTACT_USER.encode()


def named_worker(data: bytes) -> int | None:
    """The worker a request's Request-URI names (``sip:sbc07@``: 7), or None."""
    space = data.find(b" ", 0, 16)  # the longest method we take, REGISTER, is 8
    at = space + 1 + len(_NAMED)
    if space < 0 or data[space + 1 : at] != _NAMED or data[at + 2 : at + 3] != b"@":
        return None
    tens, units = data[at] - 48, data[at + 1] - 48
    if not (0 <= tens <= 9 and 0 <= units <= 9):
        return None
    return tens * 10 + units


def contact_user(worker: int, workers: int) -> str:
    """The user part of this worker's Contact: ``sbc`` alone, ``sbc`` and the worker's two
    digits in a node of several (the kernel reads them, sbc.reuseport)."""
    if workers <= 1 or worker >= KERNEL_STEERED:
        return CONTACT_USER
    return f"{CONTACT_USER}{worker:02d}"


# RFC 3891 §6.1: "Replaces" has no compact form; the usual spellings first
_REPLACES = (b"\nReplaces:", b"\nreplaces:", b"\nREPLACES:")


def replaced_call_id(data: bytes) -> bytes | None:
    """The Call-ID the Replaces header of a raw INVITE names, or None (no such header, or
    not an INVITE)."""
    if not data.startswith(b"INVITE "):
        return None
    end = data.find(b"\r\n\r\n")
    end = len(data) if end < 0 else end + 2
    for name in _REPLACES:
        at = data.find(name, 0, end)
        if at >= 0:
            value = _value(data, at + len(name), end)
            named = value.split(b";", 1)[0].strip()
            return named or None
    return None
