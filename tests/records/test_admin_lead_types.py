"""Lead types changed live over the Admin API: added, edited, a breaking change refused with its
reason, diffed and rolled back, each a new version every replica follows."""

from __future__ import annotations

import time
from typing import Any

import grpc
import orjson
import pytest
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid
from tests.records.conftest import ADMIN_AUTH as AUTH
from tests.records.conftest import Replica, Start

AUTO: dict[str, Any] = {
    "id": "auto",
    "identity_fields": ["email", "date_of_birth"],
    "fields": {
        "email": {"type": "email", "required": True, "pii": True},
        "date_of_birth": {"type": "date", "required": True, "pii": True},
        "state": {"type": "state", "required": True},
        "vehicle_year": {"type": "int", "required": True},
        "vehicle_make": {"type": "string"},
    },
}
AUTO_LEAD = {"email": "sam@example.com", "date_of_birth": "1984-06-02", "state": "TX", "vehicle_year": "2019"}


def change(reason: str) -> apb.Change:
    return apb.Change(author="ops@example.com", reason=reason)


async def upsert(r: Replica, kind: apb.EntityKind.ValueType, entity: dict[str, Any], reason: str) -> int:
    done = await r.admin.UpsertEntity(
        apb.UpsertEntityRequest(kind=kind, json=orjson.dumps(entity).decode(), change=change(reason)),
        metadata=AUTH,
    )
    return int(done.version.version)


async def refused(r: Replica, kind: apb.EntityKind.ValueType, entity: dict[str, Any]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await upsert(r, kind, entity, "should not apply")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value.details() or ""


async def route_auto(r: Replica, fields: dict[str, str], n: int) -> pb.RouteLeadResponse:
    request = pb.RouteLeadRequest(
        flow="auto", source_id="src-1", fields={**fields, "email": f"driver{n}@example.com"}
    )
    reply: pb.RouteLeadResponse = await r.routing.RouteLead(request, timeout=10)
    return reply


async def until(r: Replica, fields: dict[str, str], wanted: str, within_s: float = 3.0) -> str:
    """Route auto leads until the answer is `wanted` (an outcome or a gRPC code): the replica
    follows the live version within a second."""
    give_up, n = time.monotonic() + within_s, 0
    while True:
        n += 1
        try:
            got = pb.Outcome.Name((await route_auto(r, fields, n)).outcome)
        except grpc.aio.AioRpcError as exc:
            got = f"{exc.code().name}: {exc.details()}"
        if got.startswith(wanted):
            return got
        assert time.monotonic() < give_up, f"still {got}, not {wanted}"


async def test_lead_types_are_added_edited_refused_and_rolled_back_live(
    replicas: Start, buyers: BuyerServer
) -> None:
    buyers.on("c", ping=bid("25.00"), post=accept("C-1"))
    r = await replicas()
    # No auto flow yet: the lead is read against the default type, which has no vehicle fields.
    assert "fields.vehicle_year: unknown field" in await until(r, AUTO_LEAD, "INVALID_ARGUMENT")

    # Add: a lead type, a buyer of it, a flow selling it.
    v2 = await upsert(r, apb.LEAD_TYPE, AUTO, "auto insurance vertical")
    car = {
        "id": "c",
        "lead_types": ["auto"],
        "ping": {
            "url": buyers.url("c", "ping"),
            "timeout_ms": 400,
            "fields": {"year": "vehicle_year", "st": "state"},
        },
        "post": {"url": buyers.url("c", "post"), "timeout_ms": 300},
    }
    await upsert(r, apb.BUYER, car, "an auto buyer")
    flow = {
        "id": "auto",
        "lead_type": "auto",
        "dedupe": {"days": 30},
        "tiers": [{"name": "t", "buyers": ["c"]}],
    }
    await upsert(r, apb.FLOW, flow, "sell auto")
    source = {"id": "src-1", "cost": "10.00", "lead_types": ["default", "auto"]}
    v5 = await upsert(r, apb.SOURCE, source, "src-1 sells auto too")
    assert await until(r, AUTO_LEAD, "SOLD") == "SOLD"
    listed = await r.admin.ListEntities(apb.ListEntitiesRequest(kind=apb.LEAD_TYPE), metadata=AUTH)
    assert [e.id for e in listed.entities] == ["default", "auto"]
    default = await r.admin.GetEntity(apb.GetEntityRequest(kind=apb.LEAD_TYPE, id="default"), metadata=AUTH)
    assert "vehicle_year" not in orjson.loads(default.json)["fields"]  # the `lead` block: solar's fields

    # Edit: vehicle_make becomes required; a lead without it is refused, naming the field.
    stricter = {**AUTO, "fields": {**AUTO["fields"], "vehicle_make": {"type": "string", "required": True}}}
    v6 = await upsert(r, apb.LEAD_TYPE, stricter, "carriers need the make")
    assert "fields.vehicle_make: required" in await until(r, AUTO_LEAD, "INVALID_ARGUMENT")
    assert await until(r, {**AUTO_LEAD, "vehicle_make": "Toyota"}, "SOLD") == "SOLD"

    # Changes that would break the live auto flow are refused with the reason, and store nothing.
    no_year = {**stricter, "fields": {k: v for k, v in stricter["fields"].items() if k != "vehicle_year"}}
    assert "buyers[2].ping.fields.year: unknown lead field 'vehicle_year' (lead type 'auto')" in (
        await refused(r, apb.LEAD_TYPE, no_year)
    )
    pii_state = {**stricter, "fields": {**stricter["fields"], "state": {"type": "state", "pii": True}}}
    assert "buyers[2].ping.fields.st: 'state' is PII and may not be sent in a ping (lead type 'auto')" in (
        await refused(r, apb.LEAD_TYPE, pii_state)
    )
    assert "flows[1].tiers[0].buyers[0]: buyer 'c' does not buy lead type 'auto'" in (
        await refused(r, apb.BUYER, {**car, "lead_types": ["default"]})
    )
    with pytest.raises(grpc.aio.AioRpcError) as in_use:
        await r.admin.DeleteEntity(
            apb.DeleteEntityRequest(kind=apb.LEAD_TYPE, id="auto", change=change("drop auto")), metadata=AUTH
        )
    assert "flows[1].lead_type: unknown lead type 'auto'" in (in_use.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as default_type:
        await r.admin.DeleteEntity(
            apb.DeleteEntityRequest(kind=apb.LEAD_TYPE, id="default", change=change("drop")), metadata=AUTH
        )
    assert "is the default type" in (default_type.value.details() or "")
    assert (await r.admin.ListVersions(apb.ListVersionsRequest(), metadata=AUTH)).live == v6

    # Diff and rollback: back to the version before the edit, vehicle_make is optional again.
    diff = await r.admin.DiffVersions(apb.DiffVersionsRequest(from_version=v5, to_version=v6), metadata=AUTH)
    assert "vehicle_make:" in diff.unified_diff and "+      required: true" in diff.unified_diff
    rolled = await r.admin.Rollback(apb.RollbackRequest(to_version=v5, change=change("undo")), metadata=AUTH)
    assert rolled.version.version == v6 + 1
    assert await until(r, AUTO_LEAD, "SOLD") == "SOLD"
    assert v2 == 2
