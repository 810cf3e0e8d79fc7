"""node.tls (sbc.tlsctx): what `sbc check` refuses, the contexts it builds, and the call path
on TLS legs (Via SIP/2.0/TLS, Contact transport=tls, port 5061, a failed handshake is a
transport failure that hunting moves past). Certificates from the openssl CLI."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from sbc import tlsctx
from sbc.config.loader import ConfigError, load_config
from sbc.sip.message import Request, Response, make_response
from sbc.sip.transaction import Target
from tests.helpers import Lab, invite

BASE = """\
node:
  listen:
    - {address: 127.0.0.1, port: 5060, transport: udp}
    - {address: 127.0.0.1, port: 5061, transport: tls}
  TLS
relationships: [{name: carrier-a}, {name: vendor-x}]
routeplans: [{name: default, routes: [{prefix: "", trunk_groups: [vendor]}]}]
trunk_groups:
  - {name: carrier-a, relationship: carrier-a, direction: origination, routeplan: default,
     trunks: [{ip: 127.0.0.1, protocol: tls}]}
  - {name: vendor, relationship: vendor-x, direction: termination, hunting: failover,
     trunks: [{ip: 127.0.0.2, protocol: tls}, {ip: 127.0.0.3, port: 5071, protocol: tls}]}
"""
GOOD = "tls: {certificate: tls/a.pem, private_key: tls/a.key, ca: tls/a.pem, verify_peer: true}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two self-signed certificates for 127.0.0.1 (a and b), made with openssl."""
    d = tmp_path_factory.mktemp("tls")
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            cwd=d, check=True, capture_output=True,
        )  # fmt: skip
    return d


def directory(tmp_path: Path, certs: Path, tls: str) -> Path:
    (tmp_path / "tls").mkdir(exist_ok=True)
    for f in certs.iterdir():
        (tmp_path / "tls" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "sbc.yaml").write_text(BASE.replace("TLS", tls))
    return tmp_path


