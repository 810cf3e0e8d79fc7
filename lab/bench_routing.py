"""Routeplan lookup speed with 100,000 prefixes: select() against baselines in the same run.

    .venv/bin/python lab/bench_routing.py [--prefixes 100000] [--lookups 200000]

Prints lookups per second for: a bare dict hit (the floor any index pays), select() over the
compiled routeplan (PrefixIndex: one dict probe per distinct prefix length), and a linear
scan over the routes (what an index avoids; measured on fewer lookups, it is slow). Compare
the ratios, not the absolute numbers: the machines are shared.
"""

from __future__ import annotations

import argparse
import random
import time

import msgspec

from routing.select import CompiledPlan, select
from sbc.config.schema import RoutePlan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    args = ap.parse_args()
    rnd = random.Random(7)
    prefixes: set[str] = set()
    while len(prefixes) < args.prefixes:  # distinct prefixes of 3 to 10 digits, all "1..."
        prefixes.add("1" + str(rnd.randrange(10**9)).zfill(9)[: rnd.randint(2, 9)])
    routes = [{"prefix": p, "trunk_groups": ["tg" + p[-1]]} for p in sorted(prefixes)]
    routes.append({"prefix": "", "trunk_groups": ["default"]})
    plan = CompiledPlan(msgspec.convert({"name": "big", "routes": routes}, RoutePlan))
    numbers = ["1" + str(rnd.randrange(10**10)).zfill(10) for _ in range(args.lookups)]
    table = {n: 1 for n in numbers}

    t = time.perf_counter()
    for n in numbers:
        table.get(n)
    dict_rate = len(numbers) / (time.perf_counter() - t)

    t = time.perf_counter()
    for n in numbers:
        select(plan, "15550001000", n, "", 0.0)
    select_rate = len(numbers) / (time.perf_counter() - t)

    few = numbers[:200]
    ordered = sorted(plan.plan.routes, key=lambda r: -len(r.prefix))
    t = time.perf_counter()
    for n in few:
        next(r for r in ordered if n.startswith(r.prefix))
    scan_rate = len(few) / (time.perf_counter() - t)

    print(f"{len(plan.routes)} prefixes, {len(numbers)} lookups")
    print(f"dict hit         {dict_rate:>12,.0f} /s   1.00")
    print(
        f"select()         {select_rate:>12,.0f} /s   {select_rate / dict_rate:.3f} of a dict hit"
    )
    print(f"linear scan      {scan_rate:>12,.0f} /s   {scan_rate / dict_rate:.5f} of a dict hit")
    print(f"select() is {select_rate / scan_rate:,.0f}x a scan")


if __name__ == "__main__":
    main()
