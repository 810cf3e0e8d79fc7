"""Media, pure: bencode, profiles compiled to ng flags, rtpengine's counters, and the call
controller's ng commands in order, with a hand-driven rtpengine (fake time, no sockets).

The early-offer ladder these tests walk (ng commands in brackets):

    caller            sbc                         vendor
      |--INVITE(sdp)--->|  [offer from-tag=caller1 via-branch=<call>.1]
      |<--100-----------|--INVITE(rtpengine sdp)---->|
      |                 |<-----------------503-------|   [delete via-branch=<call>.1]
      |                 |  [offer via-branch=<call>.2]
      |                 |--INVITE(rtpengine sdp)---->|
      |                 |<-----------------200(sdp)--|   [answer to-tag=v2]
      |<--200(sdp')-----|                            |
      |--BYE----------->|--BYE---------------------->|   [delete] -> call.end media
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media import bencode, ng, sdp
from media.ng import MediaCommand, Side
from sbc.config.loader import load_config
from sbc.config.schema import Codecs, MediaConfig, MediaProfile, RtpEngineNode
from sbc.config.snapshot import Snapshot
from sbc.sip.message import Request, Response, make_response
from tests.helpers import CALLER, SDP, V1, V2, Lab, invite, only, request, sample

REWRITTEN = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 41000 RTP/AVP 0\r\n"


# --- bencode ----------------------------------------------------------------------------------


def test_bencode_round_trip_sorts_keys_and_keeps_bytes() -> None:
    data = bencode.encode({"sdp": b"v=0\r\n", "command": "offer", "n": -3, "flags": ["a", "b"]})
    assert data == b"d7:command5:offer5:flagsl1:a1:be1:ni-3e3:sdp5:v=0\r\ne"
    assert bencode.decode(data) == {
        b"command": b"offer",
        b"flags": [b"a", b"b"],
        b"n": -3,
        b"sdp": b"v=0\r\n",
    }


@pytest.mark.parametrize(
    "bad", [b"", b"d", b"i12", b"5:abc", b"d1:ae", b"di1ei2ee", b"x", b"i1ei2e", b"l" * 100]
)
def test_bencode_rejects_what_is_not_one_value(bad: bytes) -> None:
    with pytest.raises(bencode.BencodeError):
        bencode.decode(bad)


@given(st.binary(max_size=200))
def test_bencode_decode_raises_only_bencode_error(data: bytes) -> None:
    with contextlib.suppress(bencode.BencodeError):
        bencode.decode(data)


# --- profiles to flags ------------------------------------------------------------------------


def profile(**kw: Any) -> MediaProfile:
    return MediaProfile(name="p", **kw)


def test_codec_filtering_keeps_only_what_both_sides_allow_plus_dtmf() -> None:
    a = Side(profile(codecs=Codecs(allow=["PCMU", "PCMA", "G729"])))
    b = Side(profile(codecs=Codecs(allow=["pcma", "PCMU"])))
    flags = ng.offer_flags(a, b, ["PCMU", "G729"])
    assert flags["codec"] == {"strip": ["all"], "except": ["PCMU", "PCMA", "telephone-event", "CN"]}
    assert flags["ICE"] == "remove" and flags["transport-protocol"] == "RTP/AVP"
    assert "codec" not in ng.offer_flags(Side(profile()), Side(None), ["PCMU"])


def test_transcoding_offers_allowed_codecs_the_caller_lacks() -> None:
    a = Side(profile())
    b = Side(profile(codecs=Codecs(allow=["G722", "PCMU"]), transcoding=True))
    assert ng.offer_flags(a, b, ["PCMU", "PCMA"])["codec"]["transcode"] == ["G722"]


def test_srtp_toward_one_side_and_nat_uses_the_sip_source() -> None:
    a = Side(profile(), nat_source="203.0.113.7")
    b = Side(profile(srtp=True))
    to_b = ng.offer_flags(a, b, [])
    assert to_b["transport-protocol"] == "RTP/SAVP" and to_b["DTLS"] == "off"
    assert to_b["SDES"] == ["only-AES_CM_128_HMAC_SHA1_80", "only-AES_CM_128_HMAC_SHA1_32"]
    assert to_b["flags"] == ["SIP-source-address"]
    assert to_b["received-from"] == ["IP4", "203.0.113.7"]
    to_a = ng.answer_flags(b, a)
    assert to_a["transport-protocol"] == "RTP/AVP" and "flags" not in to_a
    assert not ng.anchored(Side(None), Side(profile(anchoring=False)))
    assert ng.anchored(Side(None), Side(profile()))


def test_stats_reads_totals_and_packets_per_leg() -> None:
    stream = {b"flags": [b"RTP"], b"stats": {b"packets": 50, b"bytes": 8600}}
    rtcp = {b"flags": [b"RTCP"], b"stats": {b"packets": 2, b"bytes": 100}}
    reply = {
        b"result": b"ok",
        b"totals": {b"RTP": {b"packets": 90, b"bytes": 15480, b"errors": 1}},
        b"tags": {
            b"caller1": {b"tag": b"caller1", b"medias": [{b"streams": [stream, rtcp]}]},
            b"v2": {b"tag": b"v2", b"medias": [{b"streams": [{**stream, b"stats": {}}]}]},
        },
        b"SSRC": {b"1": {b"packets lost": 3}},
    }
    st_ = ng.stats(reply)
    assert (st_.packets, st_.bytes, st_.errors, st_.lost) == (90, 15480, 1, 3)
    assert st_.by_tag == (("caller1", 50, 8600), ("v2", 0, 0))
    assert ng.stats({b"result": b"ok"}) == ng.MediaStats()


def test_sdp_helpers() -> None:
    body = b"v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 4000 RTP/AVP 0 18\r\na=rtpmap:18 G729/8000\r\n"
    assert sdp.connection_ip(body) == "10.0.0.9"
    assert sdp.codecs(body) == ["G729", "PCMU"]  # PCMU by its static payload type 0


# --- the controller drives rtpengine ----------------------------------------------------------


def media_lab(on_failure: str = "reject") -> Lab:
    config = load_config("config/lab")
    node = msgspec.structs.replace(
        config.node,
        rtpengine=[RtpEngineNode()],
        media=MediaConfig(on_failure=on_failure),  # type: ignore[arg-type]
    )
    tgs = [
        msgspec.structs.replace(tg, media_profile="anchored", hunting="failover")
        for tg in config.trunk_groups
    ]
    profiles = [MediaProfile(name="anchored", codecs=Codecs(allow=["PCMU"]))]
    return Lab(
        msgspec.structs.replace(config, node=node, trunk_groups=tgs, media_profiles=profiles)
    )


def reply(
    lab: Lab, body: bytes | None = REWRITTEN, extra: dict[bytes, Any] | None = None
) -> MediaCommand:
    """Answer the oldest ng command in flight as rtpengine would (None: nobody answered)."""
    cmd = lab.ng.pop(0)
    answer: dict[bytes, Any] | None = None
    if body is not None:
        answer = {b"result": b"ok", b"sdp": body, **(extra or {})}
    lab.ctrl.on_media(cmd.token, answer, lab.now)
    return cmd


def run(lab: Lab) -> list[tuple[Request | Response, Any]]:
    return lab.run()


def ok_with_sdp(req: Request, tag: str) -> Response:
    resp = make_response(
        req, 200, to_tag=tag, headers=[("Contact", "<sip:v@127.0.0.1:5081>")], body=SDP
    )
    resp.headers.append(("Content-Type", "application/sdp"))
    return resp


def test_offer_rewrites_the_b_leg_and_a_failed_attempt_deletes_only_its_branch() -> None:
    lab = media_lab()
    out = lab.feed(invite(), CALLER)
    assert [m.status for m in only(out, CALLER)] == [100]  # type: ignore[union-attr]
    assert only(out, V1) == []  # no INVITE before rtpengine has rewritten the offer
    offer = reply(lab)
    call_id = offer.call
    assert offer.cmd["command"] == "offer" and offer.cmd["from-tag"] == "caller1"
    assert offer.cmd["via-branch"] == f"{call_id}.1" and offer.cmd["sdp"] == SDP
    assert offer.cmd["codec"]["except"][0] == "PCMU"
    (b1,) = only(run(lab), V1)
    assert isinstance(b1, Request) and b1.body == REWRITTEN

    out = lab.feed(make_response(b1, 503, to_tag="v1"), V1)
    # The failed branch is deleted only once the next one exists: rtpengine deletes the whole
    # call with its last branch, and a delete racing the next offer would take that one too.
    (offer2,) = lab.ng
    assert offer2.cmd["command"] == "offer" and offer2.cmd["via-branch"] == f"{call_id}.2"
    reply(lab)
    (b2,) = only(run(lab), V2)  # nothing waits on the branch delete's reply
    assert isinstance(b2, Request)
    (delete,) = lab.ng
    assert delete.cmd == {
        "command": "delete",
        "call-id": call_id,
        "from-tag": "caller1",
        "delete-delay": 0,
        "via-branch": f"{call_id}.1",
    }
    reply(lab, b"")

    out = lab.feed(ok_with_sdp(b2, "v2"), V2)
    assert only(out, CALLER) == []  # the 200 waits for rtpengine's answer
    answer = reply(lab, b"v=0\r\nm=audio 41002 RTP/AVP 0\r\n")
    assert answer.cmd["command"] == "answer" and answer.cmd["to-tag"] == "v2"
    assert answer.cmd["sdp"] == SDP
    (a_ok,) = only(run(lab), CALLER)
    assert isinstance(a_ok, Response) and a_ok.status == 200 and b"41002" in a_ok.body

    bye = (
        invite()
        .replace(b"INVITE sip:", b"BYE sip:")
        .replace(
            b"To: <sip:15551230000@127.0.0.1>", f"To: <sip:x@127.0.0.1>;tag={a_ok.to.tag}".encode()
        )
        .replace(b"CSeq: 1 INVITE", b"CSeq: 2 BYE")
        .replace(b"z9hG4bKa1", b"z9hG4bKbye")
    )
    out = lab.feed(bye, CALLER)
    (b_bye,) = only(out, V1)  # the vendor's Contact
    lab.feed(make_response(b_bye, 200), V1)  # type: ignore[arg-type]
    assert lab.events("call.end") == []  # the record waits for rtpengine's counters
    final = reply(
        lab,
        b"",
        {
            b"totals": {b"RTP": {b"packets": 10, b"bytes": 1720}},
            b"tags": {b"caller1": {b"tag": b"caller1", b"medias": []}},
        },
    )
    assert final.cmd["command"] == "delete" and "via-branch" not in final.cmd
    run(lab)
    (end,) = lab.events("call.end")
    assert end["media"]["packets"] == 10 and end["media"]["legs"] == {  # type: ignore[index]
        "a": {"packets": 0, "bytes": 0}
    }
    assert lab.ctrl.calls == {}


def test_when_the_hunt_ends_one_whole_call_delete_frees_every_branch() -> None:
    lab = media_lab()
    lab.feed(invite(), CALLER)
    reply(lab)
    (b1,) = only(run(lab), V1)
    lab.feed(make_response(b1, 503, to_tag="v1"), V1)
    reply(lab)  # the second attempt's offer
    (b2,) = only(run(lab), V2)
    stale = lab.ng.pop(0)  # the first branch, deleted now the second exists
    assert stale.cmd["via-branch"].endswith(".1")
    out = lab.feed(make_response(b2, 503, to_tag="v2"), V2)  # type: ignore[arg-type]
    # the last branch is not deleted on its own: the call's delete follows the caller's 503
    (final,) = lab.ng
    assert final.cmd["command"] == "delete" and "via-branch" not in final.cmd
    assert [m.status for m in only(out, CALLER)] == [503]  # type: ignore[union-attr]
    reply(lab, b"")
    # rtpengine ran the call's delete first: the branch's is then for an unknown call, which
    # is no media failure
    error = {b"result": b"error", b"error-reason": b"Unknown call-id"}
    lab.ctrl.on_media(stale.token, error, lab.now)
    run(lab)
    events = [n.event for n in lab.ctrl.pop_notices()]
    assert "media.failed" not in events and not lab.ctrl.media.failures
    assert events.count("call.end") == 1 and lab.ctrl.calls == {}


def test_a_180_never_overtakes_the_183_whose_sdp_is_being_rewritten() -> None:
    lab = media_lab()
    lab.feed(invite(), CALLER)
    reply(lab)
    (b1,) = only(run(lab), V1)
    assert isinstance(b1, Request)
    early = make_response(b1, 183, to_tag="v1", body=SDP)
    out = lab.feed(early, V1)
    out += lab.feed(make_response(b1, 180, to_tag="v1"), V1)
    assert only(out, CALLER) == []
    reply(lab)
    assert [m.status for m in only(run(lab), CALLER)] == [183, 180]  # type: ignore[union-attr]


@pytest.mark.parametrize(("policy", "status"), [("reject", 503), ("unanchored", None)])
def test_no_rtpengine_rejects_or_passes_sdp_untouched(policy: str, status: int | None) -> None:
    lab = media_lab(policy)
    lab.feed(invite(), CALLER)
    reply(lab, None)
    out = run(lab)
    if status is not None:
        assert [m.status for m in only(out, CALLER)] == [status]  # type: ignore[union-attr]
        assert only(out, V1) == []
        assert lab.events("call.end")[0]["status"] == 503
    else:
        (b1,) = only(out, V1)
        assert isinstance(b1, Request) and b1.body == SDP  # the caller's own offer
        out = lab.feed(ok_with_sdp(b1, "v1"), V1)
        assert lab.ng == [] and [m.status for m in only(out, CALLER)] == [200]  # type: ignore[union-attr]
    assert lab.ctrl.media.failures["unavailable"] == 1
    assert sample(lab.scrape(), "sbc_media_failures_total", reason="unavailable") == 1


def test_reject_when_the_answer_fails_hangs_up_the_vendor_and_fails_the_caller() -> None:
    """The vendor answered, rtpengine did not answer our answer: the caller never saw a
    2xx, so it gets 503; the vendor's dialog is confirmed (ACK) and hung up (BYE)."""
    lab = media_lab("reject")
    lab.feed(invite(), CALLER)
    reply(lab)
    (b1,) = only(run(lab), V1)
    assert isinstance(b1, Request)
    out = lab.feed(ok_with_sdp(b1, "v1"), V1)
    assert [m.method for m in only(out, V1)] == ["ACK"]  # type: ignore[union-attr]
    reply(lab, None)
    out = run(lab)
    assert [m.status for m in only(out, CALLER)] == [503]  # type: ignore[union-attr]
    assert [m.method for m in only(out, V1)] == ["BYE"]  # type: ignore[union-attr]


