"""The Admin API cannot make the service send its own secrets, or any the operator did not allow,
to a buyer; and with caller tokens on, the operator's services still take the admin token.

The end-to-end test runs a real `routelead serve` with TLS, caller tokens and the admin token,
and drives it over gRPC and through the `routelead` and `routelead-client` command lines.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import yaml
from routelead.config.loader import ConfigError
from routelead.config.secrets import SecretPolicy, SecretPolicyError
from routelead.records.configstore import ConfigStore
from routelead.records.ledger import Ledger
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import admin_pb2_grpc as apb_grpc
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc
from routelead.v1 import state_admin_pb2 as spb
from routelead.v1 import state_admin_pb2_grpc as spb_grpc
from routelead.v1 import stats_pb2 as stpb
from routelead.v1 import stats_pb2_grpc as stpb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.servers import free_port
from tests.tls import make_pki

ADMIN_TOKEN = "admin-token-never-leaves-0123456789"
CALLER_TOKEN = "caller-token-never-leaves-0123456789"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
CALLER = (("authorization", f"Bearer {CALLER_TOKEN}"),)
VALUES = {
    "A_KEY": "sk-a-from-the-file-1f2e",  # the file names it: stays where the file put it
    "BUYER_KEY": "sk-allowed-variable-77aa",  # allowed by ROUTELEAD_SECRET_PREFIXES
    "OTHER_SECRET": "arbitrary-process-secret-93c1",  # in the environment, allowed to nobody
}
ALLOWED_FILE_VALUE = "sk-allowed-file-5d0c"
OUTSIDE_VALUE = "outside-the-secrets-dir-4b7e"


def _document(buyers: BuyerServer) -> dict[str, Any]:
    a = buyer(buyers.url, "a", ping={"headers": {"X-Key": "${A_KEY}"}})
    return document([a, buyer(buyers.url, "b")], dedupe=None)


class Deployment:
    """Files and environment of one serving process: TLS, caller tokens, the admin token, and a
    secrets directory that also (wrongly, but it happens) holds the TLS key and the token file."""

    def __init__(self, tmp: Path, buyers: BuyerServer) -> None:
        pki = make_pki(tmp)
        self.ca = pki.ca
        self.secrets = tmp / "secrets"
        self.secrets.mkdir()
        self.tls_key = self.secrets / "tls.key"
        shutil.copy(pki.server_key, self.tls_key)
        self.callers = self.secrets / "callers"
        self.callers.write_text(CALLER_TOKEN + "\n")
        (self.secrets / "buyer.key").write_text(ALLOWED_FILE_VALUE + "\n")
        self.outside = tmp / "outside.txt"
        self.outside.write_text(OUTSIDE_VALUE + "\n")
        (self.secrets / "link").symlink_to(self.outside)
        self.config = tmp / "flows.yaml"
        self.config.write_text(yaml.safe_dump(_document(buyers), sort_keys=False))
        self.port = free_port()
        self.log = tmp / "serve.log"
        self.env = {
            **os.environ,
            **VALUES,
            "ROUTELEAD_DB": str(tmp / "routelead.db"),
            "ROUTELEAD_TLS_CERT": str(pki.server_cert),
            "ROUTELEAD_TLS_KEY": str(self.tls_key),
            "ROUTELEAD_AUTH_TOKEN_FILE": str(self.callers),
            "ROUTELEAD_ADMIN_TOKEN": ADMIN_TOKEN,
            # ROUTELEAD_ is listed, and still never allowed: those are the service's own settings.
            "ROUTELEAD_SECRET_PREFIXES": "BUYER_,ROUTELEAD_",
            "ROUTELEAD_SECRETS_DIR": str(self.secrets),
            "ROUTELEAD_LOG_LEVEL": "INFO",
        }
        self.env.pop("ROUTELEAD_ADMIN_TOKEN_FILE", None)
        self.env.pop("ROUTELEAD_AUTH_TOKENS", None)
        self.env.pop("REDIS_URL", None)
        self.env.pop("DATABASE_URL", None)

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    def channel(self) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        return grpc.aio.secure_channel(self.target, creds)

    def forbidden(self) -> list[str]:
        """Values no buyer may ever receive, nor any answer show."""
        key_lines = [ln for ln in self.tls_key.read_text().splitlines() if ln and not ln.startswith("-----")]
        return [ADMIN_TOKEN, CALLER_TOKEN, VALUES["OTHER_SECRET"], OUTSIDE_VALUE, *key_lines]


def _spawn(d: Deployment) -> subprocess.Popen[bytes]:
    with d.log.open("wb") as log:
        cmd = [sys.executable, "-m", "routelead.cli", "serve", "--config", str(d.config)]
        return subprocess.Popen([*cmd, "--listen", f"127.0.0.1:{d.port}"], env=d.env, stdout=log, stderr=log)


async def _serving(d: Deployment) -> subprocess.Popen[bytes]:
    proc = _spawn(d)
    give_up = time.monotonic() + 60
    async with d.channel() as channel:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}: {d.log.read_text()[-2000:]}")
            try:
                await asyncio.wait_for(channel.channel_ready(), 1)
                await apb_grpc.AdminStub(channel).ListVersions(apb.ListVersionsRequest(), metadata=ADMIN)
                return proc
            except (TimeoutError, grpc.aio.AioRpcError):
                assert time.monotonic() < give_up, f"serve did not answer: {d.log.read_text()[-2000:]}"
                await asyncio.sleep(0.2)


async def _cli(d: Deployment, program: str, *args: str) -> tuple[int | None, str, str]:
    module = "routelead.cli" if program == "routelead" else "routelead_client.cli"
    env = {**d.env, "ROUTELEAD_TARGET": d.target, "ROUTELEAD_ADMIN_TARGET": d.target}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def _change(reason: str, author: str = "ops@example.com") -> apb.Change:
    return apb.Change(author=author, reason=reason)


def _with_ping(b: dict[str, Any], header: str, field: str) -> dict[str, Any]:
    ping = {**b["ping"], "headers": {"X-Leak": header}, "fields": {"zip": "zip", "leak": {"value": field}}}
    return {**b, "ping": ping}


async def test_admin_references_are_limited_to_what_the_operator_allowed_over_tls_and_tokens(
    buyers: BuyerServer, tmp_path: Path
) -> None:
    buyers.on("a", ping=bid("40.00"), post=accept("A-1"))
    buyers.on("b", ping=bid("30.00"), post=accept("B-1"))
    d = Deployment(tmp_path, buyers)
    refused_refs = [
        "${ROUTELEAD_ADMIN_TOKEN}",  # the service's own token, though ROUTELEAD_ is "allowed"
        "${ROUTELEAD_AUTH_TOKENS:-none}",
        "${DATABASE_URL}",
        "${OTHER_SECRET}",  # set in the environment, but not allowed
        "${A_KEY}",  # the file gives it to buyer a's ping X-Key, not to b's X-Leak
        f"${{file:{d.outside}}}",  # outside the secrets directory
        f"${{file:{d.secrets}/link}}",  # inside by name, outside once the link is followed
        f"${{file:{d.secrets}/../outside.txt}}",
        f"${{file:{d.tls_key}}}",  # inside the directory, and the service's own TLS key
        f"${{file:{d.callers}}}",  # the caller-token file
        "${file:secrets/buyer.key}",  # relative: resolved against whatever the cwd is
    ]
    proc = await _serving(d)
    try:
        async with d.channel() as channel:
            admin = apb_grpc.AdminStub(channel)
            got = await admin.GetEntity(apb.GetEntityRequest(kind=apb.BUYER, id="b"), metadata=ADMIN)
            b = orjson.loads(got.json)
            refusals: dict[str, list[str]] = {}
            for ref in refused_refs:
                for leaky in (_with_ping(b, ref, "plain"), _with_ping(b, "plain", f"x-{ref}")):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await admin.UpsertEntity(
                            apb.UpsertEntityRequest(
                                kind=apb.BUYER, json=orjson.dumps(leaky).decode(), change=_change("leak")
                            ),
                            metadata=ADMIN,
                        )
                    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ref
                    refusals.setdefault(ref, []).append(refused.value.details() or "")
            # An Admin change may not pass itself off as the file, whose references are trusted.
            with pytest.raises(grpc.aio.AioRpcError) as as_file:
                await admin.SetBuyerPaused(
                    apb.SetBuyerPausedRequest(buyer_id="b", paused=True, change=_change("x", "file")),
                    metadata=ADMIN,
                )
            # Through both command lines, as an operator would: refused, the path named.
            leak_file = tmp_path / "leak.yaml"
            leak_file.write_text(yaml.safe_dump(_with_ping(b, "${ROUTELEAD_ADMIN_TOKEN}", "plain")))
            tls = ["--ca-file", str(d.ca)]
            admin_cli = await _cli(
                d, "routelead", "admin", *tls, "upsert", "buyer", str(leak_file), "--reason", "x"
            )
            client_cli = await _cli(
                d, "routelead-client", "buyers", "put", str(leak_file), "--reason", "x", *tls
            )
            versions = await admin.ListVersions(apb.ListVersionsRequest(), metadata=ADMIN)

            # Allowed: a variable with an allowed prefix, a file inside the directory; and buyer a,
            # read, changed and written back, keeps the ${A_KEY} the file gave it.
            allowed = _with_ping(b, "${BUYER_KEY}", f"${{file:{d.secrets}/buyer.key}}")
            done = await admin.UpsertEntity(
                apb.UpsertEntityRequest(
                    kind=apb.BUYER, json=orjson.dumps(allowed).decode(), change=_change("key")
                ),
                metadata=ADMIN,
            )
            a = orjson.loads(
                (await admin.GetEntity(apb.GetEntityRequest(kind=apb.BUYER, id="a"), metadata=ADMIN)).json
            )
            kept = await admin.UpsertEntity(
                apb.UpsertEntityRequest(
                    kind=apb.BUYER, json=orjson.dumps({**a, "priority": 3}).decode(), change=_change("prio")
                ),
                metadata=ADMIN,
            )
            exported = await admin.ExportVersion(apb.ExportVersionRequest(), metadata=ADMIN)
            diff = await admin.DiffVersions(
                apb.DiffVersionsRequest(from_version=1, to_version=3), metadata=ADMIN
            )

            # A lead, with a caller token: the admin token does not route, nor a caller token administer.
            routing = pb_grpc.RouteLeadStub(channel)
            lead = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD)
            give_up = time.monotonic() + 15
            while True:  # the replica's watcher applies v3 within a poll (250 ms)
                reply = await routing.RouteLead(lead, metadata=CALLER, timeout=10)
                if "X-Leak" in buyers.got("b", "ping")[-1].headers or time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as admin_routes:
                await routing.RouteLead(lead, metadata=ADMIN, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caller_administers:
                await admin.ListVersions(apb.ListVersionsRequest(), metadata=CALLER)
    finally:
        proc.terminate()
        proc.wait(30)

    for ref, details in refusals.items():
        header, field = details
        assert f"buyers[1].ping.headers.X-Leak: {ref} is not an allowed secret reference" in header, header
        assert f"buyers[1].ping.fields.leak.value: {ref} is not an allowed secret reference" in field, field
    assert "ROUTELEAD_TLS_KEY file" in refusals[refused_refs[8]][0]
    assert "ROUTELEAD_AUTH_TOKEN_FILE file" in refusals[refused_refs[9]][0]
    assert "once links are resolved" in refusals[refused_refs[6]][0]
    assert as_file.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "change.author" in (as_file.value.details() or "")
    assert admin_cli[0] == 1, admin_cli
    assert "buyers[1].ping.headers.X-Leak: ${ROUTELEAD_ADMIN_TOKEN} is not an allowed secret" in admin_cli[2]
    assert client_cli[0] == 1, client_cli
    assert "buyers[1].ping.headers.X-Leak: ${ROUTELEAD_ADMIN_TOKEN} is not an allowed secret" in client_cli[2]
    assert versions.live == 1  # every refused change stored nothing
    assert (done.version.version, kept.version.version) == (2, 3)

    assert {s.buyer_id for s in reply.sales} == {"a"}
    b_ping = buyers.got("b", "ping")[-1]
    assert b_ping.headers["X-Leak"] == VALUES["BUYER_KEY"]
    assert b_ping.json()["leak"] == ALLOWED_FILE_VALUE
    assert buyers.got("a", "ping")[0].headers["X-Key"] == VALUES["A_KEY"]
    assert admin_routes.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caller_administers.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # export and diff show the references, never a value.
    assert "${BUYER_KEY}" in exported.yaml and f"${{file:{d.secrets}/buyer.key}}" in exported.yaml
    added = [line for line in diff.unified_diff.splitlines() if line.startswith("+")]
    assert any("X-Leak" in line and "${BUYER_KEY}" in line for line in added), diff.unified_diff
    shown = exported.yaml + diff.unified_diff
    for value in (*VALUES.values(), ALLOWED_FILE_VALUE):
        assert value not in shown

    # No buyer received any forbidden value, and the log names none.
    sent = "\n".join(str(r.headers) + r.body.decode(errors="replace") for r in buyers.got())
    for value in (*d.forbidden(), d.tls_key.read_text().strip()):
        assert value not in sent
        assert value not in d.log.read_text()


async def test_stats_and_state_admin_take_the_admin_token_beside_caller_tokens(
    buyers: BuyerServer, tmp_path: Path
) -> None:
    buyers.on("a", ping=bid("40.00"), post=accept("A-1"))
    d = Deployment(tmp_path, buyers)
    proc = await _serving(d)
    tls = ["--ca-file", str(d.ca)]
    try:
        async with d.channel() as channel:
            await pb_grpc.RouteLeadStub(channel).RouteLead(
                pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD),
                metadata=CALLER,
                timeout=10,
            )
            stats = stpb_grpc.StatsStub(channel)
            state = spb_grpc.StateAdminStub(channel)
            give_up = time.monotonic() + 10
            while True:  # the books take the sale a moment after the answer
                got = await stats.GetStats(stpb.GetStatsRequest(window="today"), metadata=ADMIN)
                if any(b.wins for w in got.windows for b in w.buyers) or time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.1)
            unsettled = await state.ListUnsettled(spb.ListUnsettledRequest(), metadata=ADMIN)
            topped = await state.TopUp(spb.TopUpRequest(buyer_id="a", amount="25.00"), metadata=ADMIN)
            balance = await state.GetBalance(spb.BalanceRequest(buyer_id="a"), metadata=ADMIN)
            breakers = await state.ListBreakers(spb.ListBreakersRequest(), metadata=ADMIN)
            refused = []
            for metadata in (CALLER, ()):
                for call in (
                    stats.GetStats(stpb.GetStatsRequest(window="today"), metadata=metadata),
                    state.GetBalance(spb.BalanceRequest(buyer_id="a"), metadata=metadata),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as denied:
                        await call
                    refused.append(denied.value.code())
        stats_cli = await _cli(d, "routelead", "stats", *tls, "--window", "today")
        versions_cli = await _cli(d, "routelead", "admin", *tls, "versions")
        client_stats = await _cli(d, "routelead-client", "stats", "--window", "today", *tls)
    finally:
        proc.terminate()
        proc.wait(30)

    [today] = got.windows
    assert [b.buyer_id for b in today.buyers if b.wins] == ["a"]
    assert list(unsettled.reservations) == []
    assert topped.balance == balance.balance == "25.00"
    assert {b.buyer_id for b in breakers.breakers} <= {"a", "b"}
    assert refused == [grpc.StatusCode.UNAUTHENTICATED] * 4
    assert stats_cli[0] == 0 and "solar" in stats_cli[1], stats_cli
    assert versions_cli[0] == 0 and "* v1" in versions_cli[1], versions_cli
    assert client_stats[0] == 0 and "solar" in client_stats[1], client_stats


def test_the_file_may_name_any_variable_but_never_the_services_own_secrets(tmp_path: Path) -> None:
    key = tmp_path / "tls.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    env = {
        "SUNPOWER_API_KEY": "sk-file-1",
        "ROUTELEAD_ADMIN_TOKEN": ADMIN_TOKEN,
        "ROUTELEAD_TLS_KEY": str(key),
    }

    def with_header(value: str) -> dict[str, Any]:
        url = lambda b, s: f"http://127.0.0.1:1/{b}/{s}"  # noqa: E731
        return document([buyer(url, "a", ping={"headers": {"X-Key": value}})])

    config = compile_doc(with_header("${SUNPOWER_API_KEY}"), env)  # the operator's file: any variable
    assert config.buyers["a"].ping is not None
    for value, why in (
        ("${ROUTELEAD_ADMIN_TOKEN}", "ROUTELEAD_ADMIN_TOKEN is one of the service's own secrets"),
        ("Bearer ${REDIS_URL:-redis://x}", "REDIS_URL is one of the service's own secrets"),
        (f"${{file:{tmp_path}/./tls.key}}", "it is the service's own ROUTELEAD_TLS_KEY file"),
    ):
        with pytest.raises(ConfigError) as refused:
            compile_doc(with_header(value), env)
        ref = value.split(" ")[-1]
        expected = f"buyers[0].ping.headers.X-Key: {ref} is not an allowed secret reference ({why})"
        assert refused.value.problems == [expected]


async def test_a_version_stored_behind_the_admin_apis_back_is_refused_where_it_is_compiled(
    buyers: BuyerServer, tmp_path: Path
) -> None:
    """An older replica, or a hand edit of the table, stores a version naming a secret: no replica
    compiles it. The file's own references stay trusted, where the file puts them."""
    env = {**VALUES, "ROUTELEAD_SECRET_PREFIXES": "BUYER_"}
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'books.db'}")
    try:
        store = ConfigStore(ledger.engine)
        file_doc = _document(buyers)
        seeded = await store.seed(yaml.safe_dump(file_doc), env)
        leaky = {
            **file_doc,
            "buyers": [file_doc["buyers"][0], _with_ping(file_doc["buyers"][1], "${OTHER_SECRET}", "z")],
        }
        stored = await store.commit(yaml.safe_dump(leaky), "ops", "older replica", seeded.version)
        with pytest.raises(ConfigError) as refused:
            await store.compile(stored, env)
        fine = await store.compile(seeded, env)
        allowed = {
            **leaky,
            "buyers": [file_doc["buyers"][0], _with_ping(file_doc["buyers"][1], "${BUYER_KEY}", "z")],
        }
        ok = await store.commit(yaml.safe_dump(allowed), "ops", "allowed", stored.version)
        compiled = await store.compile(ok, env)
    finally:
        await ledger.close()
    assert refused.value.problems == [
        "buyers[1].ping.headers.X-Leak: ${OTHER_SECRET} is not an allowed secret reference "
        "(ROUTELEAD_SECRET_PREFIXES allows variables starting with BUYER_)"
    ]
    assert fine.buyers["a"].ping is not None and compiled.buyers["b"].ping is not None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROUTELEAD_SECRETS_DIR": "/"}, "would open files that are not secrets"),
        ({"ROUTELEAD_SECRETS_DIR": "/proc/self"}, "would open files that are not secrets"),
        ({"ROUTELEAD_SECRETS_DIR": "run/secrets"}, "is not an absolute path"),
        ({"ROUTELEAD_SECRET_PREFIXES": "BUYER_,9X"}, "'9X' cannot start a variable name"),
    ],
)
def test_unusable_allow_list_settings_stop_the_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(SecretPolicyError, match=message):
        SecretPolicy.from_env(env)


async def test_serve_refuses_an_unusable_allow_list_before_it_listens(
    tmp_path: Path, buyers: BuyerServer
) -> None:
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(_document(buyers)))
    env = {**os.environ, **VALUES, "ROUTELEAD_SECRETS_DIR": "/", "ROUTELEAD_DB": str(tmp_path / "db")}
    listen = f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "routelead.cli", "serve", "--config", str(config), "--listen", listen),
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "ROUTELEAD_SECRETS_DIR: / would open files that are not secrets" in err.decode()
