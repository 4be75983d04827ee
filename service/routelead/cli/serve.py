"""`routelead serve | check-config | migrate | sink | demo | buyers-sim`: the service and its helpers."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from routelead.cli.common import fail, load, run

if TYPE_CHECKING:
    from routelead.settings import Settings


def add_parsers(sub: Any, settings: Settings) -> None:
    serve = sub.add_parser("serve", help="run the gRPC service")
    serve.add_argument("--config", default=settings.config, help="YAML file (or ROUTELEAD_CONFIG)")
    serve.add_argument("--listen", default=settings.listen, help="host:port")
    serve.add_argument("--log-level", default=settings.log_level)
    serve.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help="worker processes sharing the port (SO_REUSEPORT); 0 = one per core (or ROUTELEAD_WORKERS)",
    )
    serve.add_argument(
        "--metrics-listen",
        default=settings.metrics_listen,
        help="host:port for Prometheus /metrics; empty = off (or ROUTELEAD_METRICS_LISTEN)",
    )
    serve.add_argument(
        "--health-listen",
        default=settings.health_listen,
        help="host:port of a plaintext health-only gRPC port for probes (or ROUTELEAD_HEALTH_LISTEN)",
    )
    serve.add_argument(
        "--max-in-flight",
        type=int,
        default=settings.max_in_flight,
        help="calls one worker takes at once; more are refused with RESOURCE_EXHAUSTED so callers "
        "retry elsewhere instead of waiting past their deadline; 0 = no limit (or ROUTELEAD_MAX_IN_FLIGHT)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=settings.insecure,
        help="allow a non-loopback listener without TLS and caller authentication (or ROUTELEAD_INSECURE=1)",
    )
    serve.set_defaults(run=_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")
    check.set_defaults(run=_check)

    demo = sub.add_parser("demo", help="simulated buyers + the example config + a stream of sample leads")
    demo.add_argument("--leads", type=int, default=15)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(run=_demo)

    migrate = sub.add_parser(
        "migrate", help="bring the ledger database (DATABASE_URL or ROUTELEAD_DB) up to date"
    )
    migrate.set_defaults(run=_migrate)

    sink = sub.add_parser("sink", help="move Redis outbox records into the ledger database")
    sink.add_argument("--config", default=settings.config, help="for the buyer list")
    sink.add_argument("--redis-url", default=settings.redis_url or "redis://127.0.0.1:6379/0")
    sink.add_argument(
        "--consumer",
        default=settings.sink_consumer,
        help="stable per sink instance, so a restart resumes its own pending entries",
    )
    sink.set_defaults(run=_sink)

    sim = sub.add_parser("buyers-sim", help="run the simulated buyer fleet (for the example config)")
    sim.add_argument("--port", type=int, default=8700)
    sim.set_defaults(run=_buyers_sim)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    c = load(args.config)
    print(f"{args.config}: OK (version {c.version}; {len(c.buyers)} buyers, {len(c.flows)} flows)")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Nothing here creates a gRPC object: workers are forked first and build their own.
    from routelead.api.process import ServeOptions, prepare_metrics_dir, serve
    from routelead.records.db import database_url
    from routelead.state.select import check_state_env
    from routelead.telemetry.logs import configure_logging

    config = load(args.config)
    configure_logging(args.log_level)
    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    try:
        # Before any worker is forked: fail once, clearly.
        check_state_env(settings, workers, database_url(settings))
    except ValueError as exc:  # StateConfigError, or a DATABASE_URL naming no supported database
        fail(str(exc))
        return 2
    own_dir = prepare_metrics_dir() if workers > 1 and args.metrics_listen else None

    from routelead.api.security import Security, SecurityError
    from routelead.config.secrets import SecretPolicy, SecretPolicyError

    try:
        security = Security.from_settings(settings)
        security.check_exposure(args.listen, args.insecure)
        SecretPolicy.from_env()  # what Admin changes may name: a bad setting fails here, once
    except (SecurityError, SecretPolicyError) as exc:
        fail(str(exc))
        return 2
    opts = ServeOptions(
        config=config,
        listen=args.listen,
        security=security,
        settings=settings,
        workers=workers,
        metrics_listen=args.metrics_listen,
        health_listen=args.health_listen,
        log_level=args.log_level,
        config_path=args.config,
        max_in_flight=max(0, args.max_in_flight),
    )
    try:
        return serve(opts, own_dir)
    except ValueError as exc:
        fail(str(exc))
        return 2


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from routelead.records.db import create_engine, database_url, migrate

    async def go() -> str:
        engine = create_engine(database_url(settings))
        try:
            return await migrate(engine)
        finally:
            await engine.dispose()

    print(f"ledger schema at revision {run(go())}")
    return 0


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from routelead.records.db import database_url
    from routelead.records.ledger import Ledger
    from routelead.records.sink import OutboxSink
    from routelead.state.redis.connection import open_client
    from routelead.telemetry.logs import configure_logging

    config = load(args.config)
    configure_logging(settings.log_level)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ledger = await Ledger.open(database_url(settings))
        client = open_client(args.redis_url, cluster=settings.redis_cluster)
        try:
            await OutboxSink(client, ledger, config.buyers, args.consumer).run(stop)
        finally:
            await client.aclose()
            await ledger.close()

    run(go())
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from routelead.demo.run import run_demo
    from routelead.telemetry.logs import configure_logging
    from routelead.telemetry.tracing import configure_tracing

    configure_logging("WARNING", sys.stderr)  # the demo prints its own readable lines
    configure_tracing(settings)
    run(run_demo(args.leads, sys.stdout, args.seed, settings=settings))
    return 0


def _buyers_sim(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from routelead.demo.fleet import build_app

    print(f"simulated buyers on http://127.0.0.1:{args.port}/<buyer>/ping|post")
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None)
    return 0
