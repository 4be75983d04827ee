"""Command line: serve, check-config, demo, buyers-sim, migrate, sink."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from routelead.config.loader import ConfigError, load_config
from routelead.settings import Settings, SettingsError, load_settings


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no Windows build
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()  # every variable, checked once, before anything starts
    except SettingsError as exc:
        print(f"routelead: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="routelead", description="Real-time lead distribution by ping-post."
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")

    demo = sub.add_parser("demo", help="simulated buyers + the example config + a stream of sample leads")
    demo.add_argument("--leads", type=int, default=15)
    demo.add_argument("--seed", type=int, default=7)

    sub.add_parser("migrate", help="bring the ledger database (DATABASE_URL or ROUTELEAD_DB) up to date")

    sink = sub.add_parser("sink", help="move Redis outbox records into the ledger database")
    sink.add_argument("--config", default=settings.config, help="for the buyer list")
    sink.add_argument("--redis-url", default=settings.redis_url or "redis://127.0.0.1:6379/0")
    sink.add_argument(
        "--consumer",
        default=settings.sink_consumer,
        help="stable per sink instance, so a restart resumes its own pending entries",
    )

    from routelead.records import commands as books

    books.add_parsers(sub, settings.config)
    from routelead.api import admin_cli

    admin_cli.add_parser(sub, settings)
    from routelead.api import stats_cli
    from routelead.replay import cli as replay_cli

    stats_cli.add_parser(sub, settings)
    replay_cli.add_parser(sub)

    sim = sub.add_parser("buyers-sim", help="run the simulated buyer fleet (for the example config)")
    sim.add_argument("--port", type=int, default=8700)

    from routelead.api.state_cli import add_state_commands, run_state_command

    add_state_commands(sub, settings)
    args = parser.parse_args(argv)
    if getattr(args, "state_command", None):
        return run_state_command(args, settings)
    match args.command:
        case "serve":
            return _serve(args, settings)
        case "check-config":
            return _check(args.config)
        case "demo":
            return _demo(args.leads, args.seed, settings)
        case "buyers-sim":
            return _buyers_sim(args.port)
        case "migrate":
            return _migrate(settings)
        case "sink":
            return _sink(args.config, args.redis_url, args.consumer, settings)
        case "admin":
            return admin_cli.run(args, settings)
        case "stats":
            return stats_cli.run(args, settings)
        case "replay":
            return replay_cli.run(args, settings)
        case command if command in books.COMMANDS:
            return books.run(args, _load, settings)
    return 2


def _load(path: str | None) -> Any:
    if not path:
        print("routelead: no configuration: pass --config FILE or set ROUTELEAD_CONFIG", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"routelead: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _check(path: str) -> int:
    config = _load(path)
    print(f"{path}: OK (version {config.version}; {len(config.buyers)} buyers, {len(config.flows)} flows)")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Nothing here creates a gRPC object: workers are forked first and build their own.
    from routelead.api.process import ServeOptions, prepare_metrics_dir, serve
    from routelead.records.db import database_url
    from routelead.state.select import check_state_env
    from routelead.telemetry.logs import configure_logging

    config = _load(args.config)
    configure_logging(args.log_level)
    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    try:
        # Before any worker is forked: fail once, clearly.
        check_state_env(settings, workers, database_url(settings))
    except ValueError as exc:  # StateConfigError, or a DATABASE_URL naming no supported database
        print(f"routelead: {exc}", file=sys.stderr)
        return 2
    own_dir = prepare_metrics_dir() if workers > 1 and args.metrics_listen else None

    from routelead.api.security import Security, SecurityError
    from routelead.config.secrets import SecretPolicy, SecretPolicyError

    try:
        security = Security.from_settings(settings)
        security.check_exposure(args.listen, args.insecure)
        SecretPolicy.from_env()  # what Admin changes may name: a bad setting fails here, once
    except (SecurityError, SecretPolicyError) as exc:
        print(f"routelead: {exc}", file=sys.stderr)
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
        print(f"routelead: {exc}", file=sys.stderr)
        return 2


def _migrate(settings: Settings) -> int:
    from routelead.records.db import create_engine, database_url, migrate

    async def go() -> str:
        engine = create_engine(database_url(settings))
        try:
            return await migrate(engine)
        finally:
            await engine.dispose()

    print(f"ledger schema at revision {_run(go())}")
    return 0


def _sink(path: str | None, redis_url: str, consumer: str, settings: Settings) -> int:
    import signal

    from routelead.records.db import database_url
    from routelead.records.ledger import Ledger
    from routelead.records.sink import OutboxSink
    from routelead.state.redis.connection import open_client
    from routelead.telemetry.logs import configure_logging

    config = _load(path)
    configure_logging(settings.log_level)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ledger = await Ledger.open(database_url(settings))
        client = open_client(redis_url, cluster=settings.redis_cluster)
        try:
            await OutboxSink(client, ledger, config.buyers, consumer).run(stop)
        finally:
            await client.aclose()
            await ledger.close()

    _run(go())
    return 0


def _demo(leads: int, seed: int, settings: Settings) -> int:
    from routelead.demo.run import run_demo
    from routelead.telemetry.logs import configure_logging
    from routelead.telemetry.tracing import configure_tracing

    configure_logging("WARNING", sys.stderr)  # the demo prints its own readable lines
    configure_tracing(settings)
    _run(run_demo(leads, sys.stdout, seed, settings=settings))
    return 0


def _buyers_sim(port: int) -> int:
    from aiohttp import web

    from routelead.demo.fleet import build_app

    print(f"simulated buyers on http://127.0.0.1:{port}/<buyer>/ping|post")
    web.run_app(build_app(), host="127.0.0.1", port=port, print=None)
    return 0


def entry() -> int:
    """Console entry point: a closed pipe (`routelead demo | head`) ends quietly."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(entry())
