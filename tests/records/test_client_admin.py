"""routelead_client's admin side over real loopback: RouteLeadAdmin and `routelead-client buyers|stats`
against a replica with the books, the Admin and Stats services and the admin token."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import yaml
from routelead.records.configstore import ConfigStore
from routelead_client import (
    AsyncRouteLeadAdmin,
    Conflict,
    InvalidArgument,
    NotFound,
    RouteLeadAdmin,
    Unauthenticated,
)
from routelead_client.admin import os_user
from routelead_client.cli import main as cli_main

from tests.records.conftest import ADMIN_TOKEN, LITERAL_SECRET, Replica, Start

# The client sees only the wire: one backend is enough (the books' own tests cover both).
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
WRONG_TOKEN = "not-the-admin-token-0123456789"


def _admin(r: Replica, token: str = ADMIN_TOKEN) -> RouteLeadAdmin:
    return RouteLeadAdmin(f"127.0.0.1:{r.service.port}", token=token)


async def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli_main, list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTELEAD_ADMIN_TOKEN", ADMIN_TOKEN)


@sqlite_only
async def test_the_library_lists_gets_puts_pauses_and_deletes_buyers(replicas: Start) -> None:
    r = await replicas()
    with _admin(r) as admin:
        ids = await asyncio.to_thread(admin.list_buyers)
        a = await asyncio.to_thread(admin.get_buyer, "a")
        live = await asyncio.to_thread(admin.live_version)
        b = await asyncio.to_thread(admin.get_buyer, "b")
        c = {
            **b,
            "id": "c",
            "budgets": {"day": Decimal("250.00")},
            "schedule": {"dates_off": [date(2026, 12, 25)]},
        }
        added = await asyncio.to_thread(admin.put_buyer, c, "trial buyer", expected_version=live)
        with pytest.raises(Conflict) as stale:
            await asyncio.to_thread(admin.put_buyer, c, "again", expected_version=live)
        paused = await asyncio.to_thread(admin.pause_buyer, "c", "over budget")
        c_paused = await asyncio.to_thread(admin.get_buyer, "c")
        resumed = await asyncio.to_thread(admin.resume_buyer, "c", "budget topped up")
        with pytest.raises(InvalidArgument) as in_use:
            await asyncio.to_thread(admin.delete_buyer, "a", "gone")
        deleted = await asyncio.to_thread(admin.delete_buyer, "c", "trial over")
        with pytest.raises(NotFound):
            await asyncio.to_thread(admin.get_buyer, "c")
        after = await asyncio.to_thread(admin.list_buyers)

    assert ids == ["a", "b"] and after == ["a", "b"]
    assert a["post"]["headers"] == {"X-Key": "${A_KEY}", "X-Literal": "***"}  # masked by the service
    assert live == 1
    assert (added.version, added.reason, added.author) == (2, "trial buyer", os_user())
    assert added.created_at.tzinfo is not None and added.digest
    assert stale.value.code is grpc.StatusCode.ABORTED and "version 2 is live" in stale.value.details
    assert c_paused["enabled"] is False and c_paused["budgets"]["day"] == "250.00"  # Decimal sent exact
    assert c_paused["schedule"]["dates_off"] == ["2026-12-25"]
    assert [v.version for v in (paused, resumed, deleted)] == [3, 4, 5]
    assert in_use.value.code is grpc.StatusCode.INVALID_ARGUMENT


@sqlite_only
async def test_the_cli_edits_buyers_and_keeps_masked_secrets(
    replicas: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, admin_env: None
) -> None:
    r = await replicas()
    monkeypatch.setenv("ROUTELEAD_TARGET", f"127.0.0.1:{r.service.port}")

    listed = await _cli("buyers", "list")
    listed_json = await _cli("buyers", "list", "--json")
    got = await _cli("buyers", "get", "a")
    a = yaml.safe_load(got[1])
    edited = tmp_path / "a.yaml"
    edited.write_text(yaml.safe_dump({**a, "priority": 5}))
    put = await _cli(
        "buyers", "put", str(edited), "--reason", "prio", "--author", "cli-user", "--expect", "1"
    )
    stale = await _cli("buyers", "put", str(edited), "--reason", "again", "--expect", "1")
    paused = await _cli("buyers", "pause", "b", "--reason", "holiday", "--json")
    b = json.loads((await _cli("buyers", "get", "b", "--json"))[1])
    resumed = await _cli("buyers", "resume", "b", "--reason", "back")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**b, "id": "c", "enabled": True})))
    added = await _cli("buyers", "put", "-", "--reason", "from stdin")
    deleted = await _cli("buyers", "delete", "c", "--reason", "trial over")
    missing = await _cli("buyers", "get", "c")

    assert listed == (0, "a\nb\n", "") and json.loads(listed_json[1]) == ["a", "b"]
    assert got[0] == 0 and a["post"]["headers"]["X-Literal"] == "***" and LITERAL_SECRET not in got[1]
    assert put == (0, "v2 is live: prio (cli-user)\n", "")
    assert stale[0] == 1 and stale[2].startswith("routelead-client: ABORTED: version 2 is live")
    assert paused[0] == 0 and json.loads(paused[1])["version"] == 3 and json.loads(paused[1])["author"]
    assert b["enabled"] is False
    assert resumed[1] == "v4 is live: back (" + os_user() + ")\n"
    assert added[:2] == (0, "v5 is live: from stdin (" + os_user() + ")\n")
    assert deleted[0] == 0 and "v6 is live: trial over" in deleted[1]
    assert missing[0] == 1 and missing[2] == "routelead-client: NOT_FOUND: no buyer 'c'\n"
    # The "***" that went back through `put` kept the stored secret instead of replacing it.
    stored = yaml.safe_load((await ConfigStore(r.ledger.engine).get(2)).document)
    assert stored["buyers"][0]["post"]["headers"]["X-Literal"] == LITERAL_SECRET
    assert stored["buyers"][0]["priority"] == 5


@sqlite_only
async def test_stats_after_routing_match_the_leads_in_the_library_and_the_cli(
    replicas: Start, admin_env: None
) -> None:
    r = await replicas()
    for _ in range(3):
        reply = await r.route()
        assert [s.buyer_id for s in reply.sales] == ["a"]
    target = f"127.0.0.1:{r.service.port}"

    with _admin(r) as admin:
        [w] = await asyncio.to_thread(admin.stats)
        [only_b] = await asyncio.to_thread(admin.stats, "today", buyer="b", tz="America/New_York")
    text = await _cli("stats", "--target", target)
    as_json = await _cli("stats", "--target", target, "--flow", "solar", "--json")
    no_range = await _cli("stats", "--target", target, "--window", "range", "--from", "2026-01-01")
    bad_tz = await _cli("stats", "--target", target, "--window", "today", "--tz", "Mars/Olympus")

    by_id = {b.buyer_id: b for b in w.buyers}
    a = by_id["a"]
    assert (a.pings, a.bids, a.wins, a.accepted) == (3, 3, 3, 3)
    assert (a.avg_bid, a.revenue, a.bid_rate) == (Decimal("40.00"), Decimal("120.00"), Decimal("1"))
    assert (by_id["b"].pings, by_id["b"].wins, by_id["b"].revenue) == (3, 0, Decimal("0"))
    [flow] = w.flows
    assert (flow.key, flow.leads, flow.sold) == ("solar", 3, 3)
    assert (flow.cost, flow.revenue, flow.margin) == (Decimal("30.00"), Decimal("120.00"), Decimal("90.00"))
    assert all(isinstance(x, Decimal) for x in (flow.cost, flow.revenue, flow.margin, flow.margin_pct))
    assert [s.key for s in w.sources] == ["src-1"]
    assert w.label == "last hour" and w.since.tzinfo is not None and w.since < w.until
    assert [b.buyer_id for b in only_b.buyers] == ["b"]

    assert text[0] == 0, text[2]
    lines = text[1].splitlines()
    assert lines[0].startswith("== ") and lines[1].split()[:3] == ["buyer", "pings", "bids"]
    row_a = next(line for line in lines if line.startswith("a ")).split()
    assert row_a[:6] == ["a", "3", "3", "100.0", "40.00", "3"] and row_a[-1] == "120.00"
    solar = next(line for line in lines if line.startswith("solar ")).split()
    assert solar[:7] == ["solar", "3", "3", "40.00", "30.00", "120.00", "90.00"]
    doc = json.loads(as_json[1])
    assert doc["windows"][0]["flows"][0]["revenue"] == "120.00"  # money as a string, never a float
    assert no_range == (2, "", "routelead-client: --window range needs --from and --to\n")
    assert bad_tz[0] == 1 and bad_tz[2].startswith("routelead-client: INVALID_ARGUMENT: timezone")


@sqlite_only
async def test_a_wrong_admin_token_is_one_clear_line_and_exit_1(
    replicas: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await replicas()
    target = f"127.0.0.1:{r.service.port}"
    token_file = tmp_path / "token"
    token_file.write_text(WRONG_TOKEN + "\n")
    monkeypatch.delenv("ROUTELEAD_ADMIN_TOKEN", raising=False)

    listed = await _cli("buyers", "list", "--target", target, "--token-file", str(token_file))
    stats = await _cli("stats", "--target", target, "--token-file", str(token_file))
    paused = await _cli(
        "buyers", "pause", "a", "--reason", "x", "--target", target, "--token-file", str(token_file)
    )
    no_token = await _cli("buyers", "list", "--target", target)
    with _admin(r, WRONG_TOKEN) as admin, pytest.raises(Unauthenticated):
        await asyncio.to_thread(admin.list_buyers)

    refused = "routelead-client: UNAUTHENTICATED: the Admin API needs its admin token\n"
    assert listed == stats == paused == (1, "", refused)
    assert no_token == (
        2,
        "",
        "routelead-client: needs the admin token: set ROUTELEAD_ADMIN_TOKEN or pass --token-file\n",
    )
    assert [s.buyer_id for s in (await r.route()).sales] == ["a"]  # nothing was paused
    assert (await ConfigStore(r.ledger.engine).latest_number()) == 1


async def test_a_bad_buyer_file_is_exit_2_naming_the_problem_before_any_call(
    tmp_path: Path, admin_env: None
) -> None:
    files = {
        "list.yaml": "- id: a\n",
        "no-id.yaml": "priority: 5\nping: {timeout_ms: 300}\n",
        "broken.yaml": "id: a\npost:\n  headers: {X-Key: s3cret-in-file\n",
        "empty.json": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    async def put(name: str) -> tuple[int, str, str]:
        # Port 1: nothing listens there, so an exit 2 is the file's doing, not the network's.
        return await _cli("buyers", "put", str(tmp_path / name), "--reason", "r", "--target", "127.0.0.1:1")

    results = {name: await put(name) for name in [*files, "absent.yaml"]}

    assert all(code == 2 and out == "" for code, out, _ in results.values()), results
    errors = {
        name: err.removeprefix(f"routelead-client: {tmp_path / name}: ")
        for name, (_, _, err) in results.items()
    }
    assert errors["list.yaml"] == "must hold one buyer: a mapping with an `id`\n"
    assert errors["no-id.yaml"] == "id: required, a string\n"
    assert errors["broken.yaml"].startswith("not YAML or JSON: ") and "line 4" in errors["broken.yaml"]
    assert "s3cret-in-file" not in errors["broken.yaml"]
    assert errors["empty.json"] == "must hold one buyer: a mapping with an `id`\n"
    assert "No such file or directory" in errors["absent.yaml"]
    with pytest.raises(SystemExit) as usage:  # argparse: a change needs its reason
        cli_main(["buyers", "delete", "a"], io.StringIO(), io.StringIO())
    assert usage.value.code == 2


@sqlite_only
async def test_the_asyncio_admin_client_edits_buyers_and_reads_stats(replicas: Start) -> None:
    r = await replicas()
    reply = await r.route()
    async with AsyncRouteLeadAdmin(f"127.0.0.1:{r.service.port}", token=ADMIN_TOKEN) as admin:
        live = await admin.live_version()
        b = await admin.get_buyer("b")
        added = await admin.put_buyer({**b, "id": "c"}, "trial buyer", expected_version=live)
        with pytest.raises(Conflict):
            await admin.put_buyer({**b, "id": "c"}, "again", expected_version=live)
        paused = await admin.pause_buyer("c", "over budget")
        c_paused = await admin.get_buyer("c")
        resumed = await admin.resume_buyer("c", "back")
        deleted = await admin.delete_buyer("c", "trial over")
        with pytest.raises(NotFound):
            await admin.get_buyer("c")
        ids = await admin.list_buyers()
        [w] = await admin.stats()
    async with AsyncRouteLeadAdmin(f"127.0.0.1:{r.service.port}", token=WRONG_TOKEN) as intruder:
        with pytest.raises(Unauthenticated):
            await intruder.list_buyers()

    assert [s.buyer_id for s in reply.sales] == ["a"]
    assert live == 1 and ids == ["a", "b"]
    assert [v.version for v in (added, paused, resumed, deleted)] == [2, 3, 4, 5]
    assert added.author == os_user() and c_paused["enabled"] is False
    assert {x.buyer_id: x.revenue for x in w.buyers}["a"] == Decimal("40.00")
