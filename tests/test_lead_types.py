"""Lead types: two verticals with different required fields, PII, identity and created-at field,
side by side in one process (real gRPC, real aiohttp buyers, real books), and what check-config
refuses when a buyer, mapping, filter or ping does not fit a flow's lead type."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from routelead.api.server import Service
from routelead.config.loader import ConfigError
from routelead.records.ledger import Ledger
from routelead.records.reports import Reports, Window
from routelead.replay.recorded import recorded_leads
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, LEAD_FIELDS, buyer, compile_doc
from tests.servers import free_port, wait_answering
from tests.state.conftest import SECRET, start_redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

AUTO_FIELDS: dict[str, Any] = {
    "first_name": {"type": "string", "required": True, "pii": True},
    "email": {"type": "email", "required": True, "pii": True},
    "phone": {"type": "phone", "pii": True},
    "date_of_birth": {"type": "date", "required": True, "pii": True},
    "state": {"type": "state", "required": True},
    "zip": {"type": "zip"},
    "vehicle_year": {"type": "int", "required": True},
    "vehicle_make": {"type": "string", "required": True},
    "current_insurer": {"type": "string"},
    "submitted_at": {"type": "datetime"},
}
# Solar knows a consumer by e-mail and phone; auto insurance by e-mail and date of birth.
SOLAR_TYPE = {"id": "solar", "identity_fields": ["email", "phone"], "fields": LEAD_FIELDS}
AUTO_TYPE = {
    "id": "auto",
    "identity_fields": ["email", "date_of_birth"],
    "created_at_field": "submitted_at",
    "fields": AUTO_FIELDS,
}
AUTO_LEAD = {
    "first_name": "Sam",
    "email": "sam.okafor@example.com",
    "phone": "5553014455",
    "date_of_birth": "1984-06-02",
    "state": "TX",
    "zip": "73301",
    "vehicle_year": "2019",
    "vehicle_make": "Toyota",
    "current_insurer": "GEICO",
}
AUTO_PII = ("Sam", "sam.okafor@example.com", "5553014455", "1984-06-02")


def two_verticals(url: Any) -> dict[str, Any]:
    """sol buys solar (the default type), car buys auto (leads at most 30 minutes old), both buys
    both with one ping mapping per type; src-1 sells both (auto at its own cost), src-solar solar."""
    return {
        "lead_types": copy.deepcopy([SOLAR_TYPE, AUTO_TYPE]),
        "sources": [
            {
                "id": "src-1",
                "cost": "10.00",
                "lead_types": ["solar", "auto"],
                "cost_by_type": {"auto": {"cost": "4.00"}},
            },
            {"id": "src-solar", "cost": "2.00"},
        ],
        "buyers": [
            buyer(url, "sol"),
            buyer(url, "car", lead_types=["auto"], filter={"max_lead_age_minutes": 30}),
            buyer(
                url,
                "both",
                lead_types=["solar", "auto"],
                ping={
                    "fields": {"st": "state", "zip": "zip"},
                    "fields_by_type": {"auto": {"year": "vehicle_year", "make": "vehicle_make"}},
                },
            ),
        ],
        "flows": [
            {"id": "solar", "dedupe": {"days": 30}, "tiers": [{"name": "t1", "buyers": ["sol", "both"]}]},
            {
                "id": "auto",
                "lead_type": "auto",
                "dedupe": {"days": 30},
                "tiers": [{"name": "t1", "buyers": ["car", "both"]}],
            },
        ],
    }


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        compile_doc(doc)
    return err.value.problems


# --- what check-config refuses, by path ---------------------------------------------------------


def test_a_flow_whose_tier_holds_a_buyer_of_another_lead_type_is_refused() -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    doc["flows"][1]["tiers"][0]["buyers"].append("sol")

    assert problems(doc) == [
        "flows[1].tiers[0].buyers[2]: buyer 'sol' does not buy lead type 'auto' (it buys solar)"
    ]


def test_a_mapping_naming_a_field_its_lead_type_lacks_is_refused() -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    # The solar mapping of a buyer of both names an auto field; the auto mapping a solar one.
    doc["buyers"][2]["ping"]["fields"]["year"] = "vehicle_year"
    doc["buyers"][2]["ping"]["fields_by_type"]["auto"]["own"] = "homeowner"
    doc["buyers"][1]["post"]["fields"] = {"credit": "credit_range", "email": "email"}

    assert sorted(problems(doc)) == [
        "buyers[1].post.fields.credit: unknown lead field 'credit_range' (lead type 'auto')",
        "buyers[2].ping.fields.year: unknown lead field 'vehicle_year' (lead type 'solar')",
        "buyers[2].ping.fields_by_type.auto.own: unknown lead field 'homeowner' (lead type 'auto')",
    ]


def test_a_filter_naming_a_field_its_lead_type_lacks_is_refused() -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    doc["buyers"][1]["filter"] = {"field": "homeowner", "equals": True}
    # Bought for both types, a filter must hold for each: vehicle_year is not a solar field.
    doc["buyers"][2]["filter"] = {"field": "vehicle_year", "gte": 2010}

    assert problems(doc) == [
        "buyers[1].filter.field: unknown lead field 'homeowner' (lead type 'auto')",
        "buyers[2].filter.field: unknown lead field 'vehicle_year' (lead type 'solar')",
    ]


def test_a_pii_field_of_the_lead_type_in_a_ping_is_refused() -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    # date_of_birth is PII of auto; phone is PII of both.
    doc["buyers"][2]["ping"]["fields_by_type"]["auto"]["dob"] = "date_of_birth"
    doc["buyers"][1]["ping"]["fields"] = {"year": "vehicle_year", "tel": "phone"}

    assert problems(doc) == [
        "buyers[1].ping.fields.tel: 'phone' is PII and may not be sent in a ping (lead type 'auto')",
        "buyers[2].ping.fields_by_type.auto.dob: 'date_of_birth' is PII and may not be sent in a ping "
        "(lead type 'auto')",
    ]


def test_lead_type_references_that_do_not_resolve_are_refused_by_path() -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    doc["flows"].append(
        {"id": "mortgage", "lead_type": "mortgage", "tiers": [{"name": "t", "buyers": ["sol"]}]}
    )
    doc["flows"][1]["sources"] = ["src-1", "src-solar"]
    doc["buyers"][0]["lead_types"] = ["solar", "health"]
    doc["buyers"][0]["ping"]["fields_by_type"] = {"auto": {"make": "vehicle_make"}}
    doc["sources"][1]["cost_by_type"] = {"auto": {"cost": "1.00"}}
    doc["lead_types"].append({"id": "solar", "fields": {"x": {}}})
    del doc["lead_types"][1]["identity_fields"]

    assert problems(doc) == [
        "lead_types[2]: duplicate id 'solar'",
        "sources[1].cost_by_type.auto: the source does not sell lead type 'auto'",
        "buyers[0].lead_types[1]: unknown lead type 'health'",
        "buyers[0].ping.fields_by_type.auto: the buyer does not buy lead type 'auto'",
        "flows[1].sources[1]: source 'src-solar' does not sell lead type 'auto'",
        "flows[1].dedupe.fields: name the identity fields here, or as `identity_fields` of lead type 'auto'",
        "flows[2].lead_type: unknown lead type 'mortgage'",
    ]


def test_check_config_prints_each_lead_type_refusal_with_its_path(tmp_path: Path) -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    doc["flows"][1]["tiers"][0]["buyers"].append("sol")
    doc["buyers"][1]["ping"]["fields"] = {"dob": "date_of_birth"}
    path = tmp_path / "flows.yaml"
    path.write_text(yaml.safe_dump(doc))

    proc = subprocess.run(
        [str(BIN / "routelead"), "check-config", str(path)], capture_output=True, text=True, timeout=60
    )

    assert proc.returncode == 2
    assert "flows[1].tiers[0].buyers[2]: buyer 'sol' does not buy lead type 'auto'" in proc.stderr
    assert "buyers[1].ping.fields.dob: 'date_of_birth' is PII and may not be sent in a ping" in proc.stderr


def test_the_lead_block_is_the_default_type_beside_further_lead_types() -> None:
    doc = two_verticals(lambda b, s: f"http://127.0.0.1:9/{b}/{s}")
    doc["lead"] = {"fields": LEAD_FIELDS}
    doc["lead_types"] = [AUTO_TYPE]
    doc["sources"][0]["lead_types"] = ["default", "auto"]
    doc["buyers"][2]["lead_types"] = ["default", "auto"]
    doc["flows"][0]["dedupe"] = {"fields": ["email"]}

    config = compile_doc(doc)

    assert config.flows["solar"].lead_type == "default" and config.flows["auto"].lead_type == "auto"
    assert config.schema is config.lead_types["default"]
    assert set(config.lead_types) == {"default", "auto"}
    clash = {**AUTO_TYPE, "id": "default"}
    doc["lead_types"] = [clash]
    assert "lead_types[0].id: 'default' is the type the `lead` block describes" in problems(doc)


# --- two verticals side by side in one process --------------------------------------------------


@pytest.fixture
async def books(tmp_path: Path) -> Any:
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'books.db'}")
    yield ledger
    await ledger.close()


async def test_two_verticals_route_side_by_side_each_by_its_own_fields(
    buyers: BuyerServer, books: Ledger, tmp_path: Path
) -> None:
    buyers.on("sol", ping=bid("30.00"), post=accept("S-1"))
    buyers.on("car", ping=bid("25.00"), post=accept("C-1"))
    buyers.on("both", ping=bid("20.00"), post=accept("B-1"))
    doc = two_verticals(buyers.url)
    async with (
        Service(compile_doc(doc), ledger=books) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = pb_grpc.RouteLeadStub(channel)

        async def route(flow: str, fields: dict[str, str], source: str = "src-1") -> pb.RouteLeadResponse:
            request = pb.RouteLeadRequest(flow=flow, source_id=source, fields=fields)
            reply: pb.RouteLeadResponse = await stub.RouteLead(request, timeout=10)
            return reply

        solar = await route("solar", GOOD_LEAD)
        auto = await route("auto", AUTO_LEAD)

        # Each flow's lead type decides what is required: no vehicle_year for solar; for auto,
        # its own required fields, and solar's fields are unknown.
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await route("auto", GOOD_LEAD)
        # A source that sells only solar does not sell into the auto flow.
        with pytest.raises(grpc.aio.AioRpcError) as not_sold:
            await route("auto", {**AUTO_LEAD, "email": "other@example.com"}, source="src-solar")

        # Dedupe identity follows the type: the same auto consumer (e-mail + date of birth) with
        # another phone is a repeat; a solar lead with the same e-mail and another phone is not.
        auto_again = await route("auto", {**AUTO_LEAD, "phone": "5559998877"})
        solar_other = await route("solar", {**GOOD_LEAD, "phone": "5559998877"})
        # Lead age follows the type: auto's created-at field; car takes leads up to 30 minutes old.
        old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
        stale = await route("auto", {**AUTO_LEAD, "email": "late@example.com", "submitted_at": old})

    assert solar.outcome == pb.SOLD and [(s.buyer_id, s.price) for s in solar.sales] == [("sol", "30.00")]
    assert auto.outcome == pb.SOLD and [(s.buyer_id, s.price) for s in auto.sales] == [("car", "25.00")]
    assert Decimal(solar.cost) == Decimal("10.00") and Decimal(auto.cost) == Decimal("4.00")
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = wrong.value.details() or ""
    for expected in (
        "fields.vehicle_year: required",
        "fields.vehicle_make: required",
        "fields.date_of_birth: required",
        "fields.homeowner: unknown field",
    ):
        assert expected in details, details
    assert not_sold.value.code() == grpc.StatusCode.NOT_FOUND
    assert "does not sell lead type 'auto'" in (not_sold.value.details() or "")
    assert auto_again.outcome == pb.DUPLICATE
    assert solar_other.outcome == pb.SOLD
    car = next(a for a in stale.attempts if a.buyer_id == "car")
    assert car.status == pb.SKIPPED_FILTER and "older than 30 minutes" in car.reason
    assert [s.buyer_id for s in stale.sales] == ["both"]

    # PII marking per type: the auto ping carries no name, e-mail, phone or date of birth; the
    # post does. The buyer of both got each type's own mapping.
    car_pings = [r.json() for r in buyers.got("car", "ping")]
    public = {"state", "zip", "vehicle_year", "vehicle_make", "current_insurer", "lead_id"}
    assert car_pings and all(set(p) - {"submitted_at"} == public for p in car_pings), car_pings
    for r in buyers.got(step="ping"):
        assert not any(v.encode() in r.body for v in AUTO_PII), r
    assert buyers.got("car", "post")[0].json()["date_of_birth"] == "1984-06-02"
    both = [r.json() for r in buyers.got("both", "ping")]
    assert {"st": "CA", "zip": "90210"} in both
    assert {"year": 2019, "make": "Toyota"} in both or {"year": "2019", "make": "Toyota"} in both

    # The books know each lead's type: reports, the journal and replay cut by it.
    until = datetime.now(UTC) + timedelta(minutes=1)
    since = until - timedelta(hours=1)
    totals = {t.key: t for t in await books.totals("lead_type", since, until)}
    assert set(totals) == {"solar", "auto"}
    assert totals["auto"].sales == 2 and totals["auto"].gross_revenue == Decimal("45.00")
    assert totals["auto"].gross_cost == Decimal("8.00")
    assert totals["solar"].sales == 2 and totals["solar"].gross_revenue == Decimal("60.00")
    money = {m.key: m for m in await Reports(books.engine).money("lead_type", Window("t", since, until))}
    assert (money["auto"].leads, money["auto"].sold) == (3, 2)
    assert (money["solar"].leads, money["solar"].sold) == (2, 2)
    replayed = [lead.lead_id async for lead in recorded_leads(books.engine, since, until, lead_type="auto")]
    assert sorted(replayed) == sorted([auto.lead_id, auto_again.lead_id, stale.lead_id])


async def test_report_and_replay_commands_cut_by_lead_type(
    buyers: BuyerServer, books: Ledger, tmp_path: Path
) -> None:
    buyers.on("sol", ping=bid("30.00"), post=accept("S-1"))
    buyers.on("car", ping=bid("25.00"), post=accept("C-1"))
    doc = two_verticals(buyers.url)
    async with (
        Service(compile_doc(doc), ledger=books) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = pb_grpc.RouteLeadStub(channel)
        for flow, fields in (
            ("solar", GOOD_LEAD),
            ("auto", AUTO_LEAD),
            ("auto", {**AUTO_LEAD, "email": "b@x.io"}),
        ):
            await stub.RouteLead(pb.RouteLeadRequest(flow=flow, source_id="src-1", fields=fields), timeout=10)
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "ROUTELEAD_DB": str(tmp_path / "books.db")}
    env.pop("DATABASE_URL", None)

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(BIN / "routelead"), *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    report = run("report", "--by", "lead_type").splitlines()
    replay = run("replay", "--config", str(config), "--lead-type", "auto")

    assert report[0].startswith("lead_type")
    rows = {line.split()[0]: line.split() for line in report[1:]}
    assert rows["auto"][1:4] == ["2", "0", "50.00"] and rows["solar"][1:4] == ["1", "0", "30.00"]
    assert "replay of 2 recorded leads" in replay


# --- across workers: `serve --workers 2` sharing a throwaway Redis ------------------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    proc = start_redis()
    yield proc.url
    proc.executor.stop()


def serve(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_two_verticals_route_side_by_side_across_workers(
    buyers: BuyerServer, redis_url: str, tmp_path: Path
) -> None:
    buyers.on("sol", ping=bid("30.00"), post=accept("S-1"))
    buyers.on("car", ping=bid("25.00"), post=accept("C-1"))
    buyers.on("both", ping=bid("20.00"), post=accept("B-1"))
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(two_verticals(buyers.url)))
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "ROUTELEAD_DB": str(tmp_path / "books.db"),
        "ROUTELEAD_DEDUPE_KEY": SECRET.decode(),
        "ROUTELEAD_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    argv = [sys.executable, "-m", "routelead.cli", "serve", "--config", str(config)]
    argv += ["--listen", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "WARNING"]
    proc = serve(argv, env)

    def workers() -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        except OSError:
            return []

    try:
        await wait_answering(port, proc, lambda: len(workers()) == 2)
        replies: list[pb.RouteLeadResponse] = []
        # Connections of their own, so the kernel spreads them over both workers.
        for i in range(12):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RouteLeadStub(channel)
                flow, lead = ("auto", AUTO_LEAD) if i % 2 else ("solar", GOOD_LEAD)
                fields = {**lead, "email": f"c{i}@example.com"}
                request = pb.RouteLeadRequest(flow=flow, source_id="src-1", fields=fields)
                replies.append(await stub.RouteLead(request, timeout=10))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RouteLeadStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await stub.RouteLead(
                    pb.RouteLeadRequest(flow="auto", source_id="src-1", fields=GOOD_LEAD), timeout=10
                )
            # The same auto consumer (e-mail + date of birth), another phone: a repeat in any worker.
            repeat = {**AUTO_LEAD, "email": "c1@example.com", "phone": "5550001111"}
            again = await stub.RouteLead(
                pb.RouteLeadRequest(flow="auto", source_id="src-1", fields=repeat), timeout=10
            )
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()

    sold = [(r.flow, r.sales[0].buyer_id, r.cost) for r in replies if r.outcome == pb.SOLD]
    assert sold == [("solar", "sol", "10.00") if i % 2 == 0 else ("auto", "car", "4.00") for i in range(12)]
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fields.vehicle_year: required" in (wrong.value.details() or "")
    assert again.outcome == pb.DUPLICATE
    for r in buyers.got(step="ping"):
        assert not any(v.encode() in r.body for v in AUTO_PII), r
    auto_posts = [r.json() for r in buyers.got("car", "post")]
    assert len(auto_posts) == 6 and all(p["date_of_birth"] == "1984-06-02" for p in auto_posts)


def test_migration_0007_gives_earlier_leads_an_empty_lead_type_and_goes_back(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command
    from routelead.records.db import _alembic_config
    from routelead.records.schema import leads

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'books.db'}")
    now = datetime.now(UTC)
    row = {
        "lead_id": "old-1", "flow": "solar", "source_id": "src-1", "config_version": "v1",
        "received_at": now, "answered_at": now, "outcome": "SOLD", "test": False,
        "cost": Decimal("1.00"), "revenue": Decimal("2.00"), "margin": Decimal("1.00"),
        "elapsed_ms": 1.0, "trace_id": "", "ping_fields": {},
    }  # fmt: skip
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0006")
        conn.execute(sa.insert(leads).values(row))
        command.upgrade(_alembic_config(conn), "0007")
        assert conn.execute(sa.select(leads.c.lead_type)).scalar_one() == ""
        command.downgrade(_alembic_config(conn), "0006")
        assert "lead_type" not in {c["name"] for c in sa.inspect(conn).get_columns("leads")}
        assert conn.execute(sa.text("SELECT lead_id FROM leads")).scalar_one() == "old-1"
    engine.dispose()
