"""Whole processes: a SIGKILLed worker leaves every answered lead on the books; the books CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import grpc
import yaml
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, document
from tests.records.conftest import Backend
from tests.records.test_ledger import a_lead
from tests.servers import free_port


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routelead.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigkill_of_a_worker_leaves_every_answered_lead_on_the_books(
    backend: Backend, buyers: BuyerServer, tmp_path: Path
) -> None:
    buyers.on("a", ping=bid("21.37"), post=accept("A-1"))
    buyers.on("b", ping=bid("19.99"), post=accept("B-1"))
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(document([buyer(buyers.url, "a"), buyer(buyers.url, "b")], dedupe=None)))
    port = free_port()
    env = {**os.environ, "DATABASE_URL": backend.url, "ROUTELEAD_LOG_LEVEL": "WARNING"}
    # With no Redis, PostgreSQL books keep the duplicate windows too: they need a lasting key.
    env["ROUTELEAD_DEDUPE_KEY"] = "test-dedupe-key-0123456789abcdef"
    cmd = [
        sys.executable,
        "-m",
        "routelead.cli",
        "serve",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    proc = _spawn(cmd, env)
    answered: list[pb.RouteLeadResponse] = []
    enough = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = pb_grpc.RouteLeadStub(channel)

            async def one(n: int) -> None:
                request = pb.RouteLeadRequest(
                    lead_id=f"k-{n}",
                    flow="solar",
                    source_id="src-1",
                    fields={**GOOD_LEAD, "email": f"k{n}@x.org"},
                )
                with contextlib.suppress(grpc.aio.AioRpcError):  # those cut by the kill never answered
                    answered.append(await stub.RouteLead(request, timeout=5))
                    if len(answered) >= 20:
                        enough.set()

            tasks = [asyncio.create_task(one(n)) for n in range(60)]
            await asyncio.wait_for(enough.wait(), 30)
            proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
    finally:
        proc.kill()
        proc.wait(10)

    ledger = await backend.ledger()
    assert len(answered) >= 20
    for reply in answered:
        story = await ledger.lead(reply.lead_id)
        assert story.lead is not None, reply.lead_id
        assert (str(story.lead["revenue"]), str(story.lead["cost"])) == (reply.revenue, reply.cost)
        assert [s["buyer_id"] for s in story.sales] == [s.buyer_id for s in reply.sales]


async def test_the_books_from_the_command_line(backend: Backend, tmp_path: Path) -> None:
    ledger = await backend.ledger()
    await ledger.apply([a_lead("L-1", price="45.10"), a_lead("L-2", price="30.00")])
    config = tmp_path / "flows.yaml"
    doc = document(
        [buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "b", returns={"days": 3, "max_rate_percent": 50})]
    )
    config.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "DATABASE_URL": backend.url}

    shown = _cli("lead", "L-1", env=env)
    returned = _cli("return", "L-1", "b", "--reason", "wrong number", "--config", str(config), env=env)
    refused = _cli("return", "L-2", "b", "--reason", "wrong number", "--config", str(config), env=env)
    report = _cli("report", "--by", "buyer", env=env)
    missing = _cli("lead", "nope", env=env)

    assert shown.returncode == 0, shown.stderr
    assert "POST_ACCEPTED" in shown.stdout and "sale: b at 45.10 (sold, exclusive)" in shown.stdout
    assert returned.returncode == 0 and "revenue -45.10" in returned.stdout, returned.stderr
    assert refused.returncode == 1 and "return rate limit" in refused.stderr
    [row] = [line.split() for line in report.stdout.splitlines()[1:]]
    assert row[:5] == ["b", "2", "1", "75.10", "30.00"]
    assert missing.returncode == 1 and "no lead 'nope'" in missing.stderr
    assert Decimal(row[4]) == Decimal("75.10") - Decimal("45.10")
