"""The configuration contract: examples validate, the JSON Schema is the schema's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbc.config.loader import ConfigError, load_config
from sbc.config.schema import json_schema

ROOT = Path(__file__).resolve().parents[2]


def test_lab_and_contract_examples_are_valid() -> None:
    assert [tg.name for tg in load_config(ROOT / "config" / "lab").trunk_groups] == [
        "carrier-a",
        "vendor-pool",
    ]
    example = load_config(ROOT / "config" / "example")
    assert example.trunk_groups[0].limits.ports == 100


def test_committed_json_schema_matches_the_code() -> None:
    committed = json.loads((ROOT / "config" / "schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), (
        "run: sbc schema > config/schema.json"
    )


def test_every_field_is_described() -> None:
    schema = json_schema()
    for name, definition in schema["$defs"].items():  # type: ignore[union-attr]
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"


# Fields the call path would never act on are refused, naming file, line and field. The base
# is valid; each test puts one line into a trunk group (line 11: the origination one's last,
# line 16: the termination one's) or a media profile.
DEAD_BASE = """\
node:
  listen: [{address: 127.0.0.1, port: 5060, transport: udp}]
relationships: [{name: carrier-a}, {name: vendor-x}]
routeplans: [{name: default, routes: [{prefix: "", trunk_groups: [vendor-1]}]}]
trunk_groups:
  - name: carrier-a
    relationship: carrier-a
    direction: origination
    routeplan: default
    trunks: [{ip: 127.0.0.1}]
    ORIGINATION
  - name: vendor-1
    relationship: vendor-x
    direction: termination
    trunks: [{ip: 127.0.0.1, port: 5081}]
    TERMINATION
"""


def load(tmp_path: Path, origination: str = "", termination: str = "", extra: str = "") -> None:
    text = DEAD_BASE.replace("ORIGINATION", origination).replace("TERMINATION", termination)
    (tmp_path / "sbc.yaml").write_text(text + extra)
    load_config(tmp_path)


def refused(
    tmp_path: Path, origination: str = "", termination: str = "", extra: str = ""
) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, origination, termination, extra)
    assert e.value.file == str(tmp_path / "sbc.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'sbc.yaml'}:{e.value.line}: {e.value.field}: ")
    return e.value


def test_the_base_and_the_fields_where_they_act_load(tmp_path: Path) -> None:
    load(tmp_path)
    load(tmp_path, "relationship_type: customer", "relationship_type: vendor")
    load(
        tmp_path, "limits: {max_pdd: 20, max_call_duration: 60}", "limits: {b_timer: 2, max_pdd: 3}"
    )
    load(tmp_path, "route_advance: {codes: '^5'}", "limits: {max_call_duration: 30}")


def test_a_relationship_nobody_defined_is_refused(tmp_path: Path) -> None:
    e = refused(
        tmp_path, extra="  - {name: vendor-2, relationship: vendor-y, direction: termination}\n"
    )
    assert (e.line, e.field) == (17, "trunk_groups[2].relationship")
    assert "unknown relationship 'vendor-y'" in e.message and "carrier-a, vendor-x" in e.message


@pytest.mark.parametrize(
    ("origination", "termination", "line", "field", "wanted"),
    [
        ("relationship_type: vendor", "", 11, "trunk_groups[0].relationship_type", "'customer'"),
        ("", "relationship_type: customer", 16, "trunk_groups[1].relationship_type", "'vendor'"),
    ],
)
def test_a_relationship_type_that_disagrees_with_the_direction_is_refused(
    tmp_path: Path, origination: str, termination: str, line: int, field: str, wanted: str
) -> None:
    e = refused(tmp_path, origination, termination)
    assert (e.line, e.field) == (line, field)
    assert f"write {wanted} or leave it out" in e.message


def test_a_b_timer_on_an_origination_trunk_group_is_refused(tmp_path: Path) -> None:
    e = refused(tmp_path, "limits: {b_timer: 2}")
    assert (e.line, e.field) == (11, "trunk_groups[0].limits.b_timer")
    assert "termination trunk groups only" in e.message


@pytest.mark.parametrize("b_timer", [5, 6])
def test_a_b_timer_not_smaller_than_max_pdd_is_refused(tmp_path: Path, b_timer: int) -> None:
    e = refused(tmp_path, termination=f"limits: {{b_timer: {b_timer}, max_pdd: 5}}")
    assert (e.line, e.field) == (16, "trunk_groups[1].limits.b_timer")
    assert "must be smaller than max_pdd (5)" in e.message


def test_route_advance_on_a_termination_trunk_group_is_refused(tmp_path: Path) -> None:
    e = refused(tmp_path, termination="route_advance: {stop_on_18x_failure: true}")
    assert (e.line, e.field) == (16, "trunk_groups[1].route_advance")
    assert "origination trunk group" in e.message


def test_transcoding_without_an_allow_list_is_refused(tmp_path: Path) -> None:
    profiles = "media_profiles:\n  - {name: open, anchoring: false, transcoding: true}\n"
    e = refused(tmp_path, extra=profiles)
    assert (e.line, e.field) == (18, "media_profiles[0].transcoding")
    assert "needs codecs.allow" in e.message
    allowed = profiles.replace("transcoding: true", "transcoding: true, codecs: {allow: [PCMU]}")
    load(tmp_path, extra=allowed)
