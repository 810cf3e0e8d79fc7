"""The YAML contract the NOC writes (shared/CONFIG.md), as frozen msgspec types.

Names are spelled exactly as in the contract. Every field has a default and a one-line
description; ``sbc schema`` renders them as the JSON Schema in config/schema.json, so editors
and this validator can never disagree. Unknown keys are errors.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, field

from sbc.config.base import Base, Status, Transport, d
from sbc.config.node import (
    FloodConfig,
    LockoutConfig,
    MediaConfig,
    Node,
    RegistrarConfig,
    RtpEngineNode,
)

__all__ = [
    "FloodConfig",
    "LockoutConfig",
    "MediaConfig",
    "Node",
    "RegistrarConfig",
    "RtpEngineNode",
]


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class TimeWindow(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A window of days and hours in a time zone."""

    days: Annotated[list[Day], d("Days of the week.")] = field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    start: Annotated[str, d("HH:MM, inclusive.")] = "00:00"
    end: Annotated[str, d("HH:MM, exclusive; 24:00 is the end of the day.")] = "24:00"
    timezone: Annotated[str, d("IANA time zone name.")] = "UTC"


MetricType = Literal[
    "attempts",
    "completions",
    "minutes",
    "asr",
    "aloc",
    "pdd",
    "ports",
    "cps",
    "revenue",
    "cost",
    "profit",
    "margin",
    "ppm",
]


class MetricTrigger(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A threshold on a trunk group's (or capacity group's) traffic over a sample window: one
    notification when it is crossed, one recovery notice when it no longer is."""

    name: Annotated[str, d("Unique within its trunk group or capacity group.")]
    type: Annotated[
        MetricType,
        d(
            "attempts, completions, minutes, asr (%), aloc (minutes), pdd (seconds), ports (peak), cps (peak); revenue, cost, profit (amounts of rated calls that ended), margin (profit in % of revenue), ppm (profit per minute)."
        ),
    ]
    condition: Annotated[Literal["less_than", "greater_than"], d("less_than or greater_than.")]
    value: Annotated[float, d("The threshold."), Meta(ge=0)]
    window: Annotated[int, d("Sample window in seconds (up to 5 minutes)."), Meta(ge=1, le=300)] = (
        300
    )
    time_frame: Annotated[list[TimeWindow], d("When the trigger is evaluated; empty = always.")] = (
        field(default_factory=list)
    )
    expires: Annotated[str, d("ISO date-time after which the trigger is off; empty = never.")] = ""
    contact: Annotated[
        Literal["noc", "billing", "sales"], d("Who the notification is for (carried in it).")
    ] = "noc"
    webhook: Annotated[str, d("URL to POST the notification to; empty = log only.")] = ""


class Balance(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A prepaid or credit balance: payments minus the rated charges of the relationship's
    calls (their revenue), plus the cost of the calls we send it as a vendor (unless
    disable_offsets), kept in the ledger (node.balance.ledger)."""

    warn_at: Annotated[
        float, d("One balance.warning notice (and webhook) when the balance falls to this.")
    ] = 0.0
    suspend_at: Annotated[
        float, d("New calls get 403 (reason balance_suspended) once the balance is this low.")
    ] = 0.0
    currency: Annotated[str, d("Currency of the balance (that of the relationship's decks).")] = (
        "USD"
    )
    webhook: Annotated[str, d("URL to POST balance.warning to; empty = log only.")] = ""
    disable_offsets: Annotated[
        bool,
        d(
            "The guide's Disable Balance Offsets: the cost of calls we send to the"
            " relationship's termination trunk groups is not credited to its balance (and"
            " not counted at admission); `sbc balance show` lists it apart."
        ),
    ] = False
    on_suspend: Annotated[
        Literal["keep", "hangup"],
        d(
            "Calls up when the balance less the running cost of the calls in progress"
            " reaches suspend_at: keep them, or hangup (BYE both legs, CANCEL in setup;"
            " CDR reason balance_suspended)."
        ),
    ] = "keep"