def watched_call(rtp_timeout: int) -> tuple[Lab, str]:
    """An anchored call with node.media.rtp_timeout, answered and ACKed; its ng call-id."""
    lab = media_lab()
    snap = lab.ctrl.snapshot
    node = msgspec.structs.replace(
        snap.config.node,
        media=msgspec.structs.replace(snap.config.node.media, rtp_timeout=rtp_timeout),
    )
    lab.ctrl.snapshot = Snapshot.build(msgspec.structs.replace(snap.config, node=node))
    lab.feed(invite(), CALLER)
    call_id = reply(lab).call  # the offer
    (b1,) = only(run(lab), V1)
    assert isinstance(b1, Request)
    lab.feed(ok_with_sdp(b1, "v1"), V1)
    reply(lab)  # the answer
    (a_ok,) = [m for m in run(lab) if isinstance(m[0], Response) and m[0].status == 200]
    ack = request("ACK", "a-leg-1@10.1.1.1", "caller1", a_ok[0].to.tag, 1, CALLER)
    lab.feed(ack, CALLER)
    return lab, call_id


def test_rtp_timeout_ends_a_call_whose_media_stopped() -> None:
    """rtp_timeout 30 s: a query at 30 s after the answer sees a packet 10 s ago (the next
    look is 20 s on); at 50 s the last packet is 30 s old: BYE both legs, media_timeout."""
    lab, call_id = watched_call(30)
    assert lab.ng == []
    lab.advance(30.0)
    (query,) = lab.ng
    assert query.cmd == {"command": "query", "call-id": call_id, "from-tag": "caller1"}
    recent = lab.now + lab.ctrl.wall_offset - 10
    stream = {b"last packet": int(recent), b"flags": [b"RTP"]}
    lab.ctrl.on_media(
        lab.ng.pop(0).token,
        {b"result": b"ok", b"tags": {b"caller1": {b"medias": [{b"streams": [stream]}]}}},
        lab.now,
    )
    assert lab.run() == [] and lab.ng == []
    lab.advance(19.0)
    assert lab.ng == []
    lab.advance(1.5)
    assert [c.cmd["command"] for c in lab.ng] == ["query"]
    lab.ctrl.on_media(
        lab.ng.pop(0).token,
        {b"result": b"ok", b"tags": {b"caller1": {b"medias": [{b"streams": [stream]}]}}},
        lab.now,
    )
    byes = [t for m, t in lab.run() if isinstance(m, Request) and m.method == "BYE"]
    assert sorted(byes, key=str) == [CALLER, V1]
    (call,) = lab.ctrl.calls.values()
    assert call.reason == "media_timeout" and call.hangup == "sbc"


