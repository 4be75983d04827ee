"""Suppression lists on real servers: global and per-buyer lists refuse a lead or skip a buyer
before any ping, name the list but never the value, and a change counts from the next lead on
every replica sharing a real Redis."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routelead.api.server import Service
from routelead.domain.suppression import digest, entry
from routelead.state.ports import DedupeStore, SuppressionStore
from routelead.state.redis import connect
from routelead.telemetry.logs import configure_logging
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, PII_VALUES, buyer, compile_doc, document
from tests.state.conftest import SECRET, start_redis

BIN = Path(sys.executable).parent


async def change(
    store: SuppressionStore,
    dedupe: DedupeStore,
    name: str,
    values: list[str],
    buyer: str = "",
    add: bool = True,
) -> int:
    digests = [digest(dedupe.fingerprint, *entry(v)) for v in values]
    return await store.change(name, buyer, digests, add=add)


async def route(service: Service, lead_id: str = "") -> pb.RouteLeadResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD, lead_id=lead_id)
        reply: pb.RouteLeadResponse = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
        return reply


def two_buyers(buyers: BuyerServer) -> dict[str, Any]:
    buyers.on("first", ping=bid("40.00"), post=accept("F-1"))
    buyers.on("second", ping=bid("30.00"), post=accept("S-1"))
    return document([buyer(buyers.url, "first"), buyer(buyers.url, "second")])


async def test_a_globally_suppressed_lead_reaches_no_buyer(buyers: BuyerServer) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("DEBUG", out, cache=False)
    try:
        async with Service(compile_doc(two_buyers(buyers))) as service:
            # The e-mail's domain, written as an operator would.
            assert await change(service.suppression, service.dedupe, "litigators", ["@Example.com"]) == 1
            refused = await route(service)
            await change(service.suppression, service.dedupe, "litigators", ["example.com"], add=False)
            sold = await route(service, lead_id="after-removal")
    finally:
        configure_logging("INFO", cache=False)
        exporter.shutdown()
    assert refused.outcome == pb.REJECTED and refused.reason == "suppressed: on list litigators"
    assert [(c.name, c.kind, c.result) for c in refused.checks] == [("suppression", "list", "rejected")]
    assert sold.outcome == pb.SOLD  # the removal counts from the next lead
    assert len(buyers.got("first", "ping")) == 1  # only the lead after the removal was pinged
    blob = "\n".join(
        [
            out.getvalue(),
            str(refused),
            *(str(dict(s.attributes or {})) for s in exporter.get_finished_spans()),
        ]
    )
    for value in (*PII_VALUES, "example.com"):
        assert value not in blob, f"{value!r} leaked"


async def test_a_buyers_own_list_skips_only_that_buyer(buyers: BuyerServer) -> None:
    async with Service(compile_doc(two_buyers(buyers))) as service:
        await change(service.suppression, service.dedupe, "dnc", ["(555) 201-3344"], buyer="first")
        reply = await route(service)
    assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "second"
    first = {a.buyer_id: a for a in reply.attempts}["first"]
    assert first.status == pb.SKIPPED_FILTER and first.reason == "suppressed: on its list dnc"
    assert buyers.got("first") == []
    assert "5552013344" not in str(reply) and "201-3344" not in str(reply)


def test_entries_are_recognised_and_normalised() -> None:
    assert entry("(555) 201-3344") == ("phone", "+15552013344")
    assert entry(" Maria@Example.COM ") == ("email", "maria@example.com")
    assert entry("90210-1234") == ("zip", "90210")
    assert entry("@Spam.example") == ("domain", "spam.example")
    with pytest.raises(ValueError, match="not a phone"):
        entry("hello")


@pytest.fixture
def redis_url() -> Iterator[str]:
    proc = start_redis()
    yield proc.url
    proc.executor.stop()


async def test_a_list_change_counts_from_the_next_lead_on_every_replica(
    buyers: BuyerServer, redis_url: str
) -> None:
    config = compile_doc(two_buyers(buyers))
    a, b = connect(redis_url, SECRET), connect(redis_url, SECRET)
    try:
        async with (
            Service(
                config, caps=a.caps, dedupe=a.dedupe, idempotency=a.idempotency, suppression=a.suppression
            ) as one,
            Service(
                config, caps=b.caps, dedupe=b.dedupe, idempotency=b.idempotency, suppression=b.suppression
            ) as two,
        ):
            assert (await route(two, "r-1")).outcome == pb.SOLD
            # Added through replica one's store: replica two refuses its very next lead.
            await change(one.suppression, one.dedupe, "dnc", ["5552013344"])
            assert (await route(two, "r-2")).reason == "suppressed: on list dnc"
            assert (await route(one, "r-3")).outcome == pb.REJECTED
            assert await b.suppression.sizes() == {("dnc", ""): 1}
            await change(two.suppression, two.dedupe, "dnc", ["5552013344"], add=False)
            assert (await route(one, "r-4")).outcome == pb.SOLD
    finally:
        await a.close()
        await b.close()


ADMIN_TOKEN = "suppress-admin-token-0123456789"


async def test_lists_are_loaded_and_changed_through_the_admin_api_and_the_cli(
    buyers: BuyerServer, tmp_path: Path
) -> None:
    from routelead.api.state_admin import StateAdminServicer
    from routelead.v1 import state_admin_pb2 as spb
    from routelead.v1 import state_admin_pb2_grpc as spb_grpc

    service = Service(compile_doc(two_buyers(buyers)))
    service.extra_services = [
        StateAdminServicer(
            service.caps,
            dict,
            ADMIN_TOKEN,
            suppression=service.suppression,
            fingerprint=service.dedupe.fingerprint,
        ).register
    ]
    listing = tmp_path / "dnc.txt"
    listing.write_text("# do not call\n(555) 201-3344\n555-000-1111\n\n90210\n")
    env = {**os.environ, "ROUTELEAD_ADMIN_TOKEN": ADMIN_TOKEN}
    target = ["--target"]

    async def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "routelead"), "suppress", *argv, *target],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    await service.start()
    try:
        target.append(f"127.0.0.1:{service.port}")
        loaded = await cli("load", str(listing), "--list", "dnc")
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip() == "3 of 3 entries added to global list dnc"
        assert (await route(service, "cli-1")).reason == "suppressed: on list dnc"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            admin = spb_grpc.StateAdminStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await admin.ListSuppression(spb.ListSuppressionRequest())
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await admin.ChangeSuppression(
                    spb.ChangeSuppressionRequest(list="dnc", values=["ok@example.com", "Maria Gonzalez"]),
                    metadata=auth,
                )
            # Which entry is wrong, never its value.
            assert bad.value.details() == "values[1]: not a phone, e-mail address, ZIP code or domain"
            await admin.ChangeSuppression(
                spb.ChangeSuppressionRequest(list="dnc-first", buyer_id="first", values=["5552013344"]),
                metadata=auth,
            )
            listed = await admin.ListSuppression(spb.ListSuppressionRequest(), metadata=auth)
        assert [(s.list, s.buyer_id, s.entries) for s in listed.lists] == [
            ("dnc", "", 3),
            ("dnc-first", "first", 1),
        ]

        removed = await cli("remove", "5552013344", "90210", "--list", "dnc")
        assert removed.returncode == 0 and removed.stdout.strip().startswith("2 of 2 entries removed")
        shown = await cli("list")
        assert "dnc  (global)  1" in shown.stdout and "5552013344" not in shown.stdout + removed.stdout
        reply = await route(service, "cli-2")  # the next lead: only `first`'s own list holds it
        assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "second"
    finally:
        await service.stop(grace=0.5)


async def test_with_redis_away_a_lead_is_refused_only_if_there_are_lists_to_check(
    buyers: BuyerServer,
) -> None:
    config = compile_doc(two_buyers(buyers))
    with_lists, without = start_redis(), start_redis()
    a, b = connect(with_lists.url, SECRET), connect(without.url, SECRET)
    try:
        async with (
            Service(config, dedupe=a.dedupe, suppression=a.suppression) as listed,
            Service(config, dedupe=b.dedupe, suppression=b.suppression) as unlisted,
        ):
            await change(listed.suppression, listed.dedupe, "dnc", ["5550000000"])
            assert (await route(listed, "l-1")).outcome == pb.SOLD  # not on the list
            assert (await route(unlisted, "u-1")).outcome == pb.SOLD  # no list at all
            with_lists.executor.stop()
            without.executor.stop()
            refused = await route(listed, "l-2")
            sold = await route(unlisted, "u-2")
    finally:
        await a.close()
        await b.close()
    # A do-not-contact list exists but cannot be read: never sold unchecked.
    assert refused.outcome == pb.REJECTED and "suppression lists unavailable" in refused.reason
    # No list existed at the last read: an outage does not stop every sale.
    assert sold.outcome == pb.SOLD
