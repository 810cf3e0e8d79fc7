"""The configuration contract: examples validate, the JSON Schema is the schema's own."""

from __future__ import annotations

import json
from pathlib import Path

from sbc.config.loader import load_config
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