class Relationship(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A customer or vendor the carrier exchanges traffic with."""

    name: Annotated[str, d("Unique name.")]
    status: Annotated[Status, d("A disabled relationship refuses all its calls (403).")] = "enabled"
    balance: Annotated[Balance | None, d("Balance and credit policy; absent = none kept.")] = None


class DeckColumns(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The Ratedeck Mapping: the deck's own CSV headers for our fields."""

    prefix: Annotated[str, d("Header of the code (dialled-number prefix) column.")] = "prefix"
    rate: Annotated[str, d("Header of the rate per minute column.")] = "rate"
    effective: Annotated[
        str, d("Header of the effective date column (ISO date; empty cell = always).")
    ] = "effective"
    description: Annotated[str, d("Header of the destination name column.")] = "description"


class Increment(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Billing increments in seconds: at least `first`, then steps of `next`."""

    first: Annotated[int, d("Seconds billed at least (60 in 60/6)."), Meta(ge=1)] = 1
    next: Annotated[int, d("Seconds per step after the first (6 in 60/6)."), Meta(ge=1)] = 1


class RateDeckConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A rate deck: codes and per-minute rates in a CSV file, with its billing terms."""

    name: Annotated[str, d("Unique name; trunk groups name it in rate_deck.")]
    file: Annotated[str, d("CSV file, relative to the config directory.")]
    columns: Annotated[DeckColumns, d("Which CSV headers hold our fields.")] = field(
        default_factory=DeckColumns
    )
    currency: Annotated[str, d("Currency of the rates.")] = "USD"
    rounding_digits: Annotated[
        int, d("Decimal places amounts are rounded to (half up)."), Meta(ge=0, le=10)
    ] = 4
    increment: Annotated[Increment, d("Billing increments.")] = field(default_factory=Increment)
    propagation_delay: Annotated[
        bool, d("Add one second to every answered call's duration before increments.")
    ] = False
    orphan_after_days: Annotated[
        int,
        d("Codes missing from a reloaded deck keep their rate this many days; 0 = none."),
        Meta(ge=0),
    ] = 0


class CapacityGroup(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Port and CPS limits shared by several trunk groups."""

    name: Annotated[str, d("Unique name.")]
    ports: Annotated[
        int, d("Concurrent calls across its trunk groups; 0 = no limit."), Meta(ge=0)
    ] = 0
    cps: Annotated[
        int, d("New calls per second across its trunk groups; 0 = no limit."), Meta(ge=0)
    ] = 0
    triggers: Annotated[list[MetricTrigger], d("Metric triggers on the group's ports or CPS.")] = (
        field(default_factory=list)
    )


class Trunk(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One peer address (ip) or one registration account (registration).

    Registration in an origination trunk group: a PBX registers to us with these credentials.
    In a termination trunk group: we register to the vendor at ip:port and send calls there."""

    type: Annotated[
        Literal["ip", "registration"], d("ip: matched by source; registration: by REGISTER.")
    ] = "ip"
    ip: Annotated[
        str, d("Peer IP address (type ip), or the vendor's registrar (termination registration).")
    ] = ""
    host: Annotated[
        str,
        d(
            "Vendor's domain name instead of ip (termination ip trunks): resolved NAPTR -> SRV -> A/AAAA (RFC 3263) through node.dns, each address with its own health; a port skips SRV."
        ),
    ] = ""
    port: Annotated[
        int, d("Peer port; 0 = any port (origination) or 5060 (termination)."), Meta(ge=0, le=65535)
    ] = 0
    protocol: Annotated[Transport, d("udp, tcp or tls.")] = "udp"
    weight: Annotated[int, d("Relative share under weighted hunting."), Meta(ge=0)] = 1
    username: Annotated[
        str, d("Digest username: the account (registration), or to answer a vendor's 401/407.")
    ] = ""
    password: Annotated[str, d("Digest password, as username.")] = ""
    expires: Annotated[
        int, d("Registration lifetime we ask a vendor for (termination registration)."), Meta(ge=60)
    ] = 3600


class Limits(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Per-trunk-group limits; 0 means no limit."""

    ports: Annotated[int, d("Concurrent calls."), Meta(ge=0)] = 0
    cps: Annotated[int, d("New calls per second."), Meta(ge=0)] = 0
    max_pdd: Annotated[
        int,
        d(
            "Seconds to wait for ringing (180, 181, 182 or 183; not 199): from each INVITE to this termination trunk group (then the next trunk), or from the caller's INVITE on this origination one until a first ring (then hunting ends)."
        ),
        Meta(ge=0),
    ] = 0
    max_call_duration: Annotated[
        int,
        d(
            "Seconds after answer before both legs get BYE; set on both of a call's trunk groups, the shorter."
        ),
        Meta(ge=0),
    ] = 0
    b_timer: Annotated[
        int,
        d(
            "Seconds to wait for 100 Trying before trying the next trunk (1-10); termination trunk groups only, smaller than max_pdd."
        ),
        Meta(ge=0, le=10),
    ] = 0


class Manipulation(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A regex rewrite, applied in order."""

    field: Annotated[Literal["header", "ani", "dnis", "sip_code", "ip"], d("What to rewrite.")]
    header: Annotated[str, d("Header name when field is header.")] = ""
    search: Annotated[str, d("Python regular expression.")]
    replace: Annotated[str, d("Replacement, with \\1-style groups.")] = ""


class RouteAdvance(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """When to try the next trunk instead of relaying a failure."""

    codes: Annotated[str, d("Regex over the SIP status code that advances to the next route.")] = (
        r"^(5\d\d|408)$"
    )
    normalize_sip_code: Annotated[
        bool, d("Send 503 to the caller when every route failed on advance codes.")
    ] = True
    stop_on_18x_failure: Annotated[bool, d("After a 180-183 a failure is final: no advance.")] = (
        False
    )


class Monitoring(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """OPTIONS pings that take dead trunks out of hunting."""

    enabled: Annotated[bool, d("Ping this trunk group's trunks.")] = False
    interval: Annotated[int, d("Seconds between pings."), Meta(ge=1)] = 10
    down_after: Annotated[int, d("Failed pings before a trunk is down."), Meta(ge=1)] = 3
    up_after: Annotated[int, d("Answered pings before a down trunk is up again."), Meta(ge=1)] = 2


class SessionTimer(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """RFC 4028 session timers on this trunk group's legs."""

    expires: Annotated[
        int,
        d("Session-Expires we ask for on this trunk group's legs, seconds; 0 = not asked."),
        Meta(ge=0, le=86400),
    ] = 0
    min_se: Annotated[
        int,
        d("Smallest Session-Expires we accept (Min-SE, RFC 4028 section 5; at least 90)."),
        Meta(ge=90, le=86400),
    ] = 90


Hunting = Literal["load-balance", "failover", "weighted"]


class TrunkGroup(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A set of trunks managed as one: identification, limits, routing and media policy."""

    name: Annotated[str, d("Unique name.")]
    relationship: Annotated[
        str, d("The relationship this trunk group belongs to; it must be in relationships.")
    ] = ""
    direction: Annotated[
        Literal["origination", "termination"],
        d("origination: they send us calls; termination: we send calls to them."),
    ]
    relationship_type: Annotated[
        Literal["customer", "vendor"],
        d(
            "customer (origination) or vendor (termination); when written it must agree with direction."
        ),
    ] = "customer"
    status: Annotated[
        Status, d("A disabled trunk group refuses calls (403) and is skipped in hunting.")
    ] = "enabled"
    tech_prefix: Annotated[
        str,
        d(
            "Leading Request-URI user characters that identify this trunk group; stripped before routing."
        ),
    ] = ""
    trunks: Annotated[list[Trunk], d("Peer addresses or registering accounts.")] = field(
        default_factory=list
    )
    limits: Annotated[Limits, d("Ports, CPS and timers.")] = field(default_factory=Limits)
    capacity_group: Annotated[
        str, d("Capacity group whose limits this trunk group also counts against.")
    ] = ""
    time_of_day: Annotated[
        list[TimeWindow],
        d(
            "Windows in which calls are accepted (origination) or sent (termination); empty = always."
        ),
    ] = field(default_factory=list)
    routeplan: Annotated[str, d("Routeplan for calls from this (origination) trunk group.")] = ""
    media_profile: Annotated[str, d("Media profile for calls on this trunk group.")] = ""
    manipulations: Annotated[list[Manipulation], d("Regex rewrites, in order.")] = field(
        default_factory=list
    )
    send_e164: Annotated[bool, d("Prepend '+' to numbers sent out (never doubled).")] = False
    preserve_caller_id: Annotated[
        bool, d("Keep the caller's display name in From; otherwise it is stripped.")
    ] = False
    send_npdi: Annotated[bool, d("Add ;npdi to the Request-URI for ported US numbers.")] = False
    diversion_routing: Annotated[bool, d("Route on and carry Diversion/History-Info.")] = False
    nat: Annotated[bool, d("Send to the address packets came from, not the one they claim.")] = (
        False
    )
    route_advance: Annotated[
        RouteAdvance, d("Route advance policy for calls from this (origination) trunk group.")
    ] = field(default_factory=RouteAdvance)
    hunting: Annotated[Hunting, d("How calls spread over this trunk group's trunks.")] = (
        "load-balance"
    )
    monitoring: Annotated[Monitoring, d("OPTIONS trunk monitoring.")] = field(
        default_factory=Monitoring
    )
    triggers: Annotated[list[MetricTrigger], d("Metric triggers on this trunk group.")] = field(
        default_factory=list
    )
    session_timer: Annotated[SessionTimer, d("RFC 4028 session timers.")] = field(
        default_factory=SessionTimer
    )
    redirects: Annotated[
        Literal["follow", "relay", "fail"],
        d("A vendor's 3xx: follow its Contacts as attempts, relay it to the caller, or fail."),
    ] = "follow"
    refer: Annotated[
        Literal["reject", "relay"],
        d(
            "REFER from this trunk group's peers: answered 403 (reject) or relayed to the far leg, Refer-To naming us (an attended transfer's Replaces too)."
        ),
    ] = "reject"
    trusted: Annotated[
        bool,
        d(
            "RFC 3325 trust: P-Asserted-Identity and Privacy cross only between trusted trunk groups."
        ),
    ] = False
    ani_from_pai: Annotated[
        bool, d("Take the caller's number from P-Asserted-Identity (trusted trunk groups only).")
    ] = False
    rate_deck: Annotated[
        str, d("Rate deck of this trunk group: cost (termination) or revenue (origination).")
    ] = ""
    max_cost: Annotated[
        str,
        d(
            "Margin guard (termination): skip this trunk group when its rate for the DNIS exceeds the call's revenue rate (revenue) or this rate per minute (a number); empty = no guard."
        ),
    ] = ""


class Filter(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A routeplan filter checked before routes."""

    type: Annotated[Literal["ani", "dnis", "media_ip", "404"], d("What the filter matches on.")]
    value: Annotated[str | list[str], d("A regex, or a list of exact values.")]
    expires: Annotated[
        str, d("ISO date after which the filter no longer applies; empty = never.")
    ] = ""
    error_code: Annotated[int, d("SIP code to answer."), Meta(ge=400, le=699)] = 403
    error_message: Annotated[str, d("Reason phrase to answer.")] = "Forbidden"


class Numbering(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A DID or toll-free number owned by a trunk group."""

    number: Annotated[str, d("The number, 1NPANXXXXXX for North America.")]
    number_type: Annotated[Literal["did", "toll-free"], d("did or toll-free.")] = "did"
    trunk_group: Annotated[str, d("Trunk group the number is delivered to.")]


class Forwarding(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Forward a number to another number through a trunk group."""

    number: Annotated[str, d("Number dialled.")]
    forward_to: Annotated[str, d("Number to forward to.")]
    trunk_group: Annotated[str, d("Trunk group to forward through.")]
    on_failure: Annotated[bool, d("Forward only when the original routes failed.")] = True


class TriggerMatch(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How a trigger matches a number."""

    exact: Annotated[str, d("Exact number.")] = ""
    prefix: Annotated[str, d("Number prefix.")] = ""
    anonymous: Annotated[bool, d("Match anonymous callers.")] = False


class Trigger(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A routing condition that emits a notification without delaying the call."""

    name: Annotated[str, d("Unique name.")]
    to: Annotated[TriggerMatch | None, d("Match on the dialled number.")] = None
    from_: Annotated[TriggerMatch | None, d("Match on the caller.")] = field(
        default=None, name="from"
    )
    action: Annotated[
        Literal["notify"], d("notify: structured log event and optional webhook.")
    ] = "notify"
    webhook: Annotated[str, d("URL to POST the notification to; empty = log only.")] = ""
    expires: Annotated[str, d("ISO date-time after which the trigger is off; empty = never.")] = ""


class Route(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Longest DNIS prefix wins; trunk groups are tried in order."""

    prefix: Annotated[str, d("DNIS prefix; empty matches everything.")]
    trunk_groups: Annotated[list[str], d("Egress trunk groups, in hunting order.")]
    order: Annotated[
        Literal["listed", "lcr"],
        d("listed: as written; lcr: cheapest rate for the DNIS first, unrated ones last."),
    ] = "listed"


class RoutePlan(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Filters, numbering, forwarding, triggers and routes for calls from a trunk group."""

    name: Annotated[str, d("Unique name.")]
    filters: Annotated[list[Filter], d("Checked before routes.")] = field(default_factory=list)
    numbering: Annotated[list[Numbering], d("DIDs and toll-free numbers.")] = field(
        default_factory=list
    )
    forwarding: Annotated[list[Forwarding], d("Number forwarding.")] = field(default_factory=list)
    triggers: Annotated[list[Trigger], d("Notifications on matching calls.")] = field(
        default_factory=list
    )
    routes: Annotated[list[Route], d("Prefix routes.")] = field(default_factory=list)


class Codecs(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Codec filtering."""

    allow: Annotated[list[str], d("Codecs allowed; others are stripped. Empty = all.")] = field(
        default_factory=list
    )


class MediaProfile(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How media is handled for calls on a trunk group."""

    name: Annotated[str, d("Unique name.")]
    anchoring: Annotated[bool, d("Relay media through rtpengine; off = SDP passes untouched.")] = (
        True
    )
    codecs: Annotated[Codecs, d("Codec filtering.")] = field(default_factory=Codecs)
    transcoding: Annotated[
        bool, d("Let rtpengine transcode to a codec the far side accepts; needs codecs.allow.")
    ] = False
    srtp: Annotated[bool, d("RTP/SAVP with SDES toward this side.")] = False


class Config(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The whole configuration: every *.yaml in the config directory, merged."""

    node: Annotated[Node, d("This SBC node.")] = field(default_factory=Node)
    relationships: Annotated[list[Relationship], d("Customers and vendors.")] = field(
        default_factory=list
    )
    capacity_groups: Annotated[list[CapacityGroup], d("Shared limits.")] = field(
        default_factory=list
    )
    trunk_groups: Annotated[list[TrunkGroup], d("Trunk groups.")] = field(default_factory=list)
    routeplans: Annotated[list[RoutePlan], d("Routeplans.")] = field(default_factory=list)
    media_profiles: Annotated[list[MediaProfile], d("Media profiles.")] = field(
        default_factory=list
    )
    rate_decks: Annotated[list[RateDeckConfig], d("Rate decks.")] = field(default_factory=list)


LIST_SECTIONS = (
    "relationships",
    "capacity_groups",
    "trunk_groups",
    "routeplans",
    "media_profiles",
    "rate_decks",
)


def json_schema() -> dict[str, object]:
    """The JSON Schema of ``Config``, with every description in one canonical form (msgspec
    releases differ in how they dedent docstrings, and the committed file must not)."""
    schema = _clean(msgspec.json.schema(Config))
    assert isinstance(schema, dict)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sbc configuration"
    return schema


def _clean(node: object) -> object:
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node
