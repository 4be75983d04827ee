"""The load generator: RouteLead calls over one grpc.aio channel, closed-loop or open-loop.

Closed loop keeps N leads in flight (finds the maximum throughput). Open loop sends at a fixed rate
whatever the answers do, and measures each lead from when it was due, so queueing shows in the
latencies instead of silently slowing the sender down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from hdrh.histogram import HdrHistogram
from routelead.demo.leads import sample_lead
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from benchmarks.scenarios import DEADLINE_MS, PII

# Microseconds, 1 µs to 60 s, 3 significant digits.
_LOWEST, _HIGHEST, _DIGITS = 1, 60_000_000, 3
# An answer later than this breaks the deadline promise.
OVERRUN_MS = DEADLINE_MS + 25
CALL_TIMEOUT_S = 5.0
# Shared by every Leads of this process, so no two phases of a run send the same consumer.
_NUMBERS = itertools.count()
_NOT_PINGED = {pb.SKIPPED_FILTER, pb.SKIPPED_CAP, pb.SKIPPED_SCHEDULE, pb.DUPLICATE_FOR_BUYER}


def histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST, _HIGHEST, _DIGITS)


@dataclass
class Tally:
    """What one phase saw; latencies in µs."""

    e2e: HdrHistogram = field(default_factory=histogram)
    # End-to-end as the client saw it, minus the slowest awaited ping and every post.
    overhead: HdrHistogram = field(default_factory=histogram)
    # The same from the service's own elapsed_ms: the router alone, without the gRPC hop.
    server_overhead: HdrHistogram = field(default_factory=histogram)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    pings: int = 0
    posts: int = 0
    overruns: int = 0
    # Open loop: leads not sent because too many were already in flight (the service fell behind).
    shed: int = 0
    sent: int = 0

    def record(self, e2e_s: float, reply: pb.RouteLeadResponse | None) -> None:
        e2e_us = max(1, int(e2e_s * 1e6))
        self.e2e.record_value(min(e2e_us, _HIGHEST))
        if e2e_s * 1000 > OVERRUN_MS:
            self.overruns += 1
        if reply is None:
            return
        self.ok += 1
        self.outcomes[pb.Outcome.Name(reply.outcome)] += 1
        awaited_ms = 0.0
        slowest_ping = 0.0
        for a in reply.attempts:
            if a.status not in _NOT_PINGED:
                self.pings += 1
            slowest_ping = max(slowest_ping, a.ping_ms)
            if a.post_ms:
                self.posts += 1
                awaited_ms += a.post_ms
        awaited_ms += slowest_ping
        self.overhead.record_value(max(1, int((e2e_s * 1000 - awaited_ms) * 1000)))
        if reply.elapsed_ms:
            self.server_overhead.record_value(max(1, int((reply.elapsed_ms - awaited_ms) * 1000)))


class Leads:
    """Unique sample leads (unique e-mail and phone, so the pre-ping dedupe lets each through)."""

    def __init__(self, seed: int = 11) -> None:
        rng = random.Random(seed)
        self._pool = [sample_lead(rng, n) for n in range(500)]

    def next(self) -> pb.RouteLeadRequest:
        n = next(_NUMBERS)
        fields = dict(self._pool[n % len(self._pool)])
        fields["email"] = f"lead{n}@bench.example.com"
        fields["phone"] = f"5{n % 1_000_000_000:09d}"
        return pb.RouteLeadRequest(flow="solar", source_id="bench", fields=fields)


async def _one(stub: pb_grpc.RouteLeadStub, req: pb.RouteLeadRequest, due: float, tally: Tally) -> None:
    tally.sent += 1
    try:
        reply = await stub.RouteLead(req, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        tally.errors[exc.code().name] += 1
        tally.record(time.perf_counter() - due, None)
        return
    tally.record(time.perf_counter() - due, reply)


class Connections:
    """`n` separate HTTP/2 connections, so `serve --workers N` (SO_REUSEPORT) spreads them over workers."""

    def __init__(self, target: str, n: int) -> None:
        # Without a local subchannel pool, channels with equal arguments share one connection.
        self._channels = [
            grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, n))
        ]
        self.stubs = [pb_grpc.RouteLeadStub(c) for c in self._channels]

    async def __aenter__(self) -> Connections:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in self._channels)), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))


async def closed_loop(
    target: str, concurrency: int, duration_s: float, max_leads: int, connections: int = 1
) -> tuple[Tally, float]:
    """N workers, each sending its next lead when the last one is answered. Returns (tally, seconds)."""
    tally, leads = Tally(), Leads()
    async with Connections(target, connections) as conns:
        start = time.perf_counter()
        stop_at = start + duration_s

        async def worker(stub: pb_grpc.RouteLeadStub) -> None:
            while time.perf_counter() < stop_at and tally.sent < max_leads:
                await _one(stub, leads.next(), time.perf_counter(), tally)

        stubs = conns.stubs
        await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(concurrency)))
        return tally, time.perf_counter() - start


@dataclass
class Inbound:
    """The quote-then-commit phase: each pair end to end in `pairs` (the commit's answer), and
    each call on its own."""

    pairs: Tally = field(default_factory=Tally)
    quote: HdrHistogram = field(default_factory=histogram)
    commit: HdrHistogram = field(default_factory=histogram)


def _us(seconds: float) -> int:
    return min(max(1, int(seconds * 1e6)), _HIGHEST)


async def _quote_then_commit(stub: pb_grpc.RouteLeadStub, req: pb.RouteLeadRequest, t: Inbound) -> None:
    """A supplier's ping-post: its ping fields for a quote, then the full lead for the offer."""
    t.pairs.sent += 1
    ping = {k: v for k, v in req.fields.items() if k not in PII}
    start = time.perf_counter()
    try:
        q = await stub.Quote(
            pb.QuoteRequest(source_id=req.source_id, flow=req.flow, fields=ping), timeout=CALL_TIMEOUT_S
        )
        quoted = time.perf_counter()
        t.quote.record_value(_us(quoted - start))
        if not q.offered:
            t.pairs.ok += 1
            t.pairs.outcomes["NO_OFFER"] += 1
            t.pairs.e2e.record_value(_us(quoted - start))
            return
        reply = await stub.Commit(
            pb.CommitRequest(quote_id=q.quote_id, fields=req.fields), timeout=CALL_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        t.pairs.errors[exc.code().name] += 1
        t.pairs.record(time.perf_counter() - start, None)
        return
    done = time.perf_counter()
    t.commit.record_value(_us(done - quoted))
    t.pairs.record(done - start, reply)


async def quote_commit_loop(
    target: str, concurrency: int, duration_s: float, max_leads: int, connections: int = 1
) -> tuple[Inbound, float]:
    """Closed loop of quote-then-commit pairs: N suppliers, each quoting its next lead when the last
    one is committed. Returns (tallies, seconds)."""
    tally, leads = Inbound(), Leads()
    async with Connections(target, connections) as conns:
        start = time.perf_counter()
        stop_at = start + duration_s

        async def worker(stub: pb_grpc.RouteLeadStub) -> None:
            while time.perf_counter() < stop_at and tally.pairs.sent < max_leads:
                await _quote_then_commit(stub, leads.next(), tally)

        stubs = conns.stubs
        await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(concurrency)))
        return tally, time.perf_counter() - start


async def open_loop(
    target: str, rate: float, duration_s: float, max_in_flight: int = 4000, connections: int = 1
) -> tuple[Tally, float]:
    """Send `rate` leads/s for `duration_s`; latency counts from each lead's due time."""
    tally, leads = Tally(), Leads()
    total = max(1, int(rate * duration_s))
    async with Connections(target, connections) as conns:
        stubs = conns.stubs
        in_flight: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                tally.shed += 1
                continue
            task = asyncio.create_task(_one(stubs[i % len(stubs)], leads.next(), due, tally))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=CALL_TIMEOUT_S + 1)
        return tally, time.perf_counter() - start
