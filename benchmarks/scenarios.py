"""Scenarios (pure data): how many buyers, how they behave, how hard to push, and the service config."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

# The solar lead of routelead.demo.leads: the same schema the example config uses.
LEAD_FIELDS: dict[str, Any] = {
    "first_name": {"type": "string", "required": True, "pii": True, "max_length": 100},
    "last_name": {"type": "string", "required": True, "pii": True, "max_length": 100},
    "email": {"type": "email", "required": True, "pii": True},
    "phone": {"type": "phone", "required": True, "pii": True},
    "address": {"type": "string", "pii": True, "max_length": 200},
    "state": {"type": "state", "required": True},
    "zip": {"type": "zip", "required": True},
    "homeowner": {"type": "bool", "required": True},
    "electric_bill": {"type": "string", "enum": ["$0-100", "$100-200", "$200-300", "$300+"]},
    "credit_range": {"type": "string", "enum": ["<600", "600-650", "650-700", "700+"]},
    "property_type": {"type": "string", "enum": ["single_family", "condo", "townhouse", "mobile_home"]},
    "tcpa_consent": {"type": "bool", "required": True},
}
PII = tuple(name for name, spec in LEAD_FIELDS.items() if spec.get("pii"))
DEADLINE_MS = 750
POST_RESERVE_MS = 150
PING_TIMEOUT_MS = 500
POST_TIMEOUT_MS = 150


@dataclass(frozen=True, slots=True)
class BuyerSim:
    """How one simulated buyer behaves. Latency is log-normal around `median_ms` (0 = answer at once)."""

    id: str
    median_ms: float = 0.0
    sigma: float = 0.0
    bid_rate: float = 0.7
    price: tuple[float, float] = (10.0, 60.0)
    accept_rate: float = 0.9
    # Share of pings never answered in time (the handler sleeps far past every deadline).
    hang_rate: float = 0.0
    # Share of pings answered with HTTP 500 or broken JSON.
    fail_rate: float = 0.0

    def latency_s(self, rng: random.Random) -> float:
        if self.median_ms <= 0:
            return 0.0
        ms = self.median_ms * (rng.lognormvariate(0.0, self.sigma) if self.sigma else 1.0)
        return min(ms, 5_000.0) / 1000


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    buyers: tuple[BuyerSim, ...]
    # Closed loop: leads in flight at once.
    concurrency: int
    # Open loop runs at this share of the closed-loop throughput (the targets speak of half).
    open_share: float = 0.5
    duration_s: float = 8.0
    # closed, open, empty, fanout; quote (quote-then-commit pairs); soak, soak-closed.
    phases: tuple[str, ...] = ("closed", "open", "empty", "fanout")
    extra: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


def _fast(n: int) -> tuple[BuyerSim, ...]:
    return tuple(BuyerSim(f"b{i:02d}", bid_rate=0.7) for i in range(n))


def _realistic(n: int, hanging: int = 0) -> tuple[BuyerSim, ...]:
    """Most buyers answer in tens of ms; one slow, one flaky; `hanging` never answer in time."""
    out: list[BuyerSim] = []
    for i in range(n):
        bid = f"b{i:02d}"
        if i < hanging:
            out.append(BuyerSim(bid, median_ms=80, sigma=0.5, hang_rate=1.0))
        elif i == n - 1:
            out.append(BuyerSim(bid, median_ms=260, sigma=0.4, bid_rate=0.5))  # slow, some time out
        elif i == n - 2:
            out.append(BuyerSim(bid, median_ms=40, sigma=0.5, fail_rate=0.3))  # flaky
        else:
            out.append(BuyerSim(bid, median_ms=35 + 10 * (i % 5), sigma=0.6, bid_rate=0.6))
    return tuple(out)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("fast-3", "3 buyers per lead, all answer at once", _fast(3), concurrency=32),
        Scenario("fast-10", "10 buyers per lead, all answer at once", _fast(10), concurrency=32),
        Scenario("fast-30", "30 buyers per lead, all answer at once", _fast(30), concurrency=16),
        Scenario(
            "realistic-10",
            "10 buyers, log-normal latencies (35-75 ms medians), one slow, one failing 30 %",
            _realistic(10),
            concurrency=128,
        ),
        Scenario(
            "hanging-10",
            "10 buyers as realistic-10, but 2 of 10 (20 %) hang on every ping",
            _realistic(10, hanging=2),
            concurrency=256,
        ),
        Scenario(
            "soak-10",
            "fast-10 driven open-loop for a long run: memory over time",
            _fast(10),
            concurrency=32,
            duration_s=60.0,
            phases=("soak",),
        ),
        Scenario(
            "soak-1",
            "one fast buyer, open loop, for the million-lead memory run: what grows per lead (hot "
            "state, books, kept answers) does not depend on how many buyers it pings",
            (BuyerSim("b00", bid_rate=0.9),),
            concurrency=32,
            duration_s=60.0,
            phases=("soak",),
        ),
        Scenario(
            "quote-10",
            "inbound ping-post on fast-10: each supplier quotes a lead from its ping fields, then "
            "commits the full lead",
            _fast(10),
            concurrency=32,
            phases=("quote",),
        ),
        Scenario(
            "smoke",
            "tiny and short: checks the suite itself (used by the test suite)",
            (BuyerSim("b00"), BuyerSim("b01", median_ms=5, fail_rate=0.2), BuyerSim("b02", hang_rate=1.0)),
            concurrency=4,
            duration_s=1.0,
            phases=("closed", "open", "empty", "fanout", "quote"),
        ),
    )
}


def service_config(s: Scenario, buyers_url: str) -> dict[str, Any]:
    """The routelead YAML document: one flow, one tier ranked by bid, every buyer a JSON ping-post."""
    return {
        "lead": {"fields": LEAD_FIELDS, "unknown_fields": "reject"},
        # Inbound terms too, for the quote-then-commit phase (no limits: the load is the point).
        "sources": [{"id": "bench", "cost": "10.00", "inbound": {"margin": {"percent": "20"}, "ttl_s": 60}}],
        "buyers": [
            {
                "id": b.id,
                "ping": {"url": f"{buyers_url}/{b.id}/ping", "timeout_ms": PING_TIMEOUT_MS},
                "post": {"url": f"{buyers_url}/{b.id}/post", "timeout_ms": POST_TIMEOUT_MS},
            }
            for b in s.buyers
        ],
        "flows": [
            {
                "id": "solar",
                "deadline_ms": DEADLINE_MS,
                "post_reserve_ms": POST_RESERVE_MS,
                "sources": ["bench"],
                "tiers": [{"name": "all", "buyers": [b.id for b in s.buyers]}],
                "dedupe": {"fields": ["email", "phone"], "days": 1},
            }
        ],
    }


def fleet_spec(s: Scenario) -> list[dict[str, Any]]:
    return [dataclasses.asdict(b) for b in s.buyers]
