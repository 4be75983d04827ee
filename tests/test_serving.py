"""`routelead serve` for real: N workers on one port, TLS, tokens, mTLS, metrics, OTLP, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from routelead.api.security import Security, SecurityError, token_matches
from routelead.api.server import Service
from routelead.settings import load_settings
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, slow
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.metrics_scrape import scrape, value
from tests.otlp_receiver import OtlpReceiver
from tests.state.conftest import SECRET, start_redis
from tests.tls import Pki, make_pki

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def shared_state() -> Iterator[dict[str, str]]:
    """Several workers need shared hot state: a throwaway redis-server, and the dedupe key."""
    proc = start_redis()
    yield {"REDIS_URL": proc.url, "ROUTELEAD_DEDUPE_KEY": SECRET.decode()}
    proc.executor.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lead(n: int) -> dict[str, str]:
    return {**GOOD_LEAD, "email": f"w{n}@example.com", "phone": f"55530100{n:02d}"}


class LogFile:
    """The service's stdout (JSON lines from the supervisor and every worker), read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        text = self.path.read_bytes() if self.path.exists() else b""
        return [orjson.loads(line) for line in text.splitlines() if line.startswith(b"{")]

    async def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], within_s: float = 20) -> None:
        end = time.monotonic() + within_s
        while not pred(self.events()):
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting; log so far:\n{self.path.read_text()}")
            await asyncio.sleep(0.05)


def _tls_channel(port: int, pki: Pki, client_cert: bool = False) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca"),
        private_key=pki.read("client_key") if client_cert else None,
        certificate_chain=pki.read("client_cert") if client_cert else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


