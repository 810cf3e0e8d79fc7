"""TLS contexts from ``node.tls`` (RFC 3261 §26.2.1, RFC 5630), with the standard library's ssl.

One identity serves both sides: TLS listeners present it to callers (and, with
``require_client_cert``, ask theirs: mutual TLS), TLS trunks present it to vendors and check
the vendor's certificate and host name (``verify_peer``) against ``ca`` or the system store.
Only a TLS listener needs a certificate: a node that only calls out over TLS may have none
(or no node.tls at all: vendors verified against the system store).

`sbc check` (``check``) resolves the paths against the config directory and builds both
contexts once, so an unreadable or mismatched certificate is refused with file:line:field
like any other config error. ``Contexts`` holds the live ones: a reload (SIGHUP) loads the
files again into the same server context, so a listener's next handshake uses the new
certificate while connections already up keep theirs.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

import msgspec

from sbc.config.node import TlsConfig
from sbc.config.schema import Config


class Locator(Protocol):
    """The loader's map from a config path to its file and line."""

    def error(self, path: tuple[str | int, ...], message: str) -> Exception: ...


FILES = ("certificate", "private_key", "ca")


def _absolute(root: Path, name: str) -> str:
    if not name:
        return ""
    path = Path(name)
    return str((path if path.is_absolute() else root / path).absolute())


def server_context(tls: TlsConfig, into: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """The listeners' context; ``into``: load the files again into that one (a reload)."""
    ctx = into or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: TLS 1.0/1.1 are gone
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.require_client_cert:
        _trust(ctx, tls, ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """Toward vendors: our certificate (a vendor may ask for it) and, with verify_peer, theirs
    checked against ``ca`` with its host name (ssl.match_hostname rules, IP SANs included)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.certificate:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.verify_peer:
        _trust(ctx, tls, ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _trust(ctx: ssl.SSLContext, tls: TlsConfig, purpose: ssl.Purpose) -> None:
    if tls.ca:
        ctx.load_verify_locations(cafile=tls.ca)
    else:
        ctx.load_default_certs(purpose)


def listening(config: Config) -> tuple[str | int, ...] | None:
    """The config path of the first tls listener (None: no TLS listener)."""
    for i, listen in enumerate(config.node.listen):
        if listen.transport == "tls":
            return ("node", "listen", i, "transport")
    return None


def check(config: Config, root: Path, located: Locator) -> Config:
    """The config with absolute node.tls paths, after building both contexts once. A TLS
    listener needs our certificate; TLS trunks alone do not (a node that only calls out over
    TLS verifies its vendors against ``ca`` or the system store, and shows no certificate of
    its own unless one is given)."""
    tls = config.node.tls
    where = listening(config)
    if tls is None:
        if where is not None:
            raise located.error(where, "a tls listener needs node.tls (certificate, private_key)")
        return config
    for name, other in (("certificate", "private_key"), ("private_key", "certificate")):
        if not getattr(tls, name) and (where is not None or getattr(tls, other)):
            raise located.error(("node", "tls", name), "required: a PEM file")
    tls = msgspec.structs.replace(tls, **{n: _absolute(root, getattr(tls, n)) for n in FILES})
    for name in FILES:
        path = getattr(tls, name)
        if path and not Path(path).is_file():
            raise located.error(("node", "tls", name), f"cannot read {path}")
    try:
        if tls.certificate:
            server_context(tls)
    except (ssl.SSLError, OSError) as e:
        raise located.error(("node", "tls", "certificate"), f"certificate or key: {e}") from None
    try:
        client_context(tls)
    except (ssl.SSLError, OSError) as e:
        raise located.error(("node", "tls", "ca"), f"CA bundle: {e}") from None
    node = msgspec.structs.replace(config.node, tls=tls)
    return msgspec.structs.replace(config, node=node)


class Contexts:
    """The live contexts: the listeners hold ``server`` itself, trunks ask ``client`` at
    each new connection."""

    def __init__(self, tls: TlsConfig | None) -> None:
        self.tls = tls
        self.server: ssl.SSLContext | None = _server(tls)
        self._client: ssl.SSLContext | None = client_context(tls) if tls else None

    def client(self) -> ssl.SSLContext:
        if self._client is None:  # no node.tls: TLS trunks verified against the system store
            self._client = client_context(TlsConfig())
        return self._client

    def apply(self, tls: TlsConfig | None) -> str:
        """A reload: read the files again (they may have changed under the same names).
        Returns "" or why the files were refused (the old certificates stay then)."""
        if tls is None:
            return ""
        try:
            client = client_context(tls)
            if tls.certificate:
                self.server = server_context(tls, self.server) if self.server else _server(tls)
        except (ssl.SSLError, OSError) as e:
            return str(e)
        self.tls, self._client = tls, client
        return ""


def _server(tls: TlsConfig | None) -> ssl.SSLContext | None:
    return server_context(tls) if tls is not None and tls.certificate else None
