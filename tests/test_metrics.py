"""Prometheus metrics, scraped over HTTP after routing real leads over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from routelead.domain.money import ZERO
from routelead.domain.outcome import Outcome, RoutingResult
from routelead.telemetry.metrics import record_lead, serve_metrics
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, hang, no_bid
from tests.configs import GOOD_LEAD, buyer
from tests.conftest import Start
from tests.metrics_scrape import scrape, value


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    server: Any = serve_metrics("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()


def _lead(n: int) -> dict[str, str]:
    # Distinct consumers, so the pre-ping dedupe does not turn them into duplicates.
    return {**GOOD_LEAD, "email": f"m{n}@example.com", "phone": f"55520100{n:02d}"}


async def test_metrics_count_outcomes_latency_timeouts_caps_and_money(
    buyers: BuyerServer, start: Start, metrics_url: str
) -> None:
    buyers.on("mx-a", ping=bid("30.50"), post=accept())
    buyers.on("mx-b", ping=no_bid())
    buyers.on("mx-slow", ping=hang())
    h = await start(
        [
            buyer(buyers.url, "mx-a", caps={"day": 2}),
            buyer(buyers.url, "mx-b"),
            buyer(buyers.url, "mx-slow", ping={"timeout_ms": 100}),
        ]
    )
    before = await scrape(metrics_url)

    replies = [await h.route(_lead(i)) for i in range(3)]
    test_reply = await h.route(_lead(9), test=True)

    after = await scrape(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert [r.outcome for r in replies] == [pb.SOLD, pb.SOLD, pb.UNSOLD]  # the day cap of 2 is full
    assert test_reply.outcome == pb.UNSOLD
    assert delta("routelead_leads_total", flow="solar", outcome="SOLD", test="false") == 2
    assert delta("routelead_leads_total", flow="solar", outcome="UNSOLD", test="false") == 1
    assert delta("routelead_leads_total", flow="solar", test="true") == 1
    assert delta("routelead_ping_duration_seconds_count", buyer="mx-b", tier="t1") == 4
    assert delta("routelead_ping_duration_seconds_bucket", buyer="mx-b", le="+Inf") == 4
    assert delta("routelead_buyer_timeouts_total", buyer="mx-slow") == 4
    assert delta("routelead_cap_rejections_total", buyer="mx-a") == 2  # lead 3 and the test lead
    assert delta("routelead_buyer_attempts_total", buyer="mx-a", status="POST_ACCEPTED") == 2
    assert delta("routelead_post_duration_seconds_count", buyer="mx-a") == 2
    assert delta("routelead_revenue_dollars_total", flow="solar", buyer="mx-a") == pytest.approx(61.0)
    assert delta("routelead_cost_dollars_total", flow="solar", source="src-1") == pytest.approx(20.0)
    assert delta("routelead_lead_margin_dollars_sum", flow="solar") == pytest.approx(41.0)
    assert delta("routelead_lead_duration_seconds_count", flow="solar") == 4
    assert delta("routelead_deadline_overruns_total", flow="solar") == 0


def test_only_a_lead_past_its_budget_counts_as_a_deadline_overrun() -> None:
    def overruns() -> float:
        return REGISTRY.get_sample_value("routelead_deadline_overruns_total", {"flow": "ov"}) or 0.0

    def result(elapsed_ms: float) -> RoutingResult:
        r = RoutingResult("L1", "ov", "src-1", False, Outcome.UNSOLD, ZERO)
        r.elapsed_ms = elapsed_ms
        return r

    start = overruns()
    record_lead(result(749.9), 0.75)
    record_lead(result(750.0), 0.75)
    assert overruns() == start
    record_lead(result(750.2), 0.75)
    assert overruns() == start + 1