async def test_workers_share_a_tls_port_authenticate_callers_and_drain_on_sigterm(
    buyers: BuyerServer, pki: Pki, tmp_path: Path, shared_state: dict[str, str]
) -> None:
    buyers.on("a", ping=bid(30), post=accept("A-1"))
    config = tmp_path / "flows.yaml"
    doc = document([buyer(buyers.url, "a", ping={"timeout_ms": 600}, trace_context=True)])
    config.write_text(yaml.safe_dump(doc))
    token_file = tmp_path / "tokens"
    token_file.write_text(f"old-token-being-rotated-out-000\n{TOKEN}\n")
    port, health_port, metrics_port = _free_port(), _free_port(), _free_port()
    otlp = OtlpReceiver()
    await otlp.start()
    log = LogFile(tmp_path / "stdout.jsonl")
    env = {
        **os.environ,
        **shared_state,
        "ROUTELEAD_TLS_CERT": str(pki.server_cert),
        "ROUTELEAD_TLS_KEY": str(pki.server_key),
        "ROUTELEAD_AUTH_TOKEN_FILE": str(token_file),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "routelead-test",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.path.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (starting a process does not block)
            [
                *(sys.executable, "-m", "routelead.cli", "serve", "--config", str(config)),
                *("--listen", f"127.0.0.1:{port}", "--workers", "2"),
                *("--health-listen", f"127.0.0.1:{health_port}"),
                *("--metrics-listen", f"127.0.0.1:{metrics_port}"),
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env=env,
        )
    auth = (("authorization", f"Bearer {TOKEN}"),)
    request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD)
    try:
        await log.wait_for(lambda ev: sum(e["event"] == "server.started" for e in ev) == 2)
        started = [e for e in log.events() if e["event"] == "server.started"]
        assert all(e["tls"] is True and e["auth"] == "token" for e in started)

        # Fresh connections are spread by the kernel over both workers (SO_REUSEPORT).
        for i in range(16):
            async with _tls_channel(port, pki) as channel:
                reply = await pb_grpc.RouteLeadStub(channel).RouteLead(
                    pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=_lead(i)),
                    timeout=10,
                    metadata=auth,
                )
                assert reply.outcome == pb.SOLD and reply.sales[0].buyer_lead_id == "A-1"
        routed = [e for e in log.events() if e["event"] == "lead.routed"]
        assert len(routed) == 16 and {e["worker"] for e in routed} == {"worker-0", "worker-1"}
        assert all(len(e["trace_id"]) == 32 and len(e["span_id"]) == 16 for e in routed)

        async with _tls_channel(port, pki) as channel:
            stub = pb_grpc.RouteLeadStub(channel)
            for md, why in (
                ((), "missing"),
                ((("authorization", "Bearer wrong-token-0123456789"),), "invalid"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.RouteLead(request, timeout=5, metadata=md)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert why in (refused.value.details() or "")
            # Health needs no token (load balancers), on the TLS port as on the probe port.
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as no_tls:
                await pb_grpc.RouteLeadStub(plain).RouteLead(request, timeout=3, metadata=auth)
            assert no_tls.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as probe:
            health = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

        # One /metrics for the pod: the sum over both workers.
        samples = await scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(samples, "routelead_leads_total", outcome="SOLD", test="false") == 16
        assert value(samples, "routelead_ping_duration_seconds_count", buyer="a") == 16
        assert value(samples, "routelead_revenue_dollars_total", buyer="a") == pytest.approx(480.0)
        assert value(samples, "routelead_auth_failures_total") == 2
        # Each worker times its own event loop (how late a 50 ms timer fires): the wait no span shows.
        assert value(samples, "routelead_event_loop_lag_seconds_count") >= 2

        # Spans reached the OTLP endpoint: root, ping and post of one trace, with our service name.
        await _until(lambda: {"RouteLead", "ping", "post"} <= {s.name for s in otlp.spans})
        root = next(s for s in otlp.spans if s.name == "RouteLead")
        same_trace = [s for s in otlp.spans if s.trace_id == root.trace_id]
        assert root.service == "routelead-test" and root.attributes["outcome"] == "SOLD"
        assert {s.name for s in same_trace if s.parent_span_id == root.span_id} >= {"ping", "post"}
        # The buyer asked for trace context: its traceparent names our trace.
        assert any(root.trace_id in r.headers.get("traceparent", "") for r in buyers.got("a", "ping"))

        # A worker that dies is noticed and replaced; the port keeps serving.
        victim = _worker_pids(log)[0]
        os.kill(victim, signal.SIGKILL)
        await log.wait_for(lambda ev: any(e["event"] == "worker.died" and e["pid"] == victim for e in ev))
        await log.wait_for(lambda ev: sum(e["event"] == "server.started" for e in ev) == 3)
        died = next(e for e in log.events() if e["event"] == "worker.died")
        assert died["exit_code"] == -signal.SIGKILL
        samples = await scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(samples, "routelead_worker_restarts_total") == 1
        assert value(samples, "routelead_leads_total", outcome="SOLD") == 16  # the dead worker's count stays
        async with _tls_channel(port, pki) as channel:
            reply = await pb_grpc.RouteLeadStub(channel).RouteLead(
                pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=_lead(30)),
                timeout=10,
                metadata=auth,
            )
            assert reply.outcome == pb.SOLD

        # SIGTERM: every worker drains (the slow in-flight lead is still sold), then all exit 0.
        buyers.on("a", ping=slow(0.4, bid(30)), post=accept("A-2"))
        async with _tls_channel(port, pki) as channel:
            in_flight = asyncio.ensure_future(
                pb_grpc.RouteLeadStub(channel).RouteLead(
                    pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=_lead(40)),
                    timeout=10,
                    metadata=auth,
                )
            )
            await asyncio.sleep(0.15)
            proc.send_signal(signal.SIGTERM)
            reply = await in_flight
        assert reply.outcome == pb.SOLD and reply.sales[0].buyer_lead_id == "A-2"
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
        await otlp.stop()
    events = [e["event"] for e in log.events()]
    assert events.count("worker.stopped") == 3, stderr.decode()  # two workers and the metrics child
    assert events[-1] == "supervisor.stopped"


def _worker_pids(log: LogFile) -> list[int]:
    return [int(e["pid"]) for e in log.events() if e["event"] == "worker.started" and e["role"] != "metrics"]


async def _until(pred: Callable[[], bool], within_s: float = 10) -> None:
    end = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


