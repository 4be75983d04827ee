"""Prometheus metrics: leads by outcome, per-buyer latency, timeouts, overruns, caps, money.

prometheus-client rather than OpenTelemetry metrics with a Prometheus reader: `serve --workers N`
runs N processes behind one port, and prometheus-client's multiprocess mode (one mmap file per
process under PROMETHEUS_MULTIPROC_DIR, summed at scrape time) is the maintained answer to exactly
that; the OpenTelemetry Prometheus reader exposes one process's view only. The mode is chosen at
import time from that variable, which `serve --workers` sets before anything imports this module.

Labels are configured ids (flow, source, buyer, tier) and enum values: bounded, never lead data.
Money here is a float view for dashboards; the books are the ledger's decimals.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as mp

from routelead.domain.outcome import RoutingResult, Status

# Buyers answer in tens to hundreds of ms; the deadline is 750 ms by default.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 2.0)

LEADS = Counter(
    "routelead_leads", "Leads routed, by flow, source and outcome.", ["flow", "source", "outcome", "test"]
)
LEAD_SECONDS = Histogram(
    "routelead_lead_duration_seconds", "Time to decide one lead.", ["flow"], buckets=_LATENCY_BUCKETS
)
DEADLINE_OVERRUNS = Counter(
    "routelead_deadline_overruns", "Leads whose decision took longer than their deadline.", ["flow"]
)
PING_SECONDS = Histogram(
    "routelead_ping_duration_seconds",
    "Ping round trip per buyer.",
    ["buyer", "tier"],
    buckets=_LATENCY_BUCKETS,
)
POST_SECONDS = Histogram(
    "routelead_post_duration_seconds", "Post round trip per buyer.", ["buyer"], buckets=_LATENCY_BUCKETS
)
ATTEMPTS = Counter("routelead_buyer_attempts", "Attempts by buyer and final status.", ["buyer", "status"])
TIMEOUTS = Counter("routelead_buyer_timeouts", "Pings that got no answer in time.", ["buyer"])
CAP_REJECTIONS = Counter("routelead_cap_rejections", "Buyers skipped because a cap was full.", ["buyer"])
PRICE_DISPUTES = Counter(
    "routelead_price_disputes",
    "Sales booked at the bid while the buyer's post answer stated another price.",
    ["buyer"],
)
REVENUE = Counter("routelead_revenue_dollars", "Revenue booked (sold, non-test leads).", ["flow", "buyer"])
COST = Counter("routelead_cost_dollars", "Source cost booked (non-test leads).", ["flow", "source"])
# Margin can be negative, which a counter cannot express: margin = revenue − cost, as the recording
# rule `routelead:margin_dollars:rate5m` in deploy/ computes; this histogram shows its spread per lead.
MARGIN = Histogram(
    "routelead_lead_margin_dollars",
    "Margin per sold, non-test lead (negative margins land in the first bucket).",
    ["flow"],
    buckets=(0, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
WORKER_RESTARTS = Counter(
    "routelead_worker_restarts", "Worker processes that died and were replaced by the supervisor.", ["role"]
)
AUTH_FAILURES = Counter("routelead_auth_failures", "Calls refused for a missing or wrong token.", ["reason"])


UNSETTLED_MARKED = Counter(
    "routelead_unsettled_marked", "Sales whose post outcome is unknown; their cap slot stays held."
)
SETTLED = Counter("routelead_unsettled_settled", "Unsettled sales closed by hand.", ["how"])
BALANCE_TOPUPS = Counter("routelead_balance_topups", "Prepaid balance top-ups.")
REDIS_ERRORS = Counter("routelead_redis_errors", "Redis calls that failed or timed out.")
REDIS_FALLBACKS = Counter(
    "routelead_redis_fallbacks", "Calls answered locally while Redis was down.", ["what"]
)

BOOKS_HELD = Counter(
    "routelead_books_held",
    "Routed leads whose ledger write failed: held and retried, answered UNAVAILABLE meanwhile.",
)
BOOKS_BOOKED_LATE = Counter("routelead_books_booked_late", "Held leads booked on a later try.")
BOOKS_REFUSED = Counter(
    "routelead_books_refused", "Leads refused before routing because the books refused writes."
)


class PrometheusStateCounters:
    """The hot-state counters (state/ports.py StateCounters) as Prometheus metrics."""

    def marked(self) -> None:
        UNSETTLED_MARKED.inc()

    def settled(self, how: str, n: int) -> None:
        SETTLED.labels(how).inc(n)

    def topped_up(self) -> None:
        BALANCE_TOPUPS.inc()

    def error(self) -> None:
        REDIS_ERRORS.inc()

    def fallback(self, what: str) -> None:
        REDIS_FALLBACKS.labels(what).inc()


class PrometheusBooksCounters:
    """The books guard's counters (records/port.py BooksCounters) as Prometheus metrics."""

    def held(self) -> None:
        BOOKS_HELD.inc()

    def booked_late(self) -> None:
        BOOKS_BOOKED_LATE.inc()

    def refused(self) -> None:
        BOOKS_REFUSED.inc()


def _dollars(x: Decimal) -> float:
    return float(x)


@lru_cache(maxsize=8192)
def _child(metric: Any, *values: str) -> Any:
    # `labels()` validates and locks on every call (~4 µs, ~25 calls per lead); label values are
    # configured ids and enum values, a bounded set, so each child is looked up once.
    return metric.labels(*values)


def record_lead(result: RoutingResult, budget_s: float) -> None:
    """Everything one routed lead says about the system, from its result (called once per lead)."""
    test = "true" if result.test else "false"
    _child(LEADS, result.flow, result.source_id, result.outcome.value, test).inc()
    _child(LEAD_SECONDS, result.flow).observe(result.elapsed_ms / 1000)
    if result.elapsed_ms > budget_s * 1000:
        _child(DEADLINE_OVERRUNS, result.flow).inc()
    for a in result.attempts:
        _child(ATTEMPTS, a.buyer_id, a.status.value).inc()
        if a.ping_ms:
            _child(PING_SECONDS, a.buyer_id, a.tier).observe(a.ping_ms / 1000)
        if a.post_ms:
            _child(POST_SECONDS, a.buyer_id).observe(a.post_ms / 1000)
        if a.status is Status.TIMED_OUT:
            _child(TIMEOUTS, a.buyer_id).inc()
        elif a.status is Status.SKIPPED_CAP:
            _child(CAP_REJECTIONS, a.buyer_id).inc()
    if result.test:
        return
    for sale in result.sales:
        _child(REVENUE, result.flow, sale.buyer_id).inc(_dollars(sale.price))
        if sale.stated_price is not None:
            _child(PRICE_DISPUTES, sale.buyer_id).inc()
    if result.cost:
        _child(COST, result.flow, result.source_id).inc(_dollars(result.cost))
    if result.sales:
        _child(MARGIN, result.flow).observe(_dollars(result.margin))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def serve_metrics(host: str, port: int) -> Any:
    """Serve /metrics over HTTP in a daemon thread; in multiprocess mode, the sum of every worker's
    files. Returns the http server (its `server_port` is the bound port)."""
    registry = REGISTRY
    if multiprocess_dir():
        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def worker_exited(pid: int) -> None:
    """Multiprocess bookkeeping when a worker process is gone."""
    if multiprocess_dir():
        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
