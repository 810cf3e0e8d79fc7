"""CDRs into PostgreSQL (``node.cdr.database``): the JSON-lines file stays the spool.

Every record is on disk first (sbc.cdr.JsonLines, one ``write(2)`` per record), whatever the
database is doing. The shipper follows that file like ``tail -F`` and inserts each record
into table ``cdr``; how far it got (the file's inode and a byte offset) is kept in
``<path>.shipped``, replaced atomically after each committed batch. A row's primary key is
the record's ``call_id`` and rows go in with ``ON CONFLICT DO NOTHING``, so a crash between
the commit and the offset write ships those lines again and doubles none; an outage only
delays them (the file keeps growing, the offset stays). logrotate's rename is followed: the
old file is read to its end through the descriptor already open, then the new one from 0.

    spool (cdr.jsonl)  --Cursor.read-->  batch  --INSERT ... ON CONFLICT DO NOTHING-->  cdr
          ^                                                  |
          '----- <path>.shipped  <-- Cursor.commit ----------'   (after the COMMIT)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbc.cdr import rotated

# One row per call, money as numeric (the CDR's decimal strings, never floats); the attempts
# as JSONB; the whole record too, so nothing a later CDR field adds is lost before a column
# exists for it. An index on setup time for billing runs.
SCHEMA = """
CREATE TABLE IF NOT EXISTS cdr (
    call_id text PRIMARY KEY,
    sip_call_id text,
    relationship text,
    trunk_group text,
    source text,
    ani text,
    dnis text,
    setup_time timestamptz NOT NULL,
    answer_time timestamptz,
    end_time timestamptz,
    duration double precision,
    billable integer,
    disposition text,
    status integer,
    reason text,
    hangup text,
    egress_trunk_group text,
    egress_trunk text,
    rate_status text,
    revenue numeric,
    cost numeric,
    margin numeric,
    currency text,
    node text,
    attempts jsonb,
    record jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS cdr_setup_time ON cdr (setup_time);
"""

# One round trip per batch: the records go as one JSON array and PostgreSQL takes it apart.
INSERT = """
INSERT INTO cdr (call_id, sip_call_id, relationship, trunk_group, source, ani, dnis,
                 setup_time, answer_time, end_time, duration, billable, disposition, status,
                 reason, hangup, egress_trunk_group, egress_trunk, rate_status, revenue, cost,
                 margin, currency, node, attempts, record)
SELECT r->>'call_id', r->>'sip_call_id', r->>'relationship', r->>'trunk_group',
       r->>'source', r->>'ani', r->>'dnis', (r->>'setup_time')::timestamptz,
       (r->>'answer_time')::timestamptz, (r->>'end_time')::timestamptz,
       (r->>'duration')::double precision, (r->>'billable')::integer, r->>'disposition',
       (r->>'status')::integer, r->>'reason', r->>'hangup', r->>'egress_trunk_group',
       r->>'egress_trunk', r->>'rate_status', (r->>'revenue')::numeric,
       (r->>'cost')::numeric, (r->>'margin')::numeric, r->>'currency', r->>'node',
       r->'attempts', r
FROM jsonb_array_elements($1::jsonb) AS r
ON CONFLICT (call_id) DO NOTHING
"""


class Cursor:
    """Where the shipper is in the spool: reads whole lines past the committed offset and
    moves the offset only when told the batch is in the database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = Path(f"{path}.shipped")
        self.inode, self.offset = _load(self.state)
        self._fd: int | None = None
        self._pending = self.offset  # the offset once the batch read last is committed

    def read(self, limit: int = 500) -> list[dict[str, Any]]:
        """Up to ``limit`` records after the offset (a torn last line waits for its end;
        a line that is not a record is passed over)."""
        if not self._open():
            return []
        assert self._fd is not None
        chunk = os.pread(self._fd, 1 << 20, self.offset)  # records are a few KB each
        end = chunk.rfind(b"\n")
        if end < 0:
            if self._rotated():  # shipped to its end (a torn last line never ends): the
                self._close()  # new file holds the rest, from its start
                self.inode = self.offset = self._pending = 0
                self.commit()
            return []
        records: list[dict[str, Any]] = []
        pos = 0
        while pos <= end and len(records) < limit:
            nl = chunk.index(b"\n", pos)
            with contextlib.suppress(ValueError):
                rec = json.loads(chunk[pos:nl])
                if isinstance(rec, dict) and "call_id" in rec and "setup_time" in rec:
                    records.append(rec)
            pos = nl + 1
        self._pending = self.offset + pos
        return records

    def commit(self) -> None:
        """The batch read last is in the database: remember that, atomically."""
        self.offset = self._pending
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_text(f"{self.inode} {self.offset}\n")
        os.replace(tmp, self.state)

    @property
    def behind(self) -> int:
        """Bytes of the live file not shipped yet (0 when there is no file)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return 0
        return max(st.st_size - (self.offset if st.st_ino == self.inode else 0), 0)

    def _open(self) -> bool:
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False  # no record written yet
        inode = os.fstat(fd).st_ino
        if inode != self.inode and self.inode:  # rotated while we were down: finish that one
            for older in rotated(self.path):
                if older.stat().st_ino == self.inode:
                    os.close(fd)
                    fd = os.open(older, os.O_RDONLY | os.O_CLOEXEC)
                    inode = self.inode
                    break
        if inode != self.inode:  # a new file: from its start
            self.inode, self.offset, self._pending = inode, 0, 0
        self._fd = fd
        return True

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.inode
        except OSError:
            return False

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close()


def _load(state: Path) -> tuple[int, int]:
    try:
        inode, offset = state.read_text().split()
        return int(inode), int(offset)
    except (OSError, ValueError):
        return 0, 0


class Shipper:
    """The background task: ships the spool, survives database outages (logged once each
    way, retried with backoff), never touches the call path."""

    def __init__(self, path: Path, dsn: str, log: Any, poll: float = 0.2) -> None:
        self.cursor = Cursor(path)
        self.dsn = dsn
        self.log = log
        self.poll = poll
        self.shipped = 0  # rows inserted by this process
        self.down = False

    async def run(self) -> None:
        import asyncpg  # only a node that ships CDRs needs the driver loaded

        backoff = self.poll
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                try:
                    await conn.execute(SCHEMA)
                    if self.down:
                        self.log.info("cdr.database_up", behind_bytes=self.cursor.behind)
                    self.down, backoff = False, self.poll
                    await self._ship(conn)
                finally:
                    await conn.close(timeout=2)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                if not self.down:
                    self.log.warning("cdr.database_down", error=str(e) or type(e).__name__)
                self.down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _ship(self, conn: Any) -> None:
        import asyncpg

        while True:
            batch = self.cursor.read()
            if not batch:
                await asyncio.sleep(self.poll)
                continue
            try:
                self.shipped += await _insert(conn, batch)
            except asyncpg.DataError:
                # A record the table refuses (a value its column cannot hold) must not stop
                # every later one, nor pass for an outage: one by one, the refused ones
                # logged by call id. They stay in the file, which is the spool.
                for rec in batch:
                    try:
                        self.shipped += await _insert(conn, [rec])
                    except asyncpg.DataError as e:
                        self.log.error("cdr.ship_refused", call_id=rec.get("call_id"), error=str(e))
            self.cursor.commit()

    def close(self) -> None:
        self.cursor.close()


async def _insert(conn: Any, records: list[dict[str, Any]]) -> int:
    """Insert ``records``; how many were new (``INSERT 0 n``)."""
    status = await conn.execute(INSERT, json.dumps(records))
    return int(status.rsplit(" ", 1)[-1])


async def fetch(dsn: str, lo: float | None, hi: float | None) -> list[dict[str, Any]]:
    """``sbc cdr export --database``: the records whose setup time is in [lo, hi)."""
    import asyncpg

    def at(t: float | None) -> datetime | None:
        return datetime.fromtimestamp(t, UTC) if t is not None else None

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT record::text FROM cdr WHERE ($1::timestamptz IS NULL OR setup_time >= $1)"
            " AND ($2::timestamptz IS NULL OR setup_time < $2) ORDER BY setup_time, call_id",
            at(lo),
            at(hi),
        )
    finally:
        await conn.close()
    return [json.loads(r[0]) for r in rows]


class Shipping:
    """The shipper the node's config asks for: started, restarted when a reload changes
    the database or the spool, stopped when it names none."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.shipper: Shipper | None = None
        self._task: asyncio.Task[None] | None = None
        self._key = ("", "")

    def apply(self, path: str, dsn: str) -> None:
        if (path, dsn) == self._key:
            return
        self.stop()
        self._key = (path, dsn)
        if dsn:
            self.shipper = Shipper(Path(path), dsn, self.log)
            self._task = asyncio.get_running_loop().create_task(self.shipper.run())

    def status(self) -> dict[str, Any] | None:
        s = self.shipper
        if s is None:
            return None
        return {"shipped": s.shipped, "behind_bytes": s.cursor.behind, "database_up": not s.down}

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.shipper is not None:
            self.shipper.close()
            self.shipper = None
        self._key = ("", "")
