"""The CDR shipper's cursor over the spool file: whole lines only, the offset moved only on
commit, logrotate followed, a restart resumed where the last commit left it. Real files
in a temp dir; the database side is tests/e2e/test_cdr_database.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sbc.cdrship import Cursor


def line(n: int) -> bytes:
    return json.dumps({"call_id": f"c{n}", "setup_time": "2026-12-02T10:00:00.000Z"}).encode()


def append(path: Path, *data: bytes) -> None:
    with path.open("ab") as f:
        f.write(b"".join(data))


def ids(records: list[dict[str, object]]) -> list[object]:
    return [r["call_id"] for r in records]


def test_whole_lines_only_and_nothing_moves_without_a_commit(tmp_path: Path) -> None:
    spool = tmp_path / "cdr.jsonl"
    assert Cursor(spool).read() == []  # no file yet: nothing, no error
    append(spool, line(1) + b"\n", line(2) + b"\n", b"not json\n", line(3)[:10])
    cur = Cursor(spool)
    assert ids(cur.read()) == ["c1", "c2"]  # the bad line is passed over, the torn one waits
    assert ids(Cursor(spool).read()) == ["c1", "c2"]  # uncommitted: shipped again
    cur.commit()
    assert Cursor(spool).read() == []
    append(spool, line(3)[10:] + b"\n")
    again = Cursor(spool)
    assert ids(again.read()) == ["c3"]
    again.commit()
    assert again.behind == 0 and Cursor(spool).read() == []


def test_a_batch_is_at_most_limit_records(tmp_path: Path) -> None:
    spool = tmp_path / "cdr.jsonl"
    append(spool, *(line(n) + b"\n" for n in range(5)))
    cur = Cursor(spool)
    assert ids(cur.read(limit=2)) == ["c0", "c1"]
    cur.commit()
    assert ids(cur.read(limit=2)) == ["c2", "c3"]
    cur.commit()
    assert ids(cur.read(limit=2)) == ["c4"]


def test_logrotate_the_old_file_is_finished_then_the_new_one_from_its_start(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "cdr.jsonl"
    append(spool, line(1) + b"\n")
    cur = Cursor(spool)
    assert ids(cur.read()) == ["c1"]
    cur.commit()
    append(spool, line(2) + b"\n")  # written just before the rename
    os.rename(spool, tmp_path / "cdr.jsonl.1")
    append(spool, line(3) + b"\n")  # the writer's fresh file
    assert ids(cur.read()) == ["c2"]
    cur.commit()
    assert cur.read() == []  # the old file ended: switch
    assert ids(cur.read()) == ["c3"]
    cur.commit()
    assert Cursor(spool).read() == []


def test_a_restart_after_a_rotation_finishes_the_rotated_file_first(tmp_path: Path) -> None:
    spool = tmp_path / "cdr.jsonl"
    append(spool, line(1) + b"\n")
    cur = Cursor(spool)
    cur.read()
    cur.commit()
    cur.close()  # the node stops; meanwhile records and a rotation
    append(spool, line(2) + b"\n")
    os.rename(spool, tmp_path / "cdr.jsonl.1")
    append(spool, line(3) + b"\n")
    back = Cursor(spool)
    assert ids(back.read()) == ["c2"]
    back.commit()
    assert back.read() == []
    assert ids(back.read()) == ["c3"]
