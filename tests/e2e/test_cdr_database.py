"""CDRs into a real PostgreSQL (Debian's, started by the test on a UNIX socket): the file
is the spool, the shipper follows it into table ``cdr``, an outage only delays rows, and
neither an outage nor a restart of sbc loses one or doubles one.

    uac 6802 --> sbc :6800 (2 workers, or 1) --> uas 6801
                   |  each call's record: cdr/cdr.jsonl (one write(2) per record)
                   '--> shipper (supervisor) --INSERT ... ON CONFLICT DO NOTHING--> cdr
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import postgres
import pytest

pytestmark = pytest.mark.e2e

PORT = 6800
CONFIG = """
node:
  workers: WORKERS
  listen: [{address: 127.0.0.1, port: 6800, transport: udp}]
  cdr: {path: cdr/cdr.jsonl, database: "DSN"}
relationships: [{name: carrier-a}, {name: vendor-x}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: r,
     trunks: [{ip: 127.0.0.1}]}
  - {name: vendor, relationship: vendor-x, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 6801}]}
routeplans:
  - name: r
    routes: [{prefix: "", trunk_groups: [vendor]}]
"""


@pytest.fixture
def pg() -> Iterator[postgres.Postgres]:
    db = postgres.Postgres().start()
    try:
        yield db
    finally:
        db.remove()


def calls(n: int, workdir: Path) -> None:
    result = harness.run_sipp(
        "uac", calls=n, rate=50, port=6802, workdir=workdir, remote=f"127.0.0.1:{PORT}",
        extra=["-s", "15551230000", "-d", "100"], timeout=60,
    )  # fmt: skip
    assert result.count("SuccessfulCall") == n, result.output


def rows(db: postgres.Postgres, want: int, timeout: float = 15.0) -> int:
    """Rows in table cdr once there are ``want`` (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        try:
            got = int(db.query("SELECT count(*) FROM cdr"))
        except (RuntimeError, ValueError):  # the table is made by the shipper's first connect
            got = -1
        if got >= want:
            break
        time.sleep(0.1)
    return got


def file_ids(workdir: Path, want: int = 0, timeout: float = 5.0) -> list[str]:
    """The CDR file's call ids, once there are ``want`` (a call's record follows its BYE's
    200 by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        text = (workdir / "cdr" / "cdr.jsonl").read_text()
        ids = [json.loads(line)["call_id"] for line in text.splitlines()]
        if len(ids) >= want or time.monotonic() > deadline:
            return ids
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [2, 1])  # the supervisor ships, or the lone process
def test_every_record_lands_once_through_an_outage_and_a_restart(
    pg: postgres.Postgres, tmp_path: Path, workers: int
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    text = CONFIG.replace("DSN", pg.dsn).replace("WORKERS", str(workers))
    (config / "sbc.yaml").write_text(text)
    run = tmp_path / "run"
    with harness.sipp_servers("uas", [6801], tmp_path / "uas"):
        sbc = harness.start_sbc(run, config, port=PORT)
        try:
            calls(100, tmp_path / "uac1")
            assert rows(pg, 100) == 100

            pg.stop()  # an outage: the records wait in the file
            calls(20, tmp_path / "uac2")
            assert len(file_ids(run, 120)) == 120
            assert len(sbc.wait_events("cdr.database_down", 1)) == 1
            pg.start()
            assert rows(pg, 120) == 120
            assert len(sbc.wait_events("cdr.database_up", 1)) == 1
        finally:
            assert sbc.stop() == 0

        # A restart ships nothing twice: it resumes at <path>.shipped
        sbc = harness.start_sbc(run, config, port=PORT)
        try:
            calls(5, tmp_path / "uac3")
            assert rows(pg, 125) == 125
        finally:
            assert sbc.stop() == 0
    assert rows(pg, 126, timeout=1) == 125  # and never more
    ids = file_ids(run, 125)
    assert len(ids) == 125 == len(set(ids))
    in_db = pg.query("SELECT call_id FROM cdr ORDER BY call_id").splitlines()
    assert in_db == sorted(ids)
    answered = pg.query(
        "SELECT count(*) FROM cdr WHERE disposition = 'answered' AND status = 200"
        " AND jsonb_array_length(attempts) = 1 AND egress_trunk_group = 'vendor'"
    )
    assert answered == "125"

    # `sbc cdr export --database` gives what the file gives
    def export(*source: str) -> list[dict[str, str]]:
        out = subprocess.run(
            [sys.executable, "-m", "sbc.cli", "cdr", "export", *source],
            capture_output=True, text=True, timeout=30, check=True, cwd=run,
        ).stdout  # fmt: skip
        return sorted(csv.DictReader(io.StringIO(out)), key=lambda r: r["call_id"])

    from_db = export("--database", pg.dsn)
    assert len(from_db) == 125 and from_db == export("--file", "cdr/cdr.jsonl")


def test_a_record_the_table_refuses_is_logged_and_the_rest_ship(
    pg: postgres.Postgres, tmp_path: Path
) -> None:
    """A value a column cannot hold (a status that is no integer) is one refused record, by
    call id, not an outage that holds up every record after it."""
    import asyncio

    from sbc.cdrship import Shipper

    spool = tmp_path / "cdr.jsonl"
    recs = [
        {"call_id": "ok-1", "setup_time": "2026-12-02T10:00:00.000Z", "status": 200},
        {"call_id": "bad-1", "setup_time": "2026-12-02T10:00:01.000Z", "status": "two hundred"},
        {"call_id": "ok-2", "setup_time": "2026-12-02T10:00:02.000Z", "status": 486},
    ]
    spool.write_text("".join(json.dumps(r) + "\n" for r in recs))

    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict[str, object]]] = []

        def error(self, event: str, **fields: object) -> None:
            self.lines.append((event, fields))

        warning = info = error

    log = Log()

    async def ship() -> None:
        shipper = Shipper(spool, pg.dsn, log, poll=0.05)
        task = asyncio.create_task(shipper.run())
        deadline = time.monotonic() + 10
        while shipper.cursor.behind and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        shipper.close()

    asyncio.run(ship())
    assert pg.query("SELECT call_id FROM cdr ORDER BY call_id").splitlines() == ["ok-1", "ok-2"]
    assert [(e, f["call_id"]) for e, f in log.lines] == [("cdr.ship_refused", "bad-1")]
    assert (tmp_path / "cdr.jsonl.shipped").read_text().split()[1] == str(spool.stat().st_size)
