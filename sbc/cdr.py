"""Call detail records: one JSON object per call, written when the call ends.

The model is pure: ``from_call`` and ``refused`` turn a finished call (or an INVITE refused
before it became one) into a flat dict whose keys are the CDR's columns; the controller
hands these out like its notices. ``JsonLines`` is the I/O half: it appends one line per
record with a single ``write(2)`` on an ``O_APPEND`` descriptor, so a crash loses only calls
still in progress and concurrent readers never see half a line; before each write it checks
that the path still names the file it holds open, so logrotate's rename (or a delete) is
followed by a fresh file and no line is lost. ``export`` reads records back for billing.

Times are UTC ISO 8601 with milliseconds; durations are seconds. ``billable`` is the answered
duration rounded up to whole seconds; ``billed_seconds`` is that after the deck's increments
and propagation delay, and the money fields are decimal strings (routing.rating).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from routing.rating import Rated, Tariff, rate_call

if TYPE_CHECKING:
    from sbc.call.model import Attempt, Call

# The CSV columns, in order (attempts and media are flattened into one cell each).
COLUMNS = (
    "call_id",
    "sip_call_id",
    "relationship",
    "trunk_group",
    "source",
    "ani",
    "dnis",
    "ani_routed",
    "dnis_routed",
    "setup_time",
    "provisional_time",
    "answer_time",
    "end_time",
    "pdd",
    "duration",
    "billable",
    "disposition",
    "status",
    "reason",
    "hangup",
    "egress_trunk_group",
    "egress_trunk",
    "rate_status",
    "rate_deck",
    "rate_prefix",
    "rate",
    "billed_seconds",
    "revenue",
    "cost_deck",
    "cost_prefix",
    "cost_rate",
    "cost_billed_seconds",
    "cost",
    "margin",
    "currency",
    "attempts",
    "media",
    "b_sip_call_ids",  # each attempt's B-leg Call-ID, '|' between attempts, as in attempts
    "node",
)

# A record's rating fields when no deck applies (and in refused records): all empty.
UNRATED_KEYS = COLUMNS[COLUMNS.index("rate_status") : COLUMNS.index("attempts")]
NO_RATING: dict[str, Any] = dict.fromkeys(UNRATED_KEYS)

BUSY = frozenset((486, 600))
NO_ANSWER = frozenset((408, 480))


def iso(t: float | None) -> str | None:
    """A wall-clock time as UTC ISO 8601 with milliseconds ('Z' suffix)."""
    if t is None:
        return None
    frac, whole = math.modf(t)  # as datetime.fromtimestamp: microseconds, half to even
    us = round(frac * 1e6)
    second = int(whole) + (us >= 1_000_000) - (us < 0)
    return f"{_second(second)}.{(us % 1_000_000) // 1000:03d}Z"


@functools.lru_cache(maxsize=4)  # few survivors: each pins its arena
def _second(second: int) -> str:
    """The date and time of one whole second: a CDR's few times fall in a few seconds."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(text: str) -> float:
    """An ISO 8601 time (naive means UTC) as a POSIX timestamp."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def disposition(status: int | None, answered: bool, cancelled: bool, refused: bool) -> str:
    if answered:
        return "answered"
    if cancelled:
        return "cancelled"
    if refused:
        return "refused"
    if status in BUSY:
        return "busy"
    if status in NO_ANSWER:
        return "no_answer"
    return "failed"


def _user(uri_user: str | None, opaque: str) -> str:
    return uri_user if uri_user is not None else opaque


def _status(tariff: Tariff | None, rated: Rated | None) -> str | None:
    return None if tariff is None else ("rated" if rated is not None else "unrated")


def _side(rated: Rated | None) -> tuple[str | None, str | None, str | None, int | None, str | None]:
    if rated is None:
        return None, None, None, None, None
    return rated.deck, rated.prefix, str(rated.rate), rated.billed_seconds, str(rated.amount)


def rating(call: Call, wall: float, duration: float) -> dict[str, Any]:
    """The rating fields of a call's record (README, Rating): revenue from the ingress trunk
    group's deck, cost from the answered (else the last) attempt's egress deck, both on
    the routed DNIS at the call's setup time; decimal strings, rounded per deck."""
    tariffs = call.snap.tariffs
    if not tariffs:
        return NO_RATING
    setup = call.started + wall
    number = call.dnis
    t_in = tariffs.get(call.ingress.name)
    revenue = rate_call(t_in, number, setup, duration) if t_in is not None else None
    leg = call.answered or (call.attempts[-1] if call.attempts else None)
    t_out = tariffs.get(leg.trunk_group.name) if leg is not None else None
    cost = rate_call(t_out, number, setup, duration) if t_out is not None else None
    margin = None
    if revenue is not None and cost is not None and revenue.currency == cost.currency:
        quantum = min(t_in.quantum, t_out.quantum)  # type: ignore[union-attr]
        margin = str((revenue.amount - cost.amount).quantize(quantum))
    sides = (_status(t_in, revenue), _status(t_out, cost))
    status = None if sides == (None, None) else ("unrated" if "unrated" in sides else "rated")
    rd, rp, rr, rb, ra = _side(revenue)
    cd, cp, cr, cb, ca = _side(cost)
    currency = revenue.currency if revenue is not None else (cost.currency if cost else None)
    return {
        "rate_status": status,
        "rate_deck": rd,
        "rate_prefix": rp,
        "rate": rr,
        "billed_seconds": rb,
        "revenue": ra,
        "cost_deck": cd,
        "cost_prefix": cp,
        "cost_rate": cr,
        "cost_billed_seconds": cb,
        "cost": ca,
        "margin": margin,
        "currency": currency,
    }


