"""The control socket's JSON-RPC 2.0 handling (sbc.control) and `sbc ctl`'s tables, with a
fake node: errors per JSON-RPC section 5.1, trunk names checked against the config, every
write audited with the caller's uid."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sbc import control, ctl
from sbc.config.loader import load_config
from sbc.reloads import Reloads

YAML = """
relationships: [{name: v}]
trunk_groups:
  - {name: pool, relationship: v, direction: termination,
     trunks: [{ip: 127.0.0.1, port: 5081}, {ip: 127.0.0.2}]}
"""


class FakeNode:
    def __init__(self, tmp: Path) -> None:
        (tmp / "sbc.yaml").write_text(YAML)
        self.cfg = load_config(tmp)
        self.reloads = Reloads(tmp, _Log(), str(tmp / "audit.jsonl"))
        self.asked: list[tuple[Any, ...]] = []
        self.oos: set[tuple[str, str]] = set()

    def config(self) -> Any:
        return self.cfg

    async def ask(self, what: tuple[Any, ...]) -> list[Any]:
        self.asked.append(what)
        if what[0] == "calls":
            return [[{"id": "a", "age": 1.0}], [{"id": "b", "age": 5.0}]]  # two workers
        if what[0] == "kill":
            return [False, what[1] == "b"]
        return [True, True]

    def reload(self) -> None:
        self.reloads.record("config.reloaded", changes={})

    def out_of_service(self, oos: set[tuple[str, str]]) -> None:
        self.oos = set(oos)

    def bindings(self) -> list[Any]:
        return []


class _Log:
    def info(self, *a: Any, **k: Any) -> None:
        pass

    error = info


def rpc(c: control.Control, method: str, **params: Any) -> dict[str, Any]:
    line = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    return asyncio.run(c.handle(line.encode(), 1000))


def test_errors_are_json_rpc_errors(tmp_path: Path) -> None:
    c = control.Control(FakeNode(tmp_path), str(tmp_path / "s"), _Log())
    assert asyncio.run(c.handle(b"{nope", 0))["error"]["code"] == -32700
    assert asyncio.run(c.handle(b'{"id": 1, "method": "calls"}', 0))["error"]["code"] == -32600
    assert rpc(c, "frobnicate")["error"]["code"] == -32601
    assert rpc(c, "kill")["error"]["code"] == -32602
    assert rpc(c, "trunk", action="disable", trunk_group="nope")["error"] == {
        "code": -32602,
        "message": "unknown trunk group 'nope'",
    }
    err = rpc(c, "trunk", action="disable", trunk_group="pool", trunk="1.2.3.4:5")["error"]
    assert "127.0.0.1:5081" in err["message"] and "127.0.0.2:5060" in err["message"]


def test_calls_merge_workers_oldest_first_and_kill_finds_its_worker(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    c = control.Control(node, str(tmp_path / "s"), _Log())
    reply = rpc(c, "calls")
    assert reply["id"] == 7 and [x["id"] for x in reply["result"]] == ["b", "a"]
    assert rpc(c, "kill", id="b")["result"] == {"id": "b", "killed": True}
    assert rpc(c, "kill", id="zz")["result"]["killed"] is False
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(a["event"], a["call_id"], a["uid"]) for a in audit] == [
        ("call.killed", "b", 1000),
        ("call.kill_missed", "zz", 1000),
    ]


def test_trunk_disable_enable_is_held_audited_and_told_to_workers(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    c = control.Control(node, str(tmp_path / "s"), _Log())
    r = rpc(c, "trunk", action="disable", trunk_group="pool", trunk="udp:127.0.0.2:5060")
    assert r["result"]["out_of_service"] == [["pool", "127.0.0.2:5060"]]
    assert node.oos == {("pool", "127.0.0.2:5060")}
    assert node.asked[-1] == ("oos", [("pool", "127.0.0.2:5060")])
    assert r["result"]["audit"]["event"] == "trunk.disabled" and r["result"]["audit"]["uid"] == 1000
    rpc(c, "trunk", action="enable", trunk_group="pool", trunk="127.0.0.2:5060")
    assert node.oos == set()
    reload = rpc(c, "reload")["result"]
    assert reload["event"] == "config.reloaded" and reload["uid"] == 1000
    assert node.reloads.actor == {}  # a SIGHUP later is nobody's


def test_ctl_tables() -> None:
    calls = [{"id": "c1", "ingress": "in", "egress": None, "ani": "1", "dnis": "2",
              "state": "routing", "age": 0.5}]  # fmt: skip
    lines = ctl.render("calls", calls)
    assert lines[0].split() == ["id", "ingress", "egress", "ani", "dnis", "state", "age"]
    assert lines[1].split() == ["c1", "in", "1", "2", "routing", "0.5"]
    assert lines[-1] == "1 calls"
    assert ctl.render("kill", {"id": "x", "killed": False}) == ["call x: no such call"]
    assert ctl.render("trunk", {"out_of_service": [["pool", ""]]}) == [
        "out of service: pool (all trunks)"
    ]


def test_socket_is_0600_and_a_live_one_is_not_taken_over(tmp_path: Path) -> None:
    import stat

    errors: list[dict[str, Any]] = []

    class Log(_Log):
        def error(self, *a: Any, **k: Any) -> None:
            errors.append(k)

    async def run() -> None:
        path = tmp_path / "run" / "c.sock"
        first = control.Control(FakeNode(tmp_path), str(path), Log())
        await first.start()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        second = control.Control(FakeNode(tmp_path), str(path), Log())
        await second.start()  # another node's, alive: logged, the node serves on without
        assert second.server is None and "in use" in errors[0]["error"]
        assert first.server is not None
        first.server.close()
        await first.server.wait_closed()  # dead, its file left behind: stale, taken over
        third = control.Control(FakeNode(tmp_path), str(path), Log())
        await third.start()
        assert third.server is not None
        third.close()
        assert not path.exists()

    asyncio.run(run())
