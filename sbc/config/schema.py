"""The YAML contract the NOC writes (shared/CONFIG.md), as frozen msgspec types.

Names are spelled exactly as in the contract. Every field has a default and a one-line
description; ``sbc schema`` renders them as the JSON Schema in config/schema.json, so editors
and this validator can never disagree. Unknown keys are errors.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct, field


def d(text: str) -> Meta:
    return Meta(description=text)


class Base(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


Transport = Literal["udp", "tcp", "tls"]
Status = Literal["enabled", "disabled"]


class Listen(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A socket the SBC serves SIP on."""

    address: Annotated[str, d("IP address to bind.")] = "127.0.0.1"
    port: Annotated[int, d("Port to bind."), Meta(ge=1, le=65535)] = 5060
    transport: Annotated[Transport, d("udp, tcp or tls.")] = "udp"


class StateBackend(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Where counters and registrations live."""

    backend: Annotated[Literal["memory", "redis"], d("memory (one node) or redis (fleet).")] = (
        "memory"
    )
    url: Annotated[str, d("Redis URL, e.g. redis://127.0.0.1:6379/0.")] = ""
    lease_ttl: Annotated[
        int,
        d(
            "Seconds a node's port leases outlive its last heartbeat: a dead node's ports come back within it."
        ),
        Meta(ge=2, le=3600),
    ] = 30
    timeout: Annotated[
        float, d("Seconds to wait for Redis before deciding on local limits."), Meta(gt=0, le=5)
    ] = 0.5
    node_id: Annotated[str, d("This node's name in the fleet; empty = hostname:pid.")] = ""


class RtpEngineNode(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One rtpengine ng control socket."""

    address: Annotated[str, d("host:port of rtpengine's ng listener.")] = "127.0.0.1:2223"
    weight: Annotated[int, d("Share of new calls this node gets."), Meta(ge=0)] = 1


class MediaConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How the SBC talks to rtpengine, and what a call does when no node answers."""

    on_failure: Annotated[
        Literal["reject", "unanchored"],
        d("No rtpengine node answers: reject the call with 503, or let media flow unanchored."),
    ] = "reject"
    timeout: Annotated[
        float, d("Seconds to wait for one ng reply before retrying."), Meta(gt=0, le=5)
    ] = 0.5
    retries: Annotated[int, d("Retries of one ng command (same cookie)."), Meta(ge=0, le=5)] = 2
    down_for: Annotated[
        float, d("Seconds a node that stopped answering is left out of use."), Meta(gt=0)
    ] = 30.0
    ping_interval: Annotated[
        float, d("Seconds between ng pings to every node; 0 disables."), Meta(ge=0)
    ] = 10.0


class CdrConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Where call detail records are written."""

    path: Annotated[str, d("JSON-lines CDR file, relative to the working directory.")] = (
        "cdr/cdr.jsonl"
    )


class MetricsConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The Prometheus endpoint."""

    listen: Annotated[str, d("host:port for /metrics; empty disables it.")] = ""


class AdminConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The local admin endpoint that `sbc status` reads (JSON over HTTP)."""

    listen: Annotated[
        str, d("host:port of the admin endpoint (keep it on loopback); empty disables it.")
    ] = ""


class AuditConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The audit log of configuration loads and reloads."""

    path: Annotated[
        str, d("JSON-lines audit file, relative to the working directory; empty = log only.")
    ] = "audit/audit.jsonl"


class SipTimers(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """RFC 3261 §17 timer base values."""

    t1: Annotated[float, d("T1 in seconds (RTT estimate)."), Meta(gt=0)] = 0.5
    t2: Annotated[float, d("T2 in seconds (max retransmit interval)."), Meta(gt=0)] = 4.0
    t4: Annotated[float, d("T4 in seconds (max network lifetime)."), Meta(gt=0)] = 5.0
    timer_c: Annotated[
        float,
        d(
            "Timer C (RFC 3261 16.6): seconds a B-leg may stay with a provisional and no final answer before it is CANCELled and hunting goes on; each provisional restarts it; 0 = off."
        ),
        Meta(ge=0),
    ] = 180.0


Algorithm = Literal["SHA-256", "MD5"]


class LockoutConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Shutting out password guessers: past the failures, no answer at all until the block ends."""

    failures: Annotated[
        int,
        d(
            "Failed authentications a source IP may have within the window; one more blocks it. 0 = off."
        ),
        Meta(ge=0),
    ] = 5
    window: Annotated[float, d("Seconds over which failures are counted."), Meta(gt=0)] = 60.0
    block_for: Annotated[
        float,
        d("Seconds a blocked source (or account) gets no answer to REGISTER or INVITE."),
        Meta(gt=0),
    ] = 300.0
    account_failures: Annotated[
        int,
        d(
            "Failures one account may have within the window, from any sources; one more blocks the account except from its registered address. 0 = off."
        ),
        Meta(ge=0),
    ] = 20


class RegistrarConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Digest authentication of registration trunks (RFC 3261 §22, RFC 8760)."""

    realm: Annotated[str, d("Digest realm; empty = switch_ip.")] = ""
    algorithms: Annotated[
        list[Algorithm], d("Challenges offered, most preferred first."), Meta(min_length=1)
    ] = field(default_factory=lambda: ["SHA-256", "MD5"])
    nonce_lifetime: Annotated[
        int, d("Seconds a nonce is accepted; older ones get stale=true."), Meta(ge=10)
    ] = 300
    secret: Annotated[
        str, d("Nonce signing key; set the same on every node of a fleet. Empty = random.")
    ] = ""
    min_expires: Annotated[
        int, d("Shortest registration accepted; shorter gets 423 (RFC 3261 §10.3)."), Meta(ge=1)
    ] = 60
    max_expires: Annotated[int, d("Longest registration granted."), Meta(ge=1)] = 3600
    default_expires: Annotated[
        int, d("Registration lifetime when the REGISTER names none."), Meta(ge=1)
    ] = 3600
    lockout: Annotated[
        LockoutConfig, d("Per source IP and per account lockout after failed authentications.")
    ] = field(default_factory=LockoutConfig)


class Node(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """This SBC node: sockets, identity, backends."""

    listen: Annotated[list[Listen], d("Sockets to serve SIP on.")] = field(
        default_factory=lambda: [Listen()]
    )
    workers: Annotated[
        int,
        d(
            "Worker processes sharing the SIP sockets (SO_REUSEPORT), each running the whole call path; 0 = one per CPU core, 1 = a single process with no supervisor."
        ),
        Meta(ge=0, le=64),
    ] = 0
    switch_ip: Annotated[str, d("Address peers are told to send to (Via, Contact, SDP).")] = (
        "127.0.0.1"
    )
    unknown_source: Annotated[
        Literal["drop", "reject"],
        d("What to do with requests no trunk group claims: drop silently or reject with 403."),
    ] = "drop"
    state: Annotated[StateBackend, d("State store backend.")] = field(default_factory=StateBackend)
    rtpengine: Annotated[list[RtpEngineNode], d("rtpengine nodes for media anchoring.")] = field(
        default_factory=list
    )
    media: Annotated[MediaConfig, d("rtpengine client behaviour.")] = field(
        default_factory=MediaConfig
    )
    cdr: Annotated[CdrConfig, d("CDR output.")] = field(default_factory=CdrConfig)
    metrics: Annotated[MetricsConfig, d("Prometheus metrics endpoint.")] = field(
        default_factory=MetricsConfig
    )
    timers: Annotated[SipTimers, d("SIP transaction timers.")] = field(default_factory=SipTimers)
    registrar: Annotated[RegistrarConfig, d("Registration trunks' digest authentication.")] = field(
        default_factory=RegistrarConfig
    )
    admin: Annotated[AdminConfig, d("Local admin endpoint for `sbc status`.")] = field(
        default_factory=AdminConfig
    )
    audit: Annotated[AuditConfig, d("Audit log of configuration changes.")] = field(
        default_factory=AuditConfig
    )
    drain_timeout: Annotated[int, d("Seconds calls may continue after SIGTERM."), Meta(ge=0)] = 30
    drain_retry_after: Annotated[
        int, d("Retry-After (seconds) on the 503 new calls get while draining."), Meta(ge=0)
    ] = 60


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class TimeWindow(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A window of days and hours in a time zone."""

    days: Annotated[list[Day], d("Days of the week.")] = field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    start: Annotated[str, d("HH:MM, inclusive.")] = "00:00"
    end: Annotated[str, d("HH:MM, exclusive; 24:00 is the end of the day.")] = "24:00"
    timezone: Annotated[str, d("IANA time zone name.")] = "UTC"


MetricType = Literal["attempts", "completions", "minutes", "asr", "aloc", "pdd", "ports", "cps"]


class MetricTrigger(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A threshold on a trunk group's (or capacity group's) traffic over a sample window: one
    notification when it is crossed, one recovery notice when it no longer is."""

    name: Annotated[str, d("Unique within its trunk group or capacity group.")]
    type: Annotated[
        MetricType,
        d(
            "attempts, completions, minutes, asr (%), aloc (minutes), pdd (seconds), ports (peak), cps (peak)."
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


class Relationship(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A customer or vendor the carrier exchanges traffic with."""

    name: Annotated[str, d("Unique name.")]
    status: Annotated[Status, d("A disabled relationship refuses all its calls (403).")] = "enabled"


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
            "Seconds to wait for 180/183: from each INVITE to this termination trunk group (then the next trunk), or from the caller's INVITE on this origination one until a first ring (then hunting ends)."
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
    stop_on_18x_failure: Annotated[bool, d("After a 180/183 a failure is final: no advance.")] = (
        False
    )


class Monitoring(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """OPTIONS pings that take dead trunks out of hunting."""

    enabled: Annotated[bool, d("Ping this trunk group's trunks.")] = False
    interval: Annotated[int, d("Seconds between pings."), Meta(ge=1)] = 10
    down_after: Annotated[int, d("Failed pings before a trunk is down."), Meta(ge=1)] = 3
    up_after: Annotated[int, d("Answered pings before a down trunk is up again."), Meta(ge=1)] = 2


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


LIST_SECTIONS = ("relationships", "capacity_groups", "trunk_groups", "routeplans", "media_profiles")


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
