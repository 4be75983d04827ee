"""What every `routelead-client` command shares: connection options, secrets from files, JSON output."""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

PROG = "routelead-client"


class LocalError(Exception):
    """A problem found before any call (a file, a missing token): exit 2. The message says what."""


def connection_options(timeout_s: float) -> argparse.ArgumentParser:
    """A parent parser: where the service is and how to reach it."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--target",
        default=os.environ.get("ROUTELEAD_TARGET", "127.0.0.1:50051"),
        help="gRPC target, e.g. dns:///routelead.ns.svc:50051 (or ROUTELEAD_TARGET)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=timeout_s,
        help=f"seconds the call may take, retries included (default {timeout_s})",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca-file)")
    p.add_argument("--ca-file", help="PEM CA bundle that signed the server certificate (implies --tls)")
    return p


def read_text(path: str) -> str:
    """A file's text, or stdin for '-'."""
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}") from None


def credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    ca = read_text(args.ca_file).encode() if args.ca_file else None
    return grpc.ssl_channel_credentials(root_certificates=ca) if (args.tls or ca) else None


def token(args: argparse.Namespace, env_name: str) -> str | None:
    # Secrets from a file or the environment, never from the command line (it shows in `ps`).
    if args.token_file:
        return read_text(args.token_file).strip() or None
    return os.environ.get(env_name, "").strip() or None


def admin_token(args: argparse.Namespace) -> str:
    found = token(args, "ROUTELEAD_ADMIN_TOKEN")
    if not found:
        raise LocalError("needs the admin token: set ROUTELEAD_ADMIN_TOKEN or pass --token-file")
    return found


def to_json(value: Any) -> str:
    """Dataclasses (nested too) as JSON; money stays exact (a string, never a float), enums by value."""

    def default(o: object) -> object:
        if is_dataclass(o) and not isinstance(o, type):
            return asdict(o)
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, date):  # datetime too
            return o.isoformat()
        if isinstance(o, enum.Enum):
            return o.value
        raise TypeError(type(o).__name__)

    return json.dumps(value, default=default, indent=2)
