"""Operations, pure or on local files only: CDR records from the controller's ladders (fake
time), the CDR writer across rotation, the CSV export, statistics and metric triggers, the
audit diff, the Prometheus rendering, drain and shutdown ladders, sd_notify datagrams."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import socket
from pathlib import Path

import msgspec
import pytest

from sbc import audit, cdr
from sbc.alarms import Alarms
from sbc.config.loader import load_config
from sbc.config.schema import Config, MetricTrigger, TimeWindow
from sbc.metrics import Metrics, SbcCollector
from sbc.notify import Notifier, Signals
from sbc.sip.message import Request, Response, make_response
from sbc.stats import Stats
from tests.helpers import CALLER, V1, V2, Lab, invite, only, sample

WALL = (
    1_795_000_000.0  # 2026-11-18T11:06:40Z, a Wednesday: the controller's wall clock in these tests
)


def a_bye(a_tag: str) -> bytes:
    return (
        f"BYE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb2"
        f";rport\r\nFrom: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
        f"To: <sip:15551230000@127.0.0.1>;tag={a_tag}\r\nCall-ID: a-leg-1@10.1.1.1\r\n"
        f"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def hunted_call(lab: Lab, hold: float) -> None:
    """caller        sbc         vendor A     vendor B
    |--INVITE---->|--INVITE---->|            |      t=0
    |             |<-------503--|            |      t=0.2
    |             |--INVITE----------------->|      t=0.2
    |<------180---|<-----------------180-----|      t=0.5
    |<------200---|<-----------------200-----|      t=1.0
    |--BYE------->|--BYE-------------------->|      t=1.0+hold
    """
    lab.ctrl.wall_offset = WALL
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    lab.advance(0.2)
    out = lab.feed(make_response(b1, 503, to_tag="x"), t1)
    t2 = V2 if t1 == V1 else V1
    (b2,) = [m for m in only(out, t2) if isinstance(m, Request) and m.method == "INVITE"]
    assert isinstance(b2, Request)
    lab.advance(0.3)
    lab.feed(make_response(b2, 180, to_tag="y"), t2)
    lab.advance(0.5)
    ok = make_response(b2, 200, to_tag="y", headers=[("Contact", "<sip:v@127.0.0.1:5082>")])
    (a_ok,) = only(lab.feed(ok, t2), CALLER)
    assert isinstance(a_ok, Response) and a_ok.to.tag
    lab.advance(hold)
    out = lab.feed(a_bye(a_ok.to.tag), CALLER)
    (b_bye,) = only(out, t2)
    assert isinstance(b_bye, Request)
    lab.feed(make_response(b_bye, 200), t2)


def test_one_record_per_call_with_every_attempt_and_exact_times() -> None:
    lab = Lab()
    hunted_call(lab, hold=2.5)
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["disposition"] == "answered" and rec["status"] == 200
    assert rec["hangup"] == "caller" and rec["trunk_group"] == "carrier-a"
    assert rec["relationship"] == "carrier-a" and rec["source"] == "udp:127.0.0.1:5070"
    assert rec["ani"] == "15550001000" and rec["dnis"] == "15551230000"
    assert rec["dnis_routed"] == "15551230000"
    assert rec["setup_time"] == "2026-11-18T11:06:40.000Z"
    assert rec["provisional_time"] == "2026-11-18T11:06:40.500Z"
    assert rec["answer_time"] == "2026-11-18T11:06:41.000Z"
    assert rec["end_time"] == "2026-11-18T11:06:43.500Z"
    assert rec["pdd"] == 0.5 and rec["duration"] == 2.5 and rec["billable"] == 3
    assert [(a["n"], a["status"], a["outcome"]) for a in rec["attempts"]] == [
        (1, 503, "code"),
        (2, 200, "answered"),
    ]
    first, second = rec["attempts"]
    assert first["start"] == "2026-11-18T11:06:40.000Z"
    assert first["end"] == "2026-11-18T11:06:40.200Z"
    assert second["start"] == "2026-11-18T11:06:40.200Z"
    assert second["provisional"] == "2026-11-18T11:06:40.500Z"
    assert second["end"] == rec["end_time"]
    assert rec["egress_trunk"] == second["trunk"] and rec["egress_trunk_group"] == "vendor-pool"
    json.dumps(rec)  # a JSON line as it stands


@pytest.mark.parametrize(
    ("status", "disposition"), [(486, "busy"), (480, "no_answer"), (403, "failed")]
)
def test_a_failed_call_has_its_disposition_and_no_billable_time(
    status: int, disposition: str
) -> None:
    lab = Lab()
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    lab.feed(make_response(b1, status, to_tag="x"), t1)
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["disposition"] == disposition and rec["status"] == status
    assert rec["duration"] == 0.0 and rec["billable"] == 0 and rec["answer_time"] is None
    assert rec["hangup"] == "sbc" and len(rec["attempts"]) == 1


def test_an_invite_refused_at_admission_gets_a_refused_record() -> None:
    lab = Lab(status="disabled")
    out = lab.feed(invite(), CALLER)
    assert [m.status for m in only(out, CALLER)] == [403]  # type: ignore[union-attr]
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["disposition"] == "refused" and rec["status"] == 403
    assert rec["reason"] == "trunk_group_disabled" and rec["attempts"] == []
    assert rec["dnis"] == "15551230000" and rec["sip_call_id"] == "a-leg-1@10.1.1.1"


def test_a_cancelled_call_is_cancelled() -> None:
    lab = Lab()
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    lab.feed(make_response(b1, 180, to_tag="x"), t1)
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:").replace(b"1 INVITE", b"1 CANCEL")
    cancel = cancel.split(b"Content-Type")[0] + b"Content-Length: 0\r\n\r\n"
    out = lab.feed(cancel, CALLER)
    (b_cancel,) = only(out, t1)
    assert isinstance(b_cancel, Request) and b_cancel.method == "CANCEL"
    lab.feed(make_response(b_cancel, 200), t1)
    lab.feed(make_response(b1, 487, to_tag="x"), t1)
    (rec,) = lab.ctrl.pop_cdrs()
    assert rec["disposition"] == "cancelled" and rec["status"] == 487
    assert rec["hangup"] == "caller"


# --- the writer and the export -------------------------------------------------------------


def test_writer_recreates_a_deleted_file_instead_of_writing_into_the_void(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cdr" / "cdr.jsonl"  # the directory is created too
    w = cdr.JsonLines(path)
    w.write({"call_id": "1", "setup_time": "2026-11-22T10:00:00.000Z"})
    path.unlink()
    w.write({"call_id": "2", "setup_time": "2026-11-22T10:00:01.000Z"})
    w.close()
    assert [r["call_id"] for r in cdr.read([path])] == ["2"]
    assert w.written == 2


def test_writer_reopens_after_a_rename_so_the_second_line_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "cdr.jsonl"
    w = cdr.JsonLines(path)
    w.write({"call_id": "1", "setup_time": "2026-11-22T10:00:00.000Z"})
    path.rename(tmp_path / "cdr.jsonl.1")
    w.write({"call_id": "2", "setup_time": "2026-11-22T10:00:01.000Z"})
    w.close()
    everything = cdr.read(cdr.rotated(path))
    assert [r["call_id"] for r in everything] == ["1", "2"]


def test_csv_export_has_the_same_rows_as_the_jsonl() -> None:
    lab = Lab()
    hunted_call(lab, hold=1.0)
    rec = lab.ctrl.pop_cdrs()[0]
    refused = cdr.refused(
        call_id="z",
        sip_call_id="s",
        relationship="r",
        trunk_group="t",
        source="udp:1.2.3.4:5060",
        ani="a,b",  # a comma must survive
        dnis="d",
        at=WALL - 10,
        status=503,
        reason="ports",
    )
    records = cdr.select_records([rec, refused], None, None)
    rows = list(csv.DictReader(io.StringIO(cdr.to_csv(records))))
    assert [r["call_id"] for r in rows] == [refused["call_id"], rec["call_id"]]  # by setup
    assert rows[0]["ani"] == "a,b" and rows[0]["attempts"] == ""
    assert rows[1]["duration"] == "1.0" and rows[1]["billable"] == "1"
    assert rows[1]["attempts"].split("|")[0].endswith(":503:code")
    assert list(rows[0]) == list(cdr.COLUMNS)
    window = cdr.select_records([rec, refused], cdr.parse_time("2026-11-18T11:06:40Z"), None)
    assert [r["call_id"] for r in window] == [rec["call_id"]]


class Log:
    """Records what the runtime logs: (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def __getattr__(self, level: str) -> object:
        return lambda event, **fields: self.lines.append((level, event, fields))


def test_an_unwritable_cdr_file_keeps_the_records_in_order_until_it_is_writable(
    tmp_path: Path,
) -> None:
    from sbc.runtime import Runtime

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the CDR directory cannot be created under a file
    log = Log()
    runtime = Runtime("config/lab", log)
    runtime.cdrs.reopen(blocker / "cdr.jsonl")
    runtime.write_cdrs([{"call_id": "1"}, {"call_id": "2"}])
    runtime.write_cdrs([{"call_id": "3"}])
    failures = [f for level, event, f in log.lines if event == "cdr.write_failed"]
    assert [level for level, event, _ in log.lines if event == "cdr.write_failed"] == ["error"] * 2
    assert [f["pending"] for f in failures] == [2, 3]
    good = tmp_path / "cdr.jsonl"
    runtime.cdrs.reopen(good)
    runtime.write_cdrs([{"call_id": "4"}])
    runtime.cdrs.close()
    assert [json.loads(x)["call_id"] for x in good.read_text().splitlines()] == ["1", "2", "3", "4"]
    assert runtime.spool.backlog == []


def test_a_full_cdr_backlog_drops_the_oldest_and_says_which(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spool = cdr.Spool(cdr.JsonLines(blocker / "cdr.jsonl"), limit=2)
    errors = spool.write([{"call_id": "1"}, {"call_id": "2"}, {"call_id": "3"}])
    assert [e for e in errors if e[0] == "cdr.dropped"] == [
        ("cdr.dropped", {"records": 1, "call_ids": ["1"]})
    ]
    assert [r["call_id"] for r in spool.backlog] == ["2", "3"] and spool.dropped == 1


def test_the_runtime_logs_cdr_drops_and_counts_them(tmp_path: Path) -> None:
    from sbc.runtime import Runtime

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = Log()
    runtime = Runtime("config/lab", log)
    runtime.cdrs.reopen(blocker / "cdr.jsonl")
    runtime.spool.limit = 2
    runtime.write_cdrs([{"call_id": "1"}, {"call_id": "2"}, {"call_id": "3"}])
    dropped = [(level, f) for level, event, f in log.lines if event == "cdr.dropped"]
    assert dropped == [("error", {"records": 1, "call_ids": ["1"]})]
    gauges = {name: value for name, _, value in runtime.gauges()}
    assert gauges["sbc_cdr_dropped_total"] == 1 and gauges["sbc_cdr_backlog"] == 2


def test_export_says_where_it_looked_when_there_is_no_cdr_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sbc.cli import main

    monkeypatch.chdir(tmp_path)  # the lab config's cdr/cdr.jsonl, relative to here: absent
    config = Path(__file__).resolve().parents[2] / "config" / "lab"
    assert main(["cdr", "export", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"no CDR file at {tmp_path / 'cdr' / 'cdr.jsonl'}" in err


# --- statistics and metric triggers ----------------------------------------------------------


def trigger(**kw: object) -> MetricTrigger:
    base: dict[str, object] = {
        "name": "low-asr",
        "type": "asr",
        "condition": "less_than",
        "value": 50,
        "window": 60,
    }
    base.update(kw)
    return msgspec.convert(base, MetricTrigger)


def with_triggers(*triggers: MetricTrigger) -> Config:
    config = load_config("config/lab")
    tgs = list(config.trunk_groups)
    tgs[1] = msgspec.structs.replace(tgs[1], triggers=list(triggers))
    return msgspec.structs.replace(config, trunk_groups=tgs)


def test_asr_trigger_fires_once_and_recovers_once() -> None:
    config = with_triggers(trigger())
    stats, alarms = Stats(), Alarms()
    now = 1000.0
    for _ in range(60):  # a minute of 1 attempt/s, every other answered: ASR 50 %, not < 50
        stats.attempt("vendor-pool", "egress", "", now)
        if int(now) % 2:
            stats.completion("vendor-pool", "egress", "", 1.0, now)
        assert alarms.evaluate(config, stats, now, WALL) == []
        now += 1
    for _ in range(30):  # then nothing answers
        stats.attempt("vendor-pool", "egress", "", now)
        now += 1
    fired = [a for _ in range(3) for a in alarms.evaluate(config, stats, now, WALL)]
    assert [(a.firing, a.owner) for a in fired] == [(True, "vendor-pool")]  # once
    assert fired[0].value is not None and fired[0].value < 50
    for _ in range(60):  # all answered again
        stats.attempt("vendor-pool", "egress", "", now)
        stats.completion("vendor-pool", "egress", "", 1.0, now)
        now += 1
    recovered = [a for _ in range(3) for a in alarms.evaluate(config, stats, now, WALL)]
    assert [a.firing for a in recovered] == [False]
    assert recovered[0].payload(WALL)["event"] == "metric.recovered"


def test_a_trigger_waits_for_a_whole_window_and_respects_its_time_frame() -> None:
    quiet = trigger(name="quiet", type="attempts", condition="less_than", value=5, window=300)
    config = with_triggers(quiet)
    stats, alarms = Stats(), Alarms()
    assert alarms.evaluate(config, stats, 0.0, WALL) == []  # empty, but not whole yet
    assert alarms.evaluate(config, stats, 299.0, WALL) == []
    (alarm,) = alarms.evaluate(config, stats, 300.0, WALL)
    assert alarm.firing and alarm.value == 0
    # WALL is a Wednesday 11:06 UTC: a weekend-only frame makes it inactive, so it recovers
    weekend = msgspec.structs.replace(quiet, time_frame=[TimeWindow(days=["sat", "sun"])])
    (off,) = alarms.evaluate(with_triggers(weekend), stats, 301.0, WALL)
    assert not off.firing
    expired = msgspec.structs.replace(quiet, expires="2026-01-01")
    assert alarms.evaluate(with_triggers(expired), stats, 302.0, WALL) == []


def test_ports_and_cps_are_peaks_over_the_window() -> None:
    stats = Stats()
    for i in range(7):
        stats.attempt("t", "ingress", "cg", 10.2 + i * 0.1)
    stats.sample({("tg", "t"): 4, ("cg", "cg"): 9}, 11.0)
    stats.sample({("tg", "t"): 2}, 12.0)
    w = stats.window("tg", "t")
    assert w.value("cps", 12.0, 60) == 7 and w.value("ports", 12.0, 60) == 4
    assert stats.window("cg", "cg").value("ports", 12.0, 60) == 9
    assert stats.cps("tg", "t", 11.5) == 7 and stats.cps("tg", "t", 12.5) == 0


def test_controller_raises_a_trigger_with_a_webhook_and_a_notice() -> None:
    hook = trigger(
        name="no-answers",
        type="completions",
        condition="less_than",
        value=1,
        window=10,
        webhook="http://127.0.0.1:5499/alarm",
    )
    lab = Lab(with_triggers(hook))
    lab.ctrl.wall_offset = WALL
    lab.ctrl.start(lab.now)
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    lab.feed(make_response(b1, 486, to_tag="x"), t1)
    for _ in range(11):
        lab.advance(1.0)
    (notice,) = lab.events("metric.trigger")
    assert notice["trunk_group"] == "vendor-pool" and notice["value"] == 0
    firing = {"owner": "vendor-pool", "trigger": "no-answers"}
    assert sample(lab.scrape(), "sbc_metric_trigger_firing", **firing) == 1
    (post,) = lab.notified
    assert post.url == "http://127.0.0.1:5499/alarm"
    assert post.payload["event"] == "metric.trigger" and post.payload["trigger"] == "no-answers"


# --- audit ----------------------------------------------------------------------------------


def test_audit_names_what_a_reload_changed_and_hides_secrets() -> None:
    old = load_config("config/lab")
    tgs = list(old.trunk_groups)
    limits = msgspec.structs.replace(tgs[1].limits, ports=50)
    trunks = [msgspec.structs.replace(tgs[1].trunks[0], password="s3cret"), *tgs[1].trunks[1:]]
    tgs[1] = msgspec.structs.replace(tgs[1], limits=limits, trunks=trunks)
    new_tg = msgspec.structs.replace(tgs[1], name="vendor-2")
    new = msgspec.structs.replace(old, trunk_groups=[*tgs, new_tg], routeplans=[])
    diff = audit.changes(old, new)
    assert diff["trunk_groups"]["added"] == ["vendor-2"]
    assert diff["routeplans"]["removed"] == ["default"]
    changed = diff["trunk_groups"]["changed"]["vendor-pool"]
    assert changed["limits.ports"] == [0, 50]
    assert changed["trunks[0].password"] == [audit.REDACTED, audit.REDACTED]
    assert "s3cret" not in json.dumps(diff)
    assert audit.summary(diff) == "trunk_groups +1 ~1, routeplans -1"
    assert audit.changes(old, old) == {}


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_render_what_the_controller_counted() -> None:
    lab = Lab()
    hunted_call(lab, hold=2.0)
    lab.feed(invite(branch="z9hG4bKother").replace(b"a-leg-1", b"a-leg-2"), CALLER)
    m = Metrics(SbcCollector(lambda: lab.ctrl, lab.layer, lambda: lab.now, lambda: []))
    m.observe_rtpengine("offer", 0.002)
    m.observe_redis("acquire", 0.001)
    text = m.render().decode()
    assert sample(text, "sbc_attempts_total", trunk_group="carrier-a", side="ingress") == 2
    assert sample(text, "sbc_attempts_total", trunk_group="vendor-pool", side="egress") == 3
    assert sample(text, "sbc_completions_total", trunk_group="carrier-a", side="ingress") == 1
    assert sample(text, "sbc_answered_seconds_total", trunk_group="carrier-a") == 2.0
    assert sample(text, "sbc_pdd_seconds_bucket", trunk_group="carrier-a", le="0.5") == 1
    assert sample(text, "sbc_pdd_seconds_bucket", trunk_group="carrier-a", le="0.25") == 0
    assert sample(text, "sbc_ports_in_use", trunk_group="carrier-a") == 1  # the second call
    assert sample(text, "sbc_sip_messages_total", direction="in", method="INVITE", code="") == 2
    assert sample(text, "sbc_sip_messages_total", direction="in", method="INVITE", code="503") == 1
    assert sample(text, "sbc_sip_messages_total", direction="out", method="BYE", code="") == 1
    assert sample(text, "sbc_rtpengine_rtt_seconds_count", command="offer") == 1
    assert sample(text, "sbc_redis_rtt_seconds_count", operation="acquire") == 1
    assert sample(text, "sbc_calls") == 1
    assert sample(text, "sbc_asr_ratio", trunk_group="carrier-a") == 0.5  # 1 answered of 2
    assert sample(text, "sbc_aloc_seconds", trunk_group="carrier-a") == 2.0
    assert "sbc_cps" not in text  # a precomputed rate: rate() of sbc_attempts_total serves
    lab.ctrl.draining = True
    lab.feed(invite(branch="z9hG4bKthird").replace(b"a-leg-1", b"a-leg-3"), CALLER)
    text = m.render().decode()
    assert sample(text, "sbc_refusals_total", trunk_group="carrier-a", reason="draining") == 1


def test_the_runtime_gauges_follow_the_drain_and_the_cdr_file(tmp_path: Path) -> None:
    from sbc.runtime import Runtime

    runtime = Runtime("config/lab", Log())
    runtime.cdrs.reopen(tmp_path / "cdr.jsonl")
    gauges = {name: value for name, _, value in runtime.gauges()}
    assert gauges["sbc_draining"] == 0 and gauges["sbc_cdr_records_total"] == 0
    runtime.draining_since = 1.0  # what SIGTERM's drain() sets
    runtime.write_cdrs([{"call_id": "1"}])
    gauges = {name: value for name, _, value in runtime.gauges()}
    assert gauges["sbc_draining"] == 1 and gauges["sbc_cdr_records_total"] == 1
    runtime.cdrs.close()


# --- drain ------------------------------------------------------------------------------------


def test_draining_refuses_new_calls_with_retry_after_and_shutdown_byes_both_legs() -> None:
    """caller        sbc         vendor
    |--INVITE---->|--INVITE---->|       an answered call
    |<------200---|<-------200--|
       (SIGTERM: draining)
    |--INVITE---->|               a new call
    |<------503---|               Retry-After: 60
       (drain timeout: shutdown)
    |<------BYE---|--BYE------->|
    """
    lab = Lab()
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    ok = make_response(b1, 200, to_tag="y", headers=[("Contact", "<sip:v@127.0.0.1:5081>")])
    lab.feed(ok, t1)
    lab.ctrl.draining = True
    out = lab.feed(invite(branch="z9hG4bKnew").replace(b"a-leg-1", b"a-leg-2"), CALLER)
    (refusal,) = only(out, CALLER)
    assert isinstance(refusal, Response) and refusal.status == 503
    assert refusal.get("Retry-After") == "60"
    assert [m for m, t in out if t != CALLER] == []
    lab.ctrl.shutdown(lab.now)
    out = lab.run()
    byes = [(m, t) for m, t in out if isinstance(m, Request) and m.method == "BYE"]
    assert sorted(t.port for _, t in byes) == sorted([5070, t1.port])
    assert lab.ctrl.busy == 1
    for bye, target in byes:
        assert isinstance(bye, Request)
        lab.feed(make_response(bye, 200), target)
    assert lab.ctrl.busy == 0
    records = lab.ctrl.pop_cdrs()
    answered = [r for r in records if r["disposition"] == "answered"]
    assert answered[0]["hangup"] == "sbc" and answered[0]["reason"] == "shutdown"
    assert [r["reason"] for r in records if r["disposition"] == "refused"] == ["draining"]


def test_shutdown_fails_a_ringing_call_with_503_and_cancels_its_b_leg() -> None:
    """caller        sbc         vendor
    |--INVITE---->|--INVITE---->|
    |<------180---|<-------180--|
       (drain timeout: shutdown)
    |<------503---|--CANCEL---->|   Retry-After on the 503; the CDR says sbc, shutdown
    """
    lab = Lab()
    out = lab.feed(invite(), CALLER)
    ((b1, t1),) = [(m, t) for m, t in out if t != CALLER]
    assert isinstance(b1, Request)
    lab.feed(make_response(b1, 180, to_tag="v"), t1)
    lab.ctrl.shutdown(lab.now)
    out = lab.run()
    (final,) = only(out, CALLER)
    (cancel,) = only(out, t1)
    assert isinstance(final, Response) and final.status == 503
    assert final.get("Retry-After") == "60"
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    lab.feed(make_response(cancel, 200), t1)
    lab.feed(make_response(b1, 487, to_tag="v"), t1)
    (rec,) = lab.ctrl.pop_cdrs()
    assert (rec["disposition"], rec["hangup"], rec["reason"]) == ("failed", "sbc", "shutdown")
    assert lab.ctrl.busy == 0


# --- systemd notify ---------------------------------------------------------------------------


def test_notifier_speaks_sd_notify_and_is_silent_without_a_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(1)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier(path)
    assert n.watchdog == 1.0  # half of WatchdogSec
    n.ready("0 calls up")
    n.reloading()
    n.stopping()
    n.ping()
    got = [server.recv(4096).decode() for _ in range(4)]
    assert got[0] == "READY=1\nSTATUS=0 calls up"
    assert got[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert got[2:] == ["STOPPING=1", "WATCHDOG=1"]
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert Notifier(path).watchdog == 0
    Notifier("").ready()  # not under systemd: nothing, and no error


def test_a_sighup_while_starting_is_kept_for_when_the_node_has_started() -> None:
    """The sockets answer before start() returns; a SIGHUP then must not kill the process
    (CI saw a supervisor die of one sent right after its first OPTIONS answer)."""
    reloads: list[int] = []
    terms: list[int] = []

    async def main() -> None:
        signals = Signals(lambda: terms.append(1), lambda: reloads.append(1))
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(20):  # let the loop's signal wakeup run the handler
                await asyncio.sleep(0)
            assert reloads == []  # still starting: kept, not run
            signals.started()
            assert reloads == [1]
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(20):
                await asyncio.sleep(0)
        finally:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    assert reloads == [1, 1] and terms == [1]


def test_the_two_systemd_units_differ_only_in_the_instance() -> None:
    """sbc.service and sbc@.service are near-copies; hardening edited in one must not be
    missed in the other."""
    root = Path(__file__).resolve().parents[2] / "systemd"

    def body(name: str) -> list[str]:
        lines = (root / name).read_text().splitlines()
        return [x for x in lines if x and not x.startswith("#")]

    single, template = body("sbc.service"), body("sbc@.service")
    assert len(single) == len(template)
    differ = [(a, b) for a, b in zip(single, template, strict=True) if a != b]
    keys = {a.split("=", 1)[0] for a, _ in differ}
    assert keys == {"Description", "ExecStartPre", "ExecStart", "StateDirectory",
                    "WorkingDirectory"}, differ  # fmt: skip
    assert all(b == a.replace("/etc/sbc", "/etc/sbc/%i").replace("/var/lib/sbc", "/var/lib/sbc/%i")
               .replace("StateDirectory=sbc", "StateDirectory=sbc/%i")
               .replace("controller", "controller (%i)") for a, b in differ), differ  # fmt: skip
