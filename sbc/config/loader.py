"""Load a config directory: every *.yaml, merged, validated, with errors that name file,
line and field.

YAML is composed with PyYAML's C loader so every value keeps its position; the merged data
is converted into the frozen schema types by msgspec (unknown keys and wrong types are
errors), then cross-checked (names, references, regexes, addresses, ambiguous trunks).
Nothing is half-applied: the caller gets a whole ``Config`` or a ``ConfigError``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from routing.ratedeck import DeckError
from sbc import tlsctx
from sbc.config import decks, families
from sbc.config.schema import (
    LIST_SECTIONS,
    Config,
    MetricTrigger,
    MetricType,
    Node,
    TimeWindow,
)

Path_ = tuple[str | int, ...]


@dataclass
class ConfigError(Exception):
    """A configuration problem, located as precisely as we can."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


@dataclass
class _Origin:
    file: str
    node: yaml.Node
    index: int | None = None  # the item's position within its own file's list


def _field_name(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


class _Located:
    """Maps a path in the merged data back to the file and line it came from."""

    def __init__(self) -> None:
        self.origins: dict[Path_, _Origin] = {}

    def locate(self, path: Path_) -> tuple[str, int]:
        for cut in range(len(path), 0, -1):
            origin = self.origins.get(path[:cut])
            if origin is not None:
                node = origin.node
                line = node.start_mark.line + 1
                for step in path[cut:]:
                    found = _child(node, step)
                    if found is None:
                        break
                    key_line, node = found
                    line = key_line
                return origin.file, line
        return "", 0

    def written(self, path: Path_) -> bool:
        """Does a file write the key at ``path`` (a list section's item and keys below it),
        rather than leave it to its default?"""
        origin = self.origins.get(path[:2])
        if origin is None:
            return False
        node = origin.node
        for step in path[2:]:
            found = _child(node, step)
            if found is None:
                return False
            node = found[1]
        return True

    def error(self, path: Path_, message: str) -> ConfigError:
        """An error at ``path``, with list items numbered as they are in their own file."""
        file, line = self.locate(path)
        shown = list(path)
        origin = self.origins.get(path[:2])
        if origin is not None and origin.index is not None:
            shown[1] = origin.index
        return ConfigError(file, line, _field_name(tuple(shown)), message)


def _child(node: yaml.Node, step: str | int) -> tuple[int, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode) and isinstance(step, str):
        for k, v in node.value:
            if k.value == step:
                return k.start_mark.line + 1, v
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        item = node.value[step]
        return item.start_mark.line + 1, item
    return None


def _check_duplicate_keys(node: yaml.Node, file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            if k.value in seen:
                raise ConfigError(file, k.start_mark.line + 1, str(k.value), "duplicate key")
            seen.add(k.value)
            _check_duplicate_keys(v, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, file)


def load_config(directory: str | Path) -> Config:
    config, _ = load_config_with_origins(directory)
    return config


def load_config_with_origins(directory: str | Path) -> tuple[Config, _Located]:
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(str(root), 0, "", "not a directory")
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    if not files:
        raise ConfigError(str(root), 0, "", "no *.yaml files")
    located = _Located()
    merged: dict[str, Any] = {}
    for path in files:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(name, 0, "", f"cannot read: {e}") from None
        loader = yaml.CSafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                continue
            _check_duplicate_keys(node, name)
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 0
            raise ConfigError(name, line, "", f"YAML syntax: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
            raise ConfigError(name, 0, "", f"YAML: {e}") from None
        finally:
            loader.dispose()
        if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
            raise ConfigError(name, 1, "", "the file must be a mapping of sections")
        for key_node, value_node in node.value:
            key = key_node.value
            value = data[key]
            line = key_node.start_mark.line + 1
            if key in LIST_SECTIONS:
                if value is None:
                    continue
                if not isinstance(value, list):
                    raise ConfigError(name, line, key, "must be a list")
                items = merged.setdefault(key, [])
                for i, item_node in enumerate(value_node.value):
                    located.origins[(key, len(items) + i)] = _Origin(name, item_node, i)
                items.extend(value)
            elif key == "node":
                if "node" in merged:
                    where = located.origins[("node",)].file
                    raise ConfigError(name, line, key, f"node is already defined in {where}")
                merged["node"] = value
                located.origins[("node",)] = _Origin(name, value_node)
            else:
                raise ConfigError(name, line, str(key), f"unknown section {key!r}")
    try:
        config = msgspec.convert(merged, Config, strict=True)
    except msgspec.ValidationError as e:
        raise _from_validation_error(str(e), located) from None
    config = families.canonical(config)  # IPv6 spelled as sockets spell it
    _cross_check(config, located)
    try:
        config = decks.check(config, root, located)
        config = tlsctx.check(config, root, located)
    except DeckError as e:
        raise ConfigError(e.file, e.line, e.column, e.message) from None
    return config, located


def _from_validation_error(message: str, located: _Located) -> ConfigError:
    text, _, at = message.partition(" - at `")
    path: list[str | int] = []
    for m in re.finditer(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", at.rstrip("`")):
        path.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    if unknown:
        path.append(unknown.group(1))
        text = "unknown field"
    return located.error(tuple(path), text)


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?\.?$",
    re.I,
)


def _dns_trunk(host: str, ip: str, direction: str, located: _Located, tp: Path_) -> None:
    """A trunk named by host (RFC 3263): a vendor's (ingress is identified by IP only),
    a domain name, not beside an ip."""
    if direction != "termination":
        raise located.error(
            (*tp, "host"), "only termination trunks may name a host (ingress is matched by ip)"
        )
    if ip:
        raise located.error((*tp, "host"), "give ip or host, not both")
    if _ip(host) or not _HOSTNAME.match(host):
        raise located.error((*tp, "host"), "must be a domain name (an address goes in ip)")


def host_port(value: str) -> tuple[str, int] | None:
    """'127.0.0.1:2223' or '[::1]:2223' as (host, port); None when it is neither."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not _ip(host):
        return None
    return host, int(port)


def _regex(value: str, located: _Located, path: Path_) -> None:
    try:
        re.compile(value)
    except re.error as e:
        raise located.error(path, f"bad regular expression: {e}") from None


def _date(value: str, located: _Located, path: Path_) -> None:
    if not value:
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise located.error(path, f"not an ISO date or date-time: {value!r}") from None


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
METRIC_TYPES = frozenset(get_args(MetricType))
CAPACITY_METRICS = frozenset(("ports", "cps"))  # the guide's capacity group trigger types


def _windows(windows: list[TimeWindow], located: _Located, path: Path_) -> None:
    for j, w in enumerate(windows):
        for key in ("start", "end"):
            if not _HHMM.match(getattr(w, key)):
                raise located.error((*path, j, key), "must be HH:MM")
        try:
            ZoneInfo(w.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise located.error(
                (*path, j, "timezone"), f"unknown time zone {w.timezone!r}"
            ) from None


def _metric_triggers(
    triggers: list[MetricTrigger], located: _Located, owner: Path_, types: frozenset[str]
) -> None:
    seen: set[str] = set()
    for j, t in enumerate(triggers):
        p: Path_ = (*owner, "triggers", j)
        if t.name in seen:
            raise located.error((*p, "name"), f"duplicate trigger name {t.name!r}")
        seen.add(t.name)
        if t.type not in types:
            raise located.error(
                (*p, "type"), f"a capacity group trigger is one of {', '.join(sorted(types))}"
            )
        _windows(t.time_frame, located, (*p, "time_frame"))
        _date(t.expires, located, (*p, "expires"))
        if t.webhook and not t.webhook.startswith("http://"):
            raise located.error((*p, "webhook"), "only http:// webhooks are supported")


def _cross_check(config: Config, located: _Located) -> None:
    for section in LIST_SECTIONS:
        seen: dict[str, int] = {}
        for i, item in enumerate(getattr(config, section)):
            if item.name in seen:
                raise located.error(
                    (section, i, "name"),
                    f"duplicate name {item.name!r} (also item {seen[item.name]})",
                )
            seen[item.name] = i
    _check_node(config.node, located)
    families.check(config, located)  # dual stack: an address to tell each family
    for i, cg in enumerate(config.capacity_groups):
        _metric_triggers(cg.triggers, located, ("capacity_groups", i), CAPACITY_METRICS)
    _check_trunk_groups(config, located)
    _check_meaning(config, located)
    _check_routeplans(config, located)


def _check_node(node: Node, located: _Located) -> None:
    if not _ip(node.switch_ip):
        raise located.error(("node", "switch_ip"), "must be an IP address")
    for i, listen in enumerate(node.listen):
        if not _ip(listen.address):
            raise located.error(("node", "listen", i, "address"), "must be an IP address")
    if not node.listen:
        raise located.error(("node", "listen"), "needs at least one socket")
    for i, net in enumerate(node.flood.exempt):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise located.error(("node", "flood", "exempt", i), "must be an IP or a CIDR") from None
    for i, server in enumerate(node.dns.servers):
        if host_port(server) is None:
            raise located.error(("node", "dns", "servers", i), "must be IP:PORT (IPv6: [IP]:PORT)")
    for i, rtp in enumerate(node.rtpengine):
        if host_port(rtp.address) is None:
            raise located.error(
                ("node", "rtpengine", i, "address"), "must be IP:PORT (IPv6: [IP]:PORT)"
            )
    if node.state.backend == "redis" and not node.state.url.startswith(("redis://", "unix://")):
        raise located.error(("node", "state", "url"), "the redis backend needs a redis:// URL")
    for section in ("metrics", "admin"):
        listen = getattr(node, section).listen
        if listen and host_port(listen) is None:
            raise located.error(("node", section, "listen"), "must be IP:PORT (IPv6: [IP]:PORT)")
    if node.hep.address and host_port(node.hep.address) is None:
        raise located.error(("node", "hep", "address"), "must be IP:PORT (IPv6: [IP]:PORT)")
    if node.worker_port:  # worker i binds worker_port + i beside the listeners
        count = node.workers or (os.cpu_count() or 1)
        taken = {x.port for x in node.listen if x.transport == "udp"}
        if taken & set(range(node.worker_port, node.worker_port + count)):
            raise located.error(
                ("node", "worker_port"),
                f"worker_port..worker_port+{count - 1} (one per worker) overlaps a UDP listen port",
            )


def _check_trunk_groups(config: Config, located: _Located) -> None:
    """References, regexes, and that no two trunk groups claim the same source or account."""
    node = config.node
    plans = {rp.name for rp in config.routeplans}
    caps = {cg.name for cg in config.capacity_groups}
    profiles = {mp.name: mp for mp in config.media_profiles}
    claims: dict[tuple[str, str, int, str], str] = {}
    accounts: dict[str, str] = {}
    for i, tg in enumerate(config.trunk_groups):
        p: Path_ = ("trunk_groups", i)
        if tg.capacity_group and tg.capacity_group not in caps:
            raise located.error(
                (*p, "capacity_group"), f"unknown capacity group {tg.capacity_group!r}"
            )
        if tg.routeplan and tg.routeplan not in plans:
            raise located.error((*p, "routeplan"), f"unknown routeplan {tg.routeplan!r}")
        if tg.direction == "origination" and not tg.routeplan:
            raise located.error((*p, "routeplan"), "an origination trunk group needs a routeplan")
        if tg.ani_from_pai and not tg.trusted:  # RFC 3325 §5: an untrusted PAI asserts nothing
            raise located.error((*p, "ani_from_pai"), "needs trusted: true")
        if tg.media_profile and tg.media_profile not in profiles:
            raise located.error(
                (*p, "media_profile"), f"unknown media profile {tg.media_profile!r}"
            )
        if tg.media_profile and profiles[tg.media_profile].anchoring and not node.rtpengine:
            raise located.error(
                (*p, "media_profile"),
                f"media profile {tg.media_profile!r} anchors media but node.rtpengine is empty",
            )
        _regex(tg.route_advance.codes, located, (*p, "route_advance", "codes"))
        for j, m in enumerate(tg.manipulations):
            _regex(m.search, located, (*p, "manipulations", j, "search"))
            if m.field == "header" and not m.header:
                raise located.error(
                    (*p, "manipulations", j, "header"), "needed when field is header"
                )
        _windows(tg.time_of_day, located, (*p, "time_of_day"))
        _metric_triggers(tg.triggers, located, p, METRIC_TYPES)
        for j, t in enumerate(tg.trunks):
            tp: Path_ = (*p, "trunks", j)
            if t.type == "ip" and t.host:
                _dns_trunk(t.host, t.ip, tg.direction, located, tp)
            elif t.type == "ip":
                if not _ip(t.ip):
                    raise located.error((*tp, "ip"), "must be an IP address")
                if tg.direction == "origination":
                    claim = (t.protocol, t.ip, t.port, tg.tech_prefix)
                    other = claims.get(claim)
                    if other is not None:
                        raise located.error(
                            (*tp, "ip"),
                            f"trunk groups {other!r} and {tg.name!r} both claim {t.protocol} "
                            f"{t.ip}:{t.port or 'any'} with tech prefix {tg.tech_prefix!r}; "
                            "a tech prefix must tell them apart",
                        )
                    claims[claim] = tg.name
            elif not (t.username and t.password):
                raise located.error(
                    (*tp, "username"), "a registration trunk needs username and password"
                )
            elif tg.direction == "termination" and not _ip(t.ip):
                raise located.error(
                    (*tp, "ip"), "a termination registration trunk needs the registrar's IP"
                )
            elif tg.direction == "origination":
                other = accounts.get(t.username)
                if other is not None:
                    raise located.error(
                        (*tp, "username"),
                        f"username {t.username!r} is already a registration trunk of {other!r}",
                    )
                accounts[t.username] = tg.name


# What a relationship type means here: who sends the calls decides everything the call path
# does with a trunk group (routeplan, limits, hunting), so the type can only agree with it.
RELATIONSHIP_TYPE = {"origination": "customer", "termination": "vendor"}


def _check_meaning(config: Config, located: _Located) -> None:
    """Fields the schema accepts but the call path would never act on, refused rather than
    ignored: each message says where the field does take effect."""
    relationships = {r.name for r in config.relationships}
    for i, tg in enumerate(config.trunk_groups):
        p: Path_ = ("trunk_groups", i)
        if tg.relationship and tg.relationship not in relationships:
            known = ", ".join(sorted(relationships)) or "none"
            raise located.error(
                (*p, "relationship"),
                f"unknown relationship {tg.relationship!r} (relationships defines: {known})",
            )
        wanted = RELATIONSHIP_TYPE[tg.direction]
        if located.written((*p, "relationship_type")) and tg.relationship_type != wanted:
            raise located.error(
                (*p, "relationship_type"),
                f"{tg.relationship_type!r} on a {tg.direction} trunk group: here an origination "
                "trunk group is a customer's and a termination one a vendor's (direction "
                f"decides how calls are handled); write {wanted!r} or leave it out",
            )
        limits = tg.limits
        if tg.direction == "origination" and limits.b_timer:
            raise located.error(
                (*p, "limits", "b_timer"),
                "the B-timer waits for a vendor's 100 Trying to an INVITE we send: it takes "
                "effect on termination trunk groups only",
            )
        if limits.b_timer and limits.max_pdd and limits.b_timer >= limits.max_pdd:
            raise located.error(
                (*p, "limits", "b_timer"),
                f"must be smaller than max_pdd ({limits.max_pdd}): a B-timer of "
                f"{limits.b_timer} s could never fire before Max PDD",
            )
        if tg.direction == "termination" and located.written((*p, "route_advance")):
            raise located.error(
                (*p, "route_advance"),
                "route advance is the caller's policy: it takes effect on the origination "
                "trunk group a call comes in on, over every vendor's answer; here it would "
                "never be read",
            )
    for i, mp in enumerate(config.media_profiles):
        if mp.transcoding and not mp.codecs.allow:
            raise located.error(
                ("media_profiles", i, "transcoding"),
                "needs codecs.allow on this profile: transcoding offers the allowed codecs "
                "an offer lacks, and this profile allows every codec",
            )


def _check_routeplans(config: Config, located: _Located) -> None:
    tgs = {tg.name: tg for tg in config.trunk_groups}
    for i, rp in enumerate(config.routeplans):
        for j, route in enumerate(rp.routes):
            for k, name in enumerate(route.trunk_groups):
                egress = tgs.get(name)
                if egress is None:
                    raise located.error(
                        ("routeplans", i, "routes", j, "trunk_groups", k),
                        f"unknown trunk group {name!r}",
                    )
                if egress.direction != "termination":
                    raise located.error(
                        ("routeplans", i, "routes", j, "trunk_groups", k),
                        f"{name!r} is not a termination trunk group",
                    )
        for j, f in enumerate(rp.filters):
            if isinstance(f.value, str):
                _regex(f.value, located, ("routeplans", i, "filters", j, "value"))
            _date(f.expires, located, ("routeplans", i, "filters", j, "expires"))
        for j, trig in enumerate(rp.triggers):
            _date(trig.expires, located, ("routeplans", i, "triggers", j, "expires"))
            if trig.to is None and trig.from_ is None:
                raise located.error(
                    ("routeplans", i, "triggers", j), "a trigger needs a to or from condition"
                )
        for section in ("numbering", "forwarding"):
            for j, item in enumerate(getattr(rp, section)):
                if item.trunk_group not in tgs:
                    raise located.error(
                        ("routeplans", i, section, j, "trunk_group"),
                        f"unknown trunk group {item.trunk_group!r}",
                    )