def _attempt_rating(a: Attempt, setup: float, duration: float) -> dict[str, Any]:
    """An attempt's cost: its egress deck's rate, billed only for the answered one."""
    call = a.call
    tariff = call.snap.tariffs.get(a.trunk_group.name)
    if tariff is None:
        return {}
    rated = rate_call(tariff, call.dnis, setup, duration if a is call.answered else 0.0)
    deck, prefix, rate, billed, cost = _side(rated)
    return {
        "rate_status": _status(tariff, rated),
        "rate_deck": deck,
        "rate_prefix": prefix,
        "rate": rate,
        "billed_seconds": billed,
        "cost": cost,
    }


def _attempt(a: Attempt, wall: float, call_end: float | None, duration: float) -> dict[str, Any]:
    end = a.ended_at if a.ended_at is not None else call_end
    rated = _attempt_rating(a, a.call.started + wall, duration) if a.call.snap.tariffs else {}
    return {
        "n": a.n,
        "trunk_group": a.trunk_group.name,
        "trunk": f"{a.target.uri_host}:{a.target.port}",  # IPv6 bracketed
        "b_sip_call_id": a.invite.call_id,  # joins the vendor's CDR of this attempt
        "status": a.status,
        "outcome": a.outcome,
        "start": iso(a.started + wall),
        "provisional": iso(a.provisional_at + wall) if a.provisional_at is not None else None,
        "end": iso(end + wall) if end is not None else None,
        "redirected_by": a.redirected_by,
        **rated,
    }


def from_call(call: Call, wall: float, media: dict[str, Any] | None) -> dict[str, Any]:
    """The record of a call that reached routing (answered, failed, cancelled or refused by
    an egress limit). ``wall`` turns the controller's monotonic times into wall-clock ones."""
    answered = call.answered
    routed = answered or (call.attempts[-1] if call.attempts else None)
    ended = call.ended_at if call.ended_at is not None else call.started
    duration = round(ended - call.answered_at, 3) if call.answered_at is not None else 0.0
    pdd_from = call.first_provisional_at or call.answered_at
    a_ruri = call.a_invite.ruri
    return {
        "call_id": call.id,
        "sip_call_id": call.a_invite.call_id,
        "relationship": call.ingress.relationship,
        "trunk_group": call.ingress.name,
        "source": str(call.source),
        "ani": call.received_ani,
        "dnis": _user(a_ruri.user, a_ruri.opaque) if a_ruri is not None else "",
        "ani_routed": routed.invite.from_.uri.user if routed is not None else None,
        "dnis_routed": (
            routed.invite.ruri.user if routed is not None and routed.invite.ruri else None
        ),
        "setup_time": iso(call.started + wall),
        "provisional_time": iso(call.first_provisional_at + wall)
        if call.first_provisional_at is not None
        else None,
        "answer_time": iso(call.answered_at + wall) if call.answered_at is not None else None,
        "end_time": iso(ended + wall),
        "pdd": round(pdd_from - call.started, 3) if pdd_from is not None else None,
        "duration": duration,
        "billable": math.ceil(duration - 1e-9) if duration > 0 else 0,
        "disposition": disposition(
            call.final_status,
            answered is not None,
            call.cancelled and call.hangup == "caller",
            call.refused,
        ),
        "status": call.final_status,
        "reason": call.reason,
        "hangup": call.hangup or ("sbc" if answered is None and not call.cancelled else ""),
        "egress_trunk_group": answered.trunk_group.name if answered is not None else None,
        "egress_trunk": f"{answered.target.uri_host}:{answered.target.port}" if answered else None,
        **rating(call, wall, duration),
        "attempts": [_attempt(a, wall, call.ended_at, duration) for a in call.attempts],
        "media": media,
    }


