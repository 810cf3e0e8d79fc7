"""CPU per call in the pure call path: the controller and the transaction layer fed a basic
ladder (INVITE, 100/180/200 from the vendor, ACK, BYE, 200) in fake time, no sockets and no
sipp, so two trees can be compared in one run with far less noise than ./lab/bench:

    PYTHONPATH=. .venv/bin/python lab/bench_callpath.py --calls 3000

Run it from each tree's root (its own code is imported) and compare the microseconds. The
rig parses every message sbc sends, so about half the figure is the rig's; the difference
between two trees is sbc's.
"""

from __future__ import annotations

import argparse
import sys
import time

try:  # the test rig: tests/helpers.py, or tests/unit/test_controller.py in older trees
    from tests.helpers import CALLER, SDP, Lab, invite
except ImportError:  # pragma: no cover
    from tests.unit.test_controller import CALLER, SDP, Lab, invite  # type: ignore[no-redef]

from sbc.sip.message import Request, Response, make_response


def one_call(lab: Lab, n: int) -> None:
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
    via = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{}" + f"{n};rport\r\n"
    head = (
        f"sip:sbc@127.0.0.1:5060 SIP/2.0\r\n{via}"
        "From: <sip:15550001000@10.1.1.1>;tag=caller1\r\n"
        f"To: <sip:15551230000@127.0.0.1>;tag={tag}\r\nCall-ID: c{n}@10.1.1.1\r\n"
    )
    lab.feed(
        ("ACK " + head.format("a") + "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode(), CALLER
    )
    out = lab.feed(
        ("BYE " + head.format("y") + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode(), CALLER
    )
    b_bye = next(m for m, t in out if t == vendor and isinstance(m, Request))
    lab.feed(make_response(b_bye, 200), vendor)
    lab.advance(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best = float("inf")
    for _ in range(args.rounds):
        lab = Lab()
        for n in range(200):  # warm up
            one_call(lab, n)
        t0 = time.process_time()
        for n in range(args.calls):
            one_call(lab, 1000 + n)
        best = min(best, (time.process_time() - t0) / args.calls)
    print(f"{best * 1e6:.0f} us of CPU per call (best of {args.rounds} x {args.calls} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
