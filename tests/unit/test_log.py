"""The log lines as journald and a terminal see them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from sbc import log as logmod


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_json_lines_carry_the_journal_priority_only_on_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    with path.open("w") as out:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        log = logmod.setup("debug", out=out)
        log.error("cdr.write_failed", path=Path("/x"))
        log.warning("cdr.database_down")
        log.info("call.end", call_id="c1")
        log.debug("sip.in")
    got = lines(path)
    assert [g[:3] for g in got] == [b"<3>", b"<4>", b"<6>", b"<7>"]
    first = json.loads(got[0][3:])  # the JSON stays whole after the prefix
    assert first["event"] == "cdr.write_failed" and first["path"] == "/x"
    assert first["level"] == "error" and first["timestamp"].endswith("Z")

    other = tmp_path / "file"  # stdout redirected elsewhere: no prefix, plain JSON
    with other.open("w") as out:
        logmod.setup("info", out=out).warning("x", n=1)
    (line,) = lines(other)
    rec = json.loads(line)
    assert line.startswith(b"{") and (rec["event"], rec["n"], rec["level"]) == ("x", 1, "warning")


def test_console_format_is_for_people(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    path = tmp_path / "console"
    with path.open("w") as out:
        logmod.setup("info", "console", out=out).info("sbc.started", workers=2)
    (line,) = path.read_text().splitlines()
    assert "sbc.started" in line and "workers=2" in line and not line.startswith("{")
    assert "\x1b[" not in line  # no colours into a file
