"""Live configuration over the Admin API: versions, replicas following within a second, rollback."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import orjson
import pytest
import yaml
from routelead.api.admin import AdminServicer
from routelead.api.security import Security
from routelead.api.server import Service
from routelead.api.stats import StatsServicer
from routelead.config.loader import ConfigError
from routelead.records.configstore import ConfigStore, compile_version
from routelead.records.reports import Reports
from routelead.settings import load_settings
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, slow
from tests.records.conftest import ADMIN_AUTH as AUTH
from tests.records.conftest import ADMIN_TOKEN as TOKEN
from tests.records.conftest import LITERAL_SECRET as LITERAL
from tests.records.conftest import REPLICA_ENV as ENV
from tests.records.conftest import Backend, Replica, Start
from tests.records.conftest import replica_document as _doc
from tests.tls import make_pki


def change(reason: str, expected: int = 0) -> apb.Change:
    return apb.Change(author="ops@example.com", reason=reason, expected_version=expected)


async def until_sold_to(r: Replica, buyer_id: str, within_s: float) -> tuple[pb.RouteLeadResponse, float]:
    t0 = time.monotonic()
    while True:
        reply = await r.route()
        if [s.buyer_id for s in reply.sales] == [buyer_id]:
            return reply, time.monotonic() - t0
        assert time.monotonic() - t0 < within_s, f"{buyer_id} never won within {within_s} s"


async def test_a_change_through_one_replica_is_used_by_another_within_a_second(replicas: Start) -> None:
    one, two = await replicas(), await replicas()
    first = await two.route()
    assert [s.buyer_id for s in first.sales] == ["a"]

    paused = await one.admin.SetBuyerPaused(
        apb.SetBuyerPausedRequest(buyer_id="a", paused=True, change=change("a asked for a break", 1)),
        metadata=AUTH,
    )
    reply, took = await until_sold_to(two, "b", within_s=1.0)
    rolled = await one.admin.Rollback(
        apb.RollbackRequest(to_version=1, change=change("a is back")), metadata=AUTH
    )
    back, took_back = await until_sold_to(two, "a", within_s=1.0)

    assert paused.version.version == 2 and rolled.version.version == 3
    assert took < 1.0 and took_back < 1.0
    versions = {r.lead_id: (await two.ledger.lead(r.lead_id)).lead for r in (first, reply, back)}
    assert [v["config_version"] for v in versions.values() if v] == ["v1", "v2", "v3"]
    listed = await one.admin.ListVersions(apb.ListVersionsRequest(), metadata=AUTH)
    assert listed.live == 3
    assert [(v.version, v.author, v.reason) for v in listed.versions] == [
        (3, "ops@example.com", "rollback to v1: a is back"),
        (2, "ops@example.com", "a asked for a break"),
        (1, "file", "seeded from the configuration file"),
    ]
    diff = await one.admin.DiffVersions(apb.DiffVersionsRequest(from_version=1, to_version=2), metadata=AUTH)
    assert "+  enabled: false" in diff.unified_diff and diff.unified_diff.startswith("--- v1")


async def test_admin_needs_its_token_validates_like_the_file_and_never_shows_secrets(replicas: Start) -> None:
    r = await replicas()

    for metadata in ((), (("authorization", "Bearer wrong-token-wrong-token"),)):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await r.admin.ListVersions(apb.ListVersionsRequest(), metadata=metadata)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

    got = await r.admin.GetEntity(apb.GetEntityRequest(kind=apb.BUYER, id="a"), metadata=AUTH)
    shown = orjson.loads(got.json)
    assert shown["post"]["headers"] == {"X-Key": "${A_KEY}", "X-Literal": "***"}
    exported = await r.admin.ExportVersion(apb.ExportVersionRequest(), metadata=AUTH)
    assert LITERAL not in exported.yaml and "key-from-env" not in exported.yaml

    too_slow = {**shown, "ping": {**shown["ping"], "timeout_ms": 900}}
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await r.admin.UpsertEntity(
            apb.UpsertEntityRequest(
                kind=apb.BUYER, json=orjson.dumps(too_slow).decode(), change=change("faster")
            ),
            metadata=AUTH,
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "buyers[0].ping.timeout_ms: 900 ms exceeds the 750 ms deadline" in (invalid.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as in_use:
        await r.admin.DeleteEntity(
            apb.DeleteEntityRequest(kind=apb.BUYER, id="a", change=change("gone")), metadata=AUTH
        )
    assert in_use.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # a flow's tier still names it

    # A read-modify-write round trip keeps the masked secret, and a stale one is refused.
    cheaper = {**shown, "priority": 5}
    done = await r.admin.UpsertEntity(
        apb.UpsertEntityRequest(
            kind=apb.BUYER, json=orjson.dumps(cheaper).decode(), change=change("prio", 1)
        ),
        metadata=AUTH,
    )
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await r.admin.UpsertEntity(
            apb.UpsertEntityRequest(
                kind=apb.BUYER, json=orjson.dumps(cheaper).decode(), change=change("again", 1)
            ),
            metadata=AUTH,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert done.version.version == 2
    listed = await r.admin.ListVersions(apb.ListVersionsRequest(), metadata=AUTH)
    assert listed.live == 2  # the refused changes stored nothing
    store = ConfigStore(r.ledger.engine)
    stored = yaml.safe_load((await store.get(2)).document)
    assert stored["buyers"][0]["post"]["headers"]["X-Literal"] == LITERAL
    assert stored["buyers"][0]["priority"] == 5


async def test_a_lead_in_flight_finishes_on_the_version_it_started_with(
    replicas: Start, buyers: BuyerServer
) -> None:
    buyers.on("a", ping=bid("40.00"), post=slow(0.5, accept("A-1")))
    r = await replicas()
    in_flight = asyncio.create_task(r.route())
    await asyncio.sleep(0.08)  # pinged, now posting to a (its post takes 500 ms)

    await r.admin.SetBuyerPaused(
        apb.SetBuyerPausedRequest(buyer_id="a", paused=True, change=change("pause")), metadata=AUTH
    )
    deadline = time.monotonic() + 1.0
    while r.service.config.version != "v2":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert not in_flight.done()  # the new version went live while this lead was being posted
    reply = await in_flight

    assert [s.buyer_id for s in reply.sales] == ["a"]
    story = await r.ledger.lead(reply.lead_id)
    assert story.lead is not None and story.lead["config_version"] == "v1"
    after = await r.route()
    assert [s.buyer_id for s in after.sales] == ["b"]


async def test_the_admin_command_line(replicas: Start, tmp_path: Path) -> None:
    r = await replicas()
    env = {
        **os.environ,
        "ROUTELEAD_ADMIN_TOKEN": TOKEN,
        "ROUTELEAD_ADMIN_TARGET": f"127.0.0.1:{r.service.port}",
    }

    async def cli(*args: str, environ: dict[str, str] = env) -> tuple[int | None, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "routelead.cli",
            "admin",
            "--author",
            "cli-user",
            *args,
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    source = tmp_path / "source.yaml"
    source.write_text("id: src-new\ncost: '3.50'\n")
    paused = await cli("pause", "a", "--reason", "holiday")
    added = await cli("upsert", "source", str(source), "--reason", "new seller")
    versions = await cli("versions")
    diff = await cli("diff", "2", "3")
    got = await cli("get", "buyer", "a")
    listed = await cli("list", "source")
    refused = await cli("delete", "buyer", "a", "--reason", "gone")
    rolled = await cli("rollback", "1", "--reason", "undo")
    exported = await cli("export")
    no_token = await cli("versions", environ={k: v for k, v in env.items() if k != "ROUTELEAD_ADMIN_TOKEN"})
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    bad_files = [
        await cli("upsert", "source", str(tmp_path / "missing.yaml"), "--reason", "x"),
        await cli("upsert", "source", str(broken), "--reason", "x"),
    ]

    assert paused[:2] == (0, "v2 is live: holiday (cli-user)\n"), paused[2]
    # A bad file is one line and exit code 2, never a traceback.
    assert [(code, len(err.splitlines())) for code, _, err in bad_files] == [(2, 1), (2, 1)]
    assert "cannot read" in bad_files[0][2] and "not YAML or JSON at line" in bad_files[1][2]
    assert added[0] == 0 and "v3 is live" in added[1]
    assert versions[1].splitlines()[0].startswith("* v3") and "new seller" in versions[1]
    assert "+- id: src-new" in diff[1]
    assert "enabled: false" in got[1] and LITERAL not in got[1]
    assert listed[1].split() == ["src-1", "src-free", "src-new"]
    assert refused[0] == 1 and "INVALID_ARGUMENT" in refused[2]
    assert rolled[0] == 0 and "v4 is live: rollback to v1: undo" in rolled[1]
    assert (
        exported[1].startswith("# version 4") and "src-new" not in exported[1] and LITERAL not in exported[1]
    )
    assert no_token[0] == 2 and "ROUTELEAD_ADMIN_TOKEN" in no_token[2]
    deadline = time.monotonic() + 1.0
    while r.service.config.version != "v4":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_the_file_seeds_version_one_and_an_edited_file_is_a_new_version(
    backend: Backend, buyers: BuyerServer
) -> None:
    store = ConfigStore((await backend.ledger()).engine)
    text = _doc(buyers)

    first = await store.seed(text, ENV)
    paused = await store.commit(text.replace("id: b\n", "id: b\n  enabled: false\n"), "ops", "pause b", 1)
    restart = await store.seed(text, ENV)  # same file: the Admin change stays live
    edited = await store.seed(text.replace("timeout_ms: 400", "timeout_ms: 350"), ENV)

    assert (first.version, paused.version, restart.version, edited.version) == (1, 2, 2, 3)
    assert edited.author == "file" and edited.reason == "the configuration file changed"
    with pytest.raises(ConfigError):
        await store.seed(text.replace("timeout_ms: 400", "timeout_ms: 900"), ENV)
    assert await store.latest_number() == 3


async def test_the_admin_and_stats_commands_speak_mutual_tls(
    backend: Backend, buyers: BuyerServer, tmp_path: Path
) -> None:
    """Deployed, the service listens with TLS (and may ask for client certificates): the
    operator's commands must get through, and a missing file is one line, not a traceback."""
    pki = make_pki(tmp_path)
    ledger = await backend.ledger()
    store = ConfigStore(ledger.engine)
    live = await store.seed(_doc(buyers), ENV)
    security = Security.from_settings(
        load_settings(
            {
                "ROUTELEAD_TLS_CERT": str(pki.server_cert),
                "ROUTELEAD_TLS_KEY": str(pki.server_key),
                "ROUTELEAD_TLS_CLIENT_CA": str(pki.ca),
            }
        )
    )
    extra = [AdminServicer(store, TOKEN, ENV).register, StatsServicer(Reports(ledger.engine), TOKEN).register]
    service = Service(compile_version(live, ENV), ledger=ledger, security=security, extra_services=extra)
    await service.start()
    env = {**os.environ, "ROUTELEAD_ADMIN_TOKEN": TOKEN}
    tls = ["--target", f"localhost:{service.port}", "--ca-file", str(pki.ca)]
    client = ["--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key)]

    async def cli(*args: str) -> tuple[int | None, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "routelead.cli", *args),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    try:
        versions = await cli("admin", *tls, *client, "versions")
        stats = await cli("stats", *tls, *client)
        by_ip = await cli("admin", *tls, *client, "--target", f"127.0.0.1:{service.port}", "versions")
        no_cert = await cli("admin", *tls, "versions")
        plaintext = await cli("admin", "--target", f"localhost:{service.port}", "versions")
        missing = await cli(
            "admin", "--target", "localhost:1", "--ca-file", str(tmp_path / "nope.pem"), "versions"
        )
    finally:
        await service.stop(grace=0.5)

    assert versions[0] == 0 and "* v1" in versions[1], versions[2]
    assert stats[0] == 0 and "buyer" in stats[1], stats[2]
    assert by_ip[0] == 0, by_ip[2]  # the test certificate holds 127.0.0.1 too
    assert no_cert[0] == 1 and "UNAVAILABLE" in no_cert[2]  # the handshake wants a client certificate
    assert plaintext[0] == 1 and "UNAVAILABLE" in plaintext[2]
    assert (
        missing[0] == 2
        and missing[2].strip()
        == f"routelead: cannot read the CA file {tmp_path / 'nope.pem'}: No such file or directory"
    )
