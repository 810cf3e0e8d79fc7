"""The audit log: what each configuration load changed (pure diff), and who saw it refused.

``changes(old, new)`` compares two validated configs section by section: list sections
(trunk groups, routeplans, media profiles, ...) by name, as added, removed and changed
(each changed field's path with its old and new value); ``node`` by field. Secrets never
reach the log: password and secret values are replaced by a marker saying whether they
changed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sbc.config.schema import LIST_SECTIONS, Config

SECRET_FIELDS = frozenset(("password", "secret"))
REDACTED = "<redacted>"


def _fields(old: Any, new: Any, path: str, out: dict[str, list[Any]]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            _fields(old.get(key), new.get(key), f"{path}.{key}" if path else str(key), out)
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _fields(a, b, f"{path}[{i}]", out)
        return
    leaf = path.rsplit(".", 1)[-1]
    if leaf in SECRET_FIELDS:
        out[path] = [REDACTED, REDACTED]
    else:
        out[path] = [old, new]


def _redact(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: REDACTED if k in SECRET_FIELDS else _redact(v) for k, v in item.items()}
    if isinstance(item, list):
        return [_redact(v) for v in item]
    return item


def changes(old: Config | None, new: Config) -> dict[str, Any]:
    """What ``new`` changes relative to ``old`` (None: the first load, everything added)."""
    a: dict[str, Any] = msgspec.to_builtins(old) if old is not None else {}
    b: dict[str, Any] = msgspec.to_builtins(new)
    out: dict[str, Any] = {}
    node: dict[str, list[Any]] = {}
    if old is not None:
        _fields(a.get("node", {}), b.get("node", {}), "", node)
        if node:
            out["node"] = {"changed": node}
    for section in LIST_SECTIONS:
        before = {x["name"]: x for x in a.get(section, [])}
        after = {x["name"]: x for x in b.get(section, [])}
        entry: dict[str, Any] = {}
        added = sorted(after.keys() - before.keys())
        removed = sorted(before.keys() - after.keys())
        if added:
            entry["added"] = added
        if removed:
            entry["removed"] = removed
        changed: dict[str, dict[str, list[Any]]] = {}
        for name in sorted(before.keys() & after.keys()):
            fields: dict[str, list[Any]] = {}
            _fields(before[name], after[name], "", fields)
            if fields:
                changed[name] = _redact(fields)
        if changed:
            entry["changed"] = changed
        if entry:
            out[section] = entry
    return out


def summary(diff: dict[str, Any]) -> str:
    """One line for STATUS= and humans: 'trunk_groups +1 ~2, routeplans -1'."""
    parts = []
    for section, entry in diff.items():
        marks = []
        for key, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
            if key in entry:
                marks.append(f"{sign}{len(entry[key])}")
        parts.append(f"{section} {' '.join(marks)}")
    return ", ".join(parts) or "no change"