async def test_mtls_admits_only_callers_with_a_certificate_from_the_ca(buyers: BuyerServer, pki: Pki) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    security = Security.from_settings(
        load_settings(
            {
                "ROUTELEAD_TLS_CERT": str(pki.server_cert),
                "ROUTELEAD_TLS_KEY": str(pki.server_key),
                "ROUTELEAD_TLS_CLIENT_CA": str(pki.ca),
            }
        )
    )
    service = Service(compile_doc(document([buyer(buyers.url, "a")])), security=security)
    await service.start()
    request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD)
    try:
        async with _tls_channel(service.port, pki, client_cert=True) as channel:
            reply = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
            assert reply.outcome == pb.SOLD
        async with _tls_channel(service.port, pki, client_cert=False) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    finally:
        await service.stop(grace=0.5)


def _refused(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`routelead serve` that must refuse to start: its exit and stderr."""
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(document([buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "a")])))
    return subprocess.run(
        [sys.executable, "-m", "routelead.cli", "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_several_workers_without_shared_state_are_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ROUTELEAD_REDIS_URL")}
    proc = _refused(tmp_path, env, "--listen", f"127.0.0.1:{_free_port()}", "--workers", "3")
    # Each worker would keep its own caps: three could sell a buyer three times its cap.
    assert proc.returncode == 2
    assert "--workers 3 (ROUTELEAD_WORKERS) needs shared hot state: set REDIS_URL" in proc.stderr


def test_a_cluster_without_a_node_to_reach_is_refused(tmp_path: Path) -> None:
    """Asked for a Redis Cluster but given no REDIS_URL: refused at start, not served from
    per-process memory that would let replicas oversell caps."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ROUTELEAD_REDIS_URL")}
    env["ROUTELEAD_REDIS_CLUSTER"] = "true"
    proc = _refused(tmp_path, env, "--listen", f"127.0.0.1:{_free_port()}")
    assert proc.returncode == 2
    assert "ROUTELEAD_REDIS_CLUSTER is set but REDIS_URL is not" in proc.stderr


def test_a_public_listener_without_tls_and_auth_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTELEAD_")}
    proc = _refused(tmp_path, env, "--listen", "0.0.0.0:0")
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without TLS and caller authentication" in proc.stderr


def test_security_settings_are_checked_and_tokens_compared_whole(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(SecurityError, match="both ROUTELEAD_TLS_CERT and ROUTELEAD_TLS_KEY"):
        Security.from_settings(load_settings({"ROUTELEAD_TLS_CERT": str(pki.server_cert)}))
    with pytest.raises(SecurityError, match="at least 16 characters"):
        Security.from_settings(load_settings({"ROUTELEAD_AUTH_TOKENS": "short"}))
    with pytest.raises(SecurityError, match="cannot read"):
        Security.from_settings(load_settings({"ROUTELEAD_AUTH_TOKEN_FILE": str(tmp_path / "missing")}))
    s = Security.from_settings(
        load_settings({"ROUTELEAD_AUTH_TOKENS": f"{TOKEN}, another-valid-token-000000"})
    )
    assert token_matches(TOKEN, s.token_digests) and token_matches(
        "another-valid-token-000000", s.token_digests
    )
    assert not token_matches(TOKEN[:-1], s.token_digests) and not token_matches(TOKEN + "x", s.token_digests)
    assert not token_matches("", s.token_digests)
    s.check_exposure("127.0.0.1:50051", insecure=False)  # the local demo
    with pytest.raises(SecurityError, match="without TLS"):
        s.check_exposure("0.0.0.0:50051", insecure=False)
    s.check_exposure("0.0.0.0:50051", insecure=True)


def test_sigterm_while_workers_are_still_starting_is_a_clean_stop(
    tmp_path: Path, shared_state: dict[str, str]
) -> None:
    """A worker that gets the supervisor's SIGTERM before its drain handler exists ends by the
    signal; nothing was in flight there, so the service still stops with 0 (Kubernetes reads it)."""
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(document([buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "a")])))
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["ROUTELEAD_DB"] = str(tmp_path / "books.db")
    env.update(shared_state)
    proc = subprocess.Popen(
        [sys.executable, "-m", "routelead.cli", "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{_free_port()}", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the workers are forked: now stop them mid-boot
            if b'"worker.started"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
