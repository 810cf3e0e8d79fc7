"""The ``node`` section of the config contract: this SBC's sockets, timers, state store,
media, records and endpoints (shared/CONFIG.md). See sbc.config.schema."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, field

from sbc.config.base import Base, Transport, d


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
    rtp_timeout: Annotated[
        int,
        d(
            "End an answered, anchored call (BYE both legs, reason media_timeout) once rtpengine has relayed no RTP on it for this many seconds, or has dropped it (its own --timeout); checked with ng query. 0 = never."
        ),
        Meta(ge=0, le=86400),
    ] = 0


class CdrConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Where call detail records are written."""

    path: Annotated[str, d("JSON-lines CDR file, relative to the working directory.")] = (
        "cdr/cdr.jsonl"
    )
    database: Annotated[
        str,
        d(
            "PostgreSQL DSN (e.g. postgresql://sbc@/sbc?host=/run/postgresql): every record also lands in table `cdr`, shipped from the file, which stays the spool; empty = file only."
        ),
    ] = ""


class LedgerConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Where relationships' balances are kept."""

    ledger: Annotated[
        str,
        d(
            "JSON-lines ledger of payments and charges, relative to the working directory; the balances are rebuilt from it at start. With the Redis state store it is this node's durable copy of the fleet's ledger (kept in Redis)."
        ),
    ] = "balance/ledger.jsonl"


class ControlConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The control socket `sbc ctl` talks to (JSON-RPC 2.0, sbc.control)."""

    socket: Annotated[
        str,
        d("UNIX socket path (mode 0600), relative to the working directory; empty disables it."),
    ] = "control.sock"
    trace: Annotated[
        int,
        d(
            "SIP messages (first lines) kept per call for `sbc ctl call`, for the last 1000 calls; 0 = none (no per-message cost)."
        ),
        Meta(ge=0, le=1000),
    ] = 32
    state: Annotated[
        str,
        d(
            "File (relative to the working directory) keeping the trunks `sbc ctl trunk disable` took out of service, so a restart keeps them out until enabled; empty: not kept across restarts."
        ),
    ] = "out-of-service.json"


class HepConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A HEPv3 copy of every SIP message sent or received, for Homer / heplify (sbc.hep)."""

    address: Annotated[str, d("host:port of the HEP collector (UDP); empty disables capture.")] = ""
    capture_id: Annotated[
        int, d("HEP capture agent id (chunk 0x000c)."), Meta(ge=0, le=4294967295)
    ] = 1
    password: Annotated[str, d("HEP auth key (chunk 0x000e); empty sends none.")] = ""


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
    max_contacts: Annotated[
        int,
        d(
            "Contacts one account may hold at once (RFC 3261 §10.3); a REGISTER that would hold more gets 403. Calls try them highest q first."
        ),
        Meta(ge=1),
    ] = 10
    contact_timeout: Annotated[
        int,
        d(
            "Seconds one registered contact may ring unanswered before the account's next contact is tried (CANCEL); the last one rings on. 0 = until it fails."
        ),
        Meta(ge=0),
    ] = 30
    lockout: Annotated[
        LockoutConfig, d("Per source IP and per account lockout after failed authentications.")
    ] = field(default_factory=LockoutConfig)


class FloodConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Per source IP flood protection (pike-like): a source sending more requests than this
    is dropped unanswered, before parsing, for a while. Trunk IPs count too."""

    requests: Annotated[
        int,
        d(
            "Requests one source IP may send within the window; one more blocks it (responses do not count). 0 = off."
        ),
        Meta(ge=0),
    ] = 200
    window: Annotated[float, d("Seconds over which requests are counted."), Meta(gt=0)] = 1.0
    block_for: Annotated[
        float, d("Seconds a blocked source is dropped without an answer."), Meta(gt=0)
    ] = 300.0
    exempt: Annotated[list[str], d("IPs or CIDRs never counted nor blocked.")] = field(
        default_factory=list
    )


class TcpConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """TCP connection hygiene: what a connection may hold, and for how long."""

    idle_timeout: Annotated[
        float,
        d(
            "Seconds a connection may carry nothing (CRLF keep-alives count) before it is closed; connections of hosts with live calls, and those a live registration binding names, are kept. 0 = never."
        ),
        Meta(ge=0),
    ] = 120.0
    header_timeout: Annotated[
        float,
        d(
            "Seconds a message may take to arrive whole from its first byte (slowloris); then the connection is closed. 0 = never."
        ),
        Meta(ge=0),
    ] = 10.0
    keepalive_interval: Annotated[
        float,
        d(
            "Seconds a TCP/TLS connection we need later (one we opened toward a vendor, or one a PBX registered over) may be quiet before we send a CRLF keep-alive ping (RFC 5626 §4.4.1); no pong within 10 s closes it and fails its transactions. 0 = no pings."
        ),
        Meta(ge=0),
    ] = 0.0
    max_connections: Annotated[
        int,
        d("Inbound connections held at once; more are closed as they arrive. 0 = no limit."),
        Meta(ge=0),
    ] = 2000


class DnsConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How trunks named by host are resolved (RFC 3263; routing.srv, sbc.resolver)."""

    servers: Annotated[
        list[str],
        d("DNS servers as IP:PORT, asked in order; empty = those of /etc/resolv.conf."),
    ] = field(default_factory=list)
    timeout: Annotated[
        float,
        d("Seconds one DNS query may take; then the resolution has failed."),
        Meta(gt=0, le=30),
    ] = 2.0
    min_ttl: Annotated[
        float, d("Seconds an answer is kept at least, whatever its TTL says."), Meta(ge=0.1)
    ] = 1.0
    max_ttl: Annotated[
        float, d("Seconds an answer is kept at most, whatever its TTL says."), Meta(gt=0)
    ] = 86400.0
    retry: Annotated[
        float,
        d("Seconds between tries while resolution fails; the last good answer is used meanwhile."),
        Meta(gt=0),
    ] = 5.0


