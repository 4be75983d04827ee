"""The auction machine's own CPU per lead: `python -m benchmarks.machine_cost [LEADS]`.

One tier of N buyers (10, then 30), every one bidding a different price, the best accepting its
post; the replies are built as the driver builds them. Pure: no I/O, no spans, no books; best of
five rounds, in µs per lead. `--profile` adds the 30-buyer run's cProfile (top 15 by own time).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

from routelead.domain.auction import (
    Auction,
    AuctionSpec,
    Bidder,
    Done,
    Ping,
    PingReply,
    PostReply,
    Seat,
    TierSpec,
)
from routelead.domain.rules import Facts


def spec(buyers: int) -> AuctionSpec:
    seats = tuple(Seat(Bidder(f"b{i}")) for i in range(buyers))
    now = datetime.now(UTC)
    facts = Facts({"state": "CA", "zip": "90210"}, 0.0, now, {})
    return AuctionSpec((TierSpec("t1", seats),), facts, now, ping_end=1e12, deadline=1e12)


def one(s: AuctionSpec) -> Done:
    machine = Auction(s, 0.0)
    action = machine.action
    while not isinstance(action, Done):
        if isinstance(action, Ping):
            action = machine.send(1.0, {i: PingReply("bid", "", Decimal(10 + i)) for i in action.seats})
        else:
            action = machine.send(2.0, {o.seat: PostReply("accepted", "", None, "X") for o in action.orders})
    return action


def main(leads: int, profile: bool) -> None:
    for buyers in (10, 30):
        s = spec(buyers)
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(leads):
                one(s)
            best = min(best, (time.process_time() - t0) / leads * 1e6)
        print(f"{buyers} buyers: {best:.1f} µs of CPU per lead (the machine alone)")
    if profile:
        s = spec(30)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(leads):
            one(s)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--profile"]
    main(int(args[0]) if args else 2000, "--profile" in sys.argv)