def refused(tmp_path: Path, certs: Path, tls: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(directory(tmp_path, certs, tls))
    assert str(e.value).startswith(f"{tmp_path / 'sbc.yaml'}:{e.value.line}: {e.value.field}: ")
    return e.value


def test_tls_without_node_tls_is_refused_at_the_first_user(tmp_path: Path, certs: Path) -> None:
    e = refused(tmp_path, certs, "")
    assert (e.line, e.field) == (4, "node.listen[1].transport")
    assert "node.tls" in e.message
    e = refused(tmp_path, certs, "tls: {ca: tls/a.pem}")  # a listener shows our certificate
    assert e.field == "node.tls.certificate" and "required" in e.message


def test_tls_trunks_alone_need_no_certificate(tmp_path: Path, certs: Path) -> None:
    """A node that only calls out over TLS: no node.tls at all (vendors verified against the
    system store, no certificate of ours), or node.tls with a ca only; a certificate without
    its key is still refused."""
    outbound_only = BASE.replace("    - {address: 127.0.0.1, port: 5061, transport: tls}\n", "")
    (tmp_path / "sbc.yaml").write_text(outbound_only.replace("TLS", ""))
    config = load_config(tmp_path)
    assert config.node.tls is None
    ctx = tlsctx.Contexts(config.node.tls)
    assert ctx.server is None
    client = ctx.client()
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    directory(tmp_path, certs, "")
    (tmp_path / "sbc.yaml").write_text(outbound_only.replace("TLS", "tls: {ca: tls/a.pem}"))
    tls = load_config(tmp_path).node.tls
    assert tls is not None and tls.ca == str(tmp_path / "tls" / "a.pem") and not tls.certificate
    assert tlsctx.Contexts(tls).server is None
    (tmp_path / "sbc.yaml").write_text(
        outbound_only.replace("TLS", "tls: {certificate: tls/a.pem}")
    )
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert e.value.field == "node.tls.private_key"


def test_missing_and_mismatched_files_are_refused(tmp_path: Path, certs: Path) -> None:
    e = refused(tmp_path, certs, GOOD.replace("tls/a.pem, private", "tls/none.pem, private"))
    assert (e.line, e.field) == (5, "node.tls.certificate") and "cannot read" in e.message
    e = refused(tmp_path, certs, GOOD.replace("tls/a.key", "tls/b.key"))  # b's key, a's cert
    assert e.field == "node.tls.certificate" and "certificate or key" in e.message
    (tmp_path / "tls" / "junk.pem").write_text("not a certificate\n")
    e = refused(tmp_path, certs, GOOD.replace("ca: tls/a.pem", "ca: tls/junk.pem"))
    assert e.field == "node.tls.ca"


def test_paths_are_made_absolute_and_contexts_follow_the_flags(tmp_path: Path, certs: Path) -> None:
    config = load_config(directory(tmp_path, certs, GOOD))
    tls = config.node.tls
    assert tls is not None and tls.certificate == str(tmp_path / "tls" / "a.pem")
    ctx = tlsctx.Contexts(tls)
    assert ctx.server is not None and ctx.server.verify_mode == ssl.CERT_NONE
    client = ctx.client()
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    mutual = tlsctx.server_context(type(tls)(**{**_fields(tls), "require_client_cert": True}))
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    lax = tlsctx.client_context(type(tls)(**{**_fields(tls), "verify_peer": False}))
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname
    # A reload whose files fail keeps the old contexts and says why.
    broken = type(tls)(**{**_fields(tls), "private_key": str(tmp_path / "tls" / "b.key")})
    assert ctx.apply(broken) != "" and ctx.tls is tls
    assert ctx.apply(tls) == ""


def _fields(tls: object) -> dict[str, object]:
    return {f: getattr(tls, f) for f in tls.__struct_fields__}  # type: ignore[attr-defined]


def test_a_tls_call_leaves_over_tls_and_a_failed_handshake_moves_on(
    tmp_path: Path, certs: Path
) -> None:
    """caller tls:127.0.0.1:40000 -> sbc -> tls:127.0.0.2:5061 (port 0: RFC 3261 §19.1.2),
    whose handshake fails -> tls:127.0.0.3:5071."""
    lab = Lab(load_config(directory(tmp_path, certs, GOOD)))
    caller = Target("tls", "127.0.0.1", 40000)
    data = invite().replace(b"SIP/2.0/UDP 127.0.0.1:5070", b"SIP/2.0/TLS 127.0.0.1:40000")
    out = lab.feed(data, caller)
    first = Target("tls", "127.0.0.2", 5061)
    (b1,) = [m for m, t in out if isinstance(m, Request) and t == first]
    assert str(b1.get("Via")).startswith("SIP/2.0/TLS 127.0.0.1:5061;")
    assert b1.get("Contact") == "<sip:sbc@127.0.0.1:5061;transport=tls>"
    lab.layer.transport_failed(first, lab.now)  # what the pool reports on CERTIFICATE_VERIFY
    out = lab.run()
    second = Target("tls", "127.0.0.3", 5071)
    assert [m.method for m, t in out if isinstance(m, Request) and t == second] == ["INVITE"]


def test_a_sips_contact_in_a_302_is_followed_over_tls(tmp_path: Path, certs: Path) -> None:
    """sips: means TLS whatever else the URI says (RFC 3261 §19.1, §26.2.2), port 5061."""
    lab = Lab(load_config(directory(tmp_path, certs, GOOD)))
    caller = Target("tls", "127.0.0.1", 40000)
    out = lab.feed(invite(), caller)
    first = Target("tls", "127.0.0.2", 5061)
    (b1,) = [m for m, t in out if isinstance(m, Request) and t == first]
    moved = make_response(b1, 302, to_tag="r1", headers=[("Contact", "<sips:1555999@127.0.0.2>")])
    out = lab.feed(moved, first)
    (b2,) = [m for m, t in out if isinstance(m, Request) and m.method == "INVITE" and t == first]
    assert b2.uri.startswith("sips:1555999@127.0.0.2") and b2 is not b1


def test_a_sips_request_over_udp_gets_416_over_tls_a_call_with_a_sips_contact(
    tmp_path: Path, certs: Path
) -> None:
    """carrier --INVITE sips:...(UDP)--> sbc: 416 SIPS Requires TLS (a sips: URI is TLS on
    every hop, RFC 3261 §26.2.2, RFC 5630 §3.1); the same INVITE over TLS is a call, and
    our Contact in its 200 is sips:."""
    lab = Lab(load_config(directory(tmp_path, certs, GOOD)))
    sips = invite().replace(b"INVITE sip:", b"INVITE sips:")
    out = lab.feed(sips, Target("udp", "127.0.0.1", 5070))
    assert [(m.status, m.reason) for m, _ in out if isinstance(m, Response)] == [
        (416, "SIPS Requires TLS")
    ]
    caller = Target("tls", "127.0.0.1", 40000)
    over_tls = sips.replace(b"SIP/2.0/UDP 127.0.0.1:5070", b"SIP/2.0/TLS 127.0.0.1:40000")
    out = lab.feed(over_tls, caller)
    (b_inv,) = [m for m, t in out if isinstance(m, Request) and t.transport == "tls"]
    assert b_inv.method == "INVITE"
    ok = make_response(b_inv, 200, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.2:5061>")])
    out = lab.feed(ok, Target("tls", "127.0.0.2", 5061))
    (a_ok,) = [m for m, t in out if isinstance(m, Response) and t == caller]
    # RFC 3261 §12.1.1: the dialog's request was sips, so is our Contact (RFC 5630 §3.1.3:
    # no transport=tls)
    assert a_ok.status == 200 and a_ok.get("Contact") == "<sips:sbc@127.0.0.1:5061>"
