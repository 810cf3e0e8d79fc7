"""CPU per call, and memory per held call, in the pure call path: the controller and the
transaction layer fed a basic ladder (INVITE, 100/180/200 from the vendor, ACK, BYE, 200)
in fake time, no sockets and no sipp, so two trees can be compared in one run with far less
noise than ./lab/bench:

    PYTHONPATH=. .venv/bin/python lab/bench_callpath.py --calls 3000
    PYTHONPATH=. .venv/bin/python lab/bench_callpath.py --held 10000

Run it from each tree's root (its own code is imported) and compare. CPU mode: the rig
parses every message sbc sends, so about half the figure is the rig's; the difference
between two trees is sbc's. Held mode (``--held N``): N calls confirmed (INVITE..200..ACK)
and not hung up, measured with tracemalloc (live bytes / N after gc.collect, and the top
allocation sites by file:line) twice: at once, every transaction still alive (a burst),
and 64*T1 later, once the setup's transactions have ended (what a long call holds); then
every call gets its BYE and what is left is measured (it should be about nothing).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

try:  # the test rig: tests/helpers.py, or tests/unit/test_controller.py in older trees
    from tests.helpers import CALLER, SDP, Lab, invite
except ImportError:  # pragma: no cover
    from tests.unit.test_controller import CALLER, SDP, Lab, invite  # type: ignore[no-redef]

from sbc.sip.message import Request, Response, make_response


def _in_dialog(method: str, n: int, tag: str, cseq: int) -> bytes:
    """The caller's ACK or BYE for call ``n``, whose To tag (ours) is ``tag``."""
    return (
        f"{method} sip:sbc@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method[0].lower()}{n};rport\r\n"
        "From: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
        f"To: <sip:15551230000@127.0.0.1>;tag={tag}\r\nCall-ID: c{n}@10.1.1.1\r\n"
        f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def set_up(lab: Lab, n: int) -> str:
    """Call ``n`` from INVITE to the caller's ACK; our To tag on the caller's leg."""
    out = lab.feed(invite(branch=f"z9hG4bKb{n}").replace(b"a-leg-1@", f"c{n}@".encode()), CALLER)
    b_inv, vendor = next((m, t) for m, t in out if t != CALLER and isinstance(m, Request))
    lab.feed(make_response(b_inv, 100), vendor)
    lab.feed(make_response(b_inv, 180, to_tag="v"), vendor)
    ok = make_response(
        b_inv, 200, to_tag="v", headers=[("Contact", f"<sip:v@127.0.0.1:{vendor.port}>")], body=SDP
    )
    out = lab.feed(ok, vendor)
    a_ok = next(m for m, t in out if t == CALLER and isinstance(m, Response) and m.status == 200)
    tag = a_ok.to.tag
    assert tag is not None
    lab.feed(_in_dialog("ACK", n, tag, 1), CALLER)
    return tag


def hang_up(lab: Lab, n: int, tag: str) -> None:
    """The caller's BYE for call ``n``, and the vendor's 200 to ours."""
    out = lab.feed(_in_dialog("BYE", n, tag, 2), CALLER)
    b_bye, vendor = next((m, t) for m, t in out if t != CALLER and isinstance(m, Request))
    lab.feed(make_response(b_bye, 200), vendor)


def one_call(lab: Lab, n: int) -> None:
    hang_up(lab, n, set_up(lab, n))
    lab.advance(0.01)


def cpu(calls: int, rounds: int) -> None:
    best = float("inf")
    for _ in range(rounds):
        lab = Lab()
        for n in range(200):  # warm up
            one_call(lab, n)
        t0 = time.process_time()
        for n in range(calls):
            one_call(lab, 1000 + n)
        best = min(best, (time.process_time() - t0) / calls)
    print(f"{best * 1e6:.0f} us of CPU per call (best of {rounds} x {calls} calls)")


def _drain(lab: Lab) -> None:
    """What the runtime does after each event: log the notices, write the records."""
    lab.ctrl.pop_notices()
    lab.ctrl.pop_cdrs()
    lab.ng.clear()
    lab.notified.clear()


def _report(what: str, n: int, top: int) -> None:
    gc.collect()
    current = tracemalloc.get_traced_memory()[0]
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )
    print(f"\n{what}: {current / n:.0f} B per call ({current / 1024:.0f} KiB for {n} calls)")
    for stat in snap.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        name = frame.filename.split("/sbc/", 1)[-1] if "/sbc/" in frame.filename else frame.filename
        print(f"  {stat.size / n:7.0f} B {stat.count / n:6.2f} blocks  {name}:{frame.lineno}")


def held(n: int, top: int) -> None:
    lab = Lab()
    for i in range(200):  # warm up: first-use caches, counters, the stats windows
        one_call(lab, i)
        _drain(lab)
    lab.advance(100.0)
    _drain(lab)
    gc.collect()
    tracemalloc.start()
    for i in range(n):
        set_up(lab, 10_000 + i)
        _drain(lab)
    # The rig keeps nothing per call; tags are read back from the calls when hanging up.
    assert len(lab.ctrl.calls) == n
    _report(f"{n} held calls, just set up (every transaction alive)", n, top)
    lab.advance(64 * lab.layer.timers.t1 + 8)  # Timers L, M, B, D, K ran out
    _drain(lab)
    _report(f"{n} held calls, 64*T1 later (the setup's transactions ended)", n, top)
    tags = {c.a_dialog.call_id: c.a_dialog.local_tag for c in lab.ctrl.calls.values()}
    for i in range(n):
        hang_up(lab, 10_000 + i, tags.pop(f"c{10_000 + i}@10.1.1.1"))
        _drain(lab)
    lab.advance(64 * lab.layer.timers.t1 + 8)  # the BYEs' transactions end (Timers J, K)
    _drain(lab)
    assert not lab.ctrl.calls and lab.layer.counts == (0, 0), lab.layer.counts
    _report("after every call ended", n, top)
    tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--held", type=int, default=0, help="measure N held calls instead")
    parser.add_argument("--top", type=int, default=15, help="allocation sites listed")
    args = parser.parse_args()
    if args.held:
        held(args.held, args.top)
    else:
        cpu(args.calls, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
