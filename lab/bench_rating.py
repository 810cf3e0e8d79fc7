"""Rate lookup speed among 1,000,000 codes: RateDeck.lookup against a dict hit, same run.

    .venv/bin/python lab/bench_rating.py [--codes 1000000] [--lookups 200000]

Builds a deck of distinct codes of 1 to 12 digits (as a CSV, parsed by the loader's own
routing.ratedeck.parse, timed too), then times per lookup: a bare dict hit on the full
number (the floor any index pays), the deck's longest-prefix lookup at a setup time, and a
whole call's rating (lookup, 60/6 increments, Decimal rounding). Compare the ratios, not
the absolute numbers: the machines are shared.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

from routing.ratedeck import Columns, parse
from routing.rating import Tariff, rate_call


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codes", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    args = ap.parse_args()
    rnd = random.Random(7)
    codes: set[str] = set()
    while len(codes) < args.codes:
        codes.add(str(rnd.randrange(1, 10**12))[: rnd.randint(1, 12)])
    rates = [f"0.{rnd.randrange(1, 500):04d}" for _ in range(64)]
    text = "prefix,rate,effective,description\n" + "".join(
        f"{c},{rates[i % 64]},,dest{i % 300}\n" for i, c in enumerate(codes)
    )
    t = time.perf_counter()
    deck = parse("bench", "bench.csv", text, Columns(), 0.0)
    parsed = time.perf_counter() - t
    numbers = [str(rnd.randrange(10**10, 10**12)) for _ in range(args.lookups)]
    table = {n: 1 for n in numbers}

    t = time.perf_counter()
    for n in numbers:
        table.get(n)
    dict_s = (time.perf_counter() - t) / len(numbers)

    lookup = deck.lookup
    t = time.perf_counter()
    found = sum(1 for n in numbers if lookup(n, 1e9) is not None)
    lookup_s = (time.perf_counter() - t) / len(numbers)

    tariff = Tariff(deck, "USD", 4, 60, 6, False)
    t = time.perf_counter()
    for n in numbers:
        rate_call(tariff, n, 1e9, 61.0)
    rated_s = (time.perf_counter() - t) / len(numbers)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"deck: {len(deck.codes):,} codes, longest {deck.max_len} digits; parsed in {parsed:.1f} s"
    )
    print(f"max RSS {rss_mb:.0f} MB (CSV text and the deck)")
    print(f"dict hit:          {dict_s * 1e9:8.0f} ns per lookup")
    print(
        f"deck.lookup:       {lookup_s * 1e9:8.0f} ns per lookup "
        f"({lookup_s / dict_s:.1f} x a dict hit; {found / len(numbers):.0%} matched)"
    )
    print(f"rate_call (60/6):  {rated_s * 1e9:8.0f} ns per call rated")


if __name__ == "__main__":
    main()