class TlsConfig(Base, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The one TLS identity of TLS listeners and TLS trunks (RFC 3261 §26.2.1, RFC 5630);
    certificate and private_key are required by a TLS listener only."""

    certificate: Annotated[
        str, d("PEM certificate chain we present, relative to the config directory.")
    ] = ""
    private_key: Annotated[str, d("PEM private key of the certificate, relative likewise.")] = ""
    ca: Annotated[str, d("PEM CA bundle peers are verified against; empty = the system store.")] = (
        ""
    )
    verify_peer: Annotated[
        bool, d("Toward vendors: their certificate and host name (the trunk's ip) are checked.")
    ] = True
    require_client_cert: Annotated[
        bool, d("Toward callers: mutual TLS, a caller without a certificate ca trusts is refused.")
    ] = False
    handshake_timeout: Annotated[
        float,
        d(
            "Seconds a caller's TLS handshake may take before its connection is closed (a stalled handshake holds a socket)."
        ),
        Meta(gt=0, le=60),
    ] = 10.0


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
    worker_port: Annotated[
        int,
        d(
            "With workers > 1: worker i sends the requests it starts toward vendors (B-leg INVITEs and their in-dialog requests over UDP, OPTIONS pings) from a UDP socket of its own, <first UDP listen address of the family>:worker_port + i, and names it in the Via, so the vendor's answers reach the worker that owns the call with no hand-over; Contact stays the listening port. 0 = every request leaves from the listening port (answers are handed to their owner). Read at start."
        ),
        Meta(ge=0, le=65471),
    ] = 0
    switch_ip: Annotated[str, d("Address peers are told to send to (Via, Contact, SDP).")] = (
        "127.0.0.1"
    )
    switch_ip6: Annotated[
        str,
        d(
            "Address IPv6 peers are told when switch_ip is IPv4 (dual stack); empty = the first IPv6 listen address other than ::."
        ),
    ] = ""
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
    balance: Annotated[LedgerConfig, d("Balance ledger (relationships[].balance).")] = field(
        default_factory=LedgerConfig
    )
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
    control: Annotated[ControlConfig, d("Control socket for `sbc ctl`.")] = field(
        default_factory=ControlConfig
    )
    hep: Annotated[HepConfig, d("HEPv3 capture of all SIP to a collector.")] = field(
        default_factory=HepConfig
    )
    name: Annotated[str, d("This node's name in CDRs (`node`); empty = the host name.")] = ""
    drain_timeout: Annotated[int, d("Seconds calls may continue after SIGTERM."), Meta(ge=0)] = 30
    server_header: Annotated[
        str,
        d(
            "Server (answers) and User-Agent (requests) value we send; empty = none, so scanners cannot name the product."
        ),
    ] = ""
    flood: Annotated[FloodConfig, d("Per source IP flood protection.")] = field(
        default_factory=FloodConfig
    )
    tcp: Annotated[TcpConfig, d("TCP timeouts and connection cap.")] = field(
        default_factory=TcpConfig
    )
    dns: Annotated[DnsConfig, d("Resolution of trunks named by host (RFC 3263).")] = field(
        default_factory=DnsConfig
    )
    tls: Annotated[
        TlsConfig | None, d("Certificates of TLS listeners and trunks; needed by either.")
    ] = None
    drain_retry_after: Annotated[
        int, d("Retry-After (seconds) on the 503 new calls get while draining."), Meta(ge=0)
    ] = 60