def test_a_call_rtpengine_dropped_ends_and_an_absent_rtpengine_ends_none() -> None:
    lab, _ = watched_call(30)
    lab.advance(30.0)
    lab.ctrl.on_media(lab.ng.pop(0).token, None, lab.now)  # no node answered
    assert lab.run() == []
    lab.advance(30.0)
    gone = {b"result": b"error", b"error-reason": b"Unknown call-id"}
    lab.ctrl.on_media(lab.ng.pop(0).token, gone, lab.now)
    assert len([m for m, _ in lab.run() if isinstance(m, Request) and m.method == "BYE"]) == 2


def test_an_update_with_an_offer_before_the_answer_goes_through_the_attempts_branch() -> None:
    """RFC 3311 §5 on an anchored attempt: the early UPDATE's offer and its answer are
    rewritten on that attempt's rtpengine branch, both ways.

    caller              sbc                              vendor
      |                   |<--183(sdp, tag v1)-------------|  [answer to-tag=v1]
      |<--183(sdp')-------|                                |
      |--UPDATE(sdp)----->|  [offer caller1->v1 .1]        |
      |                   |--UPDATE(sdp')----------------->|
      |                   |<--------------------200(sdp)---|  [answer caller1<-v1 .1]
      |<--200(sdp')-------|                                |
      |                   |<--UPDATE(sdp)------------------|  [offer v1->caller1 .1]
      |<--UPDATE(sdp')----|                                |
      |--200(sdp)-------->|  [answer v1<-caller1 .1]       |
      |                   |--200(sdp')-------------------->|
    """
    lab = media_lab()
    lab.feed(invite(), CALLER)
    branch = reply(lab).cmd["via-branch"]
    (b1,) = only(run(lab), V1)
    assert isinstance(b1, Request)
    early = make_response(
        b1, 183, to_tag="v1", headers=[("Contact", "<sip:v@127.0.0.1:5081>")], body=SDP
    )
    lab.feed(early, V1)
    reply(lab)
    (a183,) = only(run(lab), CALLER)
    assert isinstance(a183, Response) and a183.status == 183

    update = request("UPDATE", "a-leg-1@10.1.1.1", "caller1", a183.to.tag, 2, CALLER, body=SDP)
    assert only(lab.feed(update, CALLER), V1) == []  # waits for rtpengine
    offer = reply(lab, b"v=0\r\nm=audio 41010 RTP/AVP 0\r\n").cmd
    assert (offer["command"], offer["from-tag"], offer["to-tag"]) == ("offer", "caller1", "v1")
    assert offer["via-branch"] == branch
    (b_update,) = only(run(lab), V1)
    assert isinstance(b_update, Request) and b_update.method == "UPDATE"
    assert b_update.to.tag == "v1" and b"41010" in b_update.body
    lab.feed(ok_with_sdp(b_update, "v1"), V1)
    answer = reply(lab, b"v=0\r\nm=audio 41012 RTP/AVP 0\r\n").cmd
    assert (answer["command"], answer["from-tag"], answer["to-tag"]) == ("answer", "caller1", "v1")
    assert answer["via-branch"] == branch
    (a_ok,) = only(run(lab), CALLER)
    assert isinstance(a_ok, Response) and a_ok.status == 200 and b"41012" in a_ok.body

    theirs = request("UPDATE", b1.call_id, "v1", b1.from_.tag, 1, V1, body=SDP)
    lab.feed(theirs, V1)
    offer = reply(lab, b"v=0\r\nm=audio 41014 RTP/AVP 0\r\n").cmd
    assert (offer["from-tag"], offer["to-tag"], offer["via-branch"]) == ("v1", "caller1", branch)
    (a_update,) = only(run(lab), CALLER)
    assert isinstance(a_update, Request) and b"41014" in a_update.body
    lab.feed(ok_with_sdp(a_update, "caller1"), CALLER)
    answer = reply(lab, b"v=0\r\nm=audio 41016 RTP/AVP 0\r\n").cmd
    assert (answer["command"], answer["from-tag"], answer["to-tag"]) == ("answer", "v1", "caller1")
    (b_ok,) = only(run(lab), V1)
    assert isinstance(b_ok, Response) and b_ok.status == 200 and b"41016" in b_ok.body


def test_an_early_update_rtpengine_cannot_rewrite_gets_503_and_the_call_goes_on() -> None:
    lab = media_lab("unanchored")
    lab.feed(invite(), CALLER)
    reply(lab)
    (b1,) = only(run(lab), V1)
    assert isinstance(b1, Request)
    lab.feed(make_response(b1, 183, to_tag="v1", body=SDP), V1)
    reply(lab)
    (a183,) = only(run(lab), CALLER)
    assert isinstance(a183, Response)
    update = request("UPDATE", "a-leg-1@10.1.1.1", "caller1", a183.to.tag, 2, CALLER, body=SDP)
    lab.feed(update, CALLER)
    reply(lab, None)  # no rtpengine answered
    out = run(lab)
    assert only(out, V1) == []
    assert [m.status for m in only(out, CALLER)] == [503]  # type: ignore[union-attr]
    lab.feed(ok_with_sdp(b1, "v1"), V1)  # the vendor answers: the call is up as before
    assert reply(lab).cmd["command"] == "answer"
    assert [m.status for m in only(run(lab), CALLER)] == [200]  # type: ignore[union-attr]