def refused(
    *,
    call_id: str,
    sip_call_id: str,
    relationship: str,
    trunk_group: str,
    source: str,
    ani: str,
    dnis: str,
    at: float,
    status: int,
    reason: str,
) -> dict[str, Any]:
    """The record of an INVITE refused before routing (admission, time of day, a filter)."""
    t = iso(at)
    return {
        "call_id": call_id,
        "sip_call_id": sip_call_id,
        "relationship": relationship,
        "trunk_group": trunk_group,
        "source": source,
        "ani": ani,
        "dnis": dnis,
        "ani_routed": None,
        "dnis_routed": None,
        "setup_time": t,
        "provisional_time": None,
        "answer_time": None,
        "end_time": t,
        "pdd": None,
        "duration": 0.0,
        "billable": 0,
        "disposition": "refused",
        "status": status,
        "reason": reason,
        "hangup": "sbc",
        "egress_trunk_group": None,
        "egress_trunk": None,
        **NO_RATING,
        "attempts": [],
        "media": None,
    }


# --- I/O: the writer and the export -------------------------------------------------------------


_encode = msgspec.json.Encoder().encode


class JsonLines:
    """Appends JSON lines to ``path``; follows rotation (rename or delete) by reopening."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1
        self._ino: tuple[int, int] | None = None
        self.written = 0

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(fd)
        self.close()
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)

    def _current(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ino

    def write(self, record: dict[str, Any]) -> None:
        """One record, one line, one write(2): on disk (in the page cache) when this returns."""
        if self._fd < 0 or not self._current():
            self._open()
        line = _encode(record) + b"\n"  # msgspec: compact JSON, several times json's speed
        view = memoryview(line)
        while view:  # a regular file takes it whole; loop only for the pathological case
            n = os.write(self._fd, view)
            view = view[n:]
        self.written += 1

    def reopen(self, path: str | Path | None = None) -> None:
        """After a reload (the path may have changed): the next write opens afresh."""
        if path is not None:
            self.path = Path(path)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._ino = -1, None


def read(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every record of these files, in file order; a torn or foreign line is skipped."""
    for path in paths:
        with path.open("rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "call_id" in rec:
                    yield rec


def rotated(path: Path) -> list[Path]:
    """The live file and its uncompressed rotations (cdr.jsonl.1, cdr.jsonl-20261122 ...),
    oldest first, as logrotate leaves them."""
    found = [p for p in path.parent.glob(path.name + "*") if not p.name.endswith((".gz", ".xz"))]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name != path.name))


def select_records(
    records: Iterable[dict[str, Any]], start: float | None, end: float | None
) -> list[dict[str, Any]]:
    """Records whose setup time falls in [start, end), sorted by setup time."""
    out = []
    for rec in records:
        setup = rec.get("setup_time")
        if not isinstance(setup, str):
            continue
        t = parse_time(setup)
        if (start is None or t >= start) and (end is None or t < end):
            out.append((t, rec))
    out.sort(key=lambda x: x[0])
    return [rec for _, rec in out]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def attempts_cell(attempts: list[dict[str, Any]]) -> str:
    """``n:trunk_group:host:port:status:outcome`` per attempt, '|' between attempts: one cell
    a spreadsheet filter can still search."""
    return "|".join(
        f"{a['n']}:{a['trunk_group']}:{a['trunk']}:{a['status']}:{a['outcome']}" for a in attempts
    )


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180
    w.writerow(COLUMNS)
    for rec in records:
        row = []
        for col in COLUMNS:
            v = rec.get(col)
            if col == "b_sip_call_ids":
                cell = "|".join(a.get("b_sip_call_id") or "" for a in rec.get("attempts") or [])
            else:
                cell = attempts_cell(v or []) if col == "attempts" else _cell(v)
            row.append(cell)
        w.writerow(row)
    return buf.getvalue()


class Spool:
    """The CDR file's writer with its failure policy: when the file cannot be written (disk
    full, permissions) records wait in memory, in order, up to ``limit``, and go out with the
    next write that works; past the limit the oldest are dropped, and each drop is reported
    with the call ids (so they can be rebuilt from the call log)."""

    def __init__(self, writer: JsonLines, limit: int = 100_000) -> None:
        self.writer = writer
        self.limit = limit
        self.backlog: list[dict[str, Any]] = []
        self.dropped = 0  # records lost because the backlog was full

    def write(self, records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Append the records (after any waiting ones); the errors to log, as (event, fields)."""
        backlog = self.backlog
        backlog.extend(records)
        errors: list[tuple[str, dict[str, Any]]] = []
        done = 0
        try:
            for record in backlog:
                self.writer.write(record)
                done += 1
        except OSError as e:
            pending = len(backlog) - done
            errors.append(
                (
                    "cdr.write_failed",
                    {"path": str(self.writer.path), "error": str(e), "pending": pending},
                )
            )
        del backlog[:done]
        if len(backlog) > self.limit:  # memory is bounded: the oldest go, and we say so
            lost = len(backlog) - self.limit
            self.dropped += lost
            ids = [str(r.get("call_id")) for r in backlog[:lost]]
            errors.append(("cdr.dropped", {"records": lost, "call_ids": ids}))
            del backlog[:lost]
        return errors
