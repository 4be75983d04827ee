"""`routelead-client route lead.json`: route one lead from a JSON file and show who won and why.

Listing and editing buyers needs the Admin API (issue 11) and stats need a stats RPC; neither
exists yet, so this CLI routes leads only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import grpc

from routelead_client.errors import InvalidLead, NotFound, RouteLeadError
from routelead_client.models import RouteResult
from routelead_client.sync import RouteLeadClient


class BadFile(ValueError):
    """The lead file cannot be used; the message says why (and never quotes field values)."""


def parse_lead_file(text: str) -> dict[str, Any]:
    """{"flow", "source_id", "fields": {name: value}, optional "lead_id" and "test"} → route() kwargs."""
    try:
        doc = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise BadFile(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise BadFile("the file must hold one JSON object")
    problems = []
    unknown = sorted(set(doc) - {"flow", "source_id", "fields", "lead_id", "test"})
    if unknown:
        problems.append(f"unknown keys: {', '.join(unknown)}")
    for key in ("flow", "source_id"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            problems.append(f"{key}: required, a string")
    fields = doc.get("fields")
    out: dict[str, str] = {}
    if not isinstance(fields, dict):
        problems.append("fields: required, an object of field name to value")
    else:
        for name, value in fields.items():
            if isinstance(value, bool):
                out[name] = "true" if value else "false"
            elif isinstance(value, str | int | Decimal):
                out[name] = str(value)
            else:
                problems.append(f"fields.{name}: must be a string, number or boolean")
    if "lead_id" in doc and not isinstance(doc["lead_id"], str):
        problems.append("lead_id: must be a string")
    if "test" in doc and not isinstance(doc["test"], bool):
        problems.append("test: must be true or false")
    if problems:
        raise BadFile("; ".join(problems))
    return {
        "flow": doc["flow"],
        "source_id": doc["source_id"],
        "fields": out,
        "lead_id": doc.get("lead_id") or None,
        "test": bool(doc.get("test", False)),
    }


def render(r: RouteResult, out: TextIO) -> None:
    head = f"SOLD to {r.sales[0].buyer_id} at ${r.sales[0].price}" if r.sales else r.outcome.value
    extra = " (replayed)" if r.replayed else ""
    print(f"lead {r.lead_id} → {head}{extra} in {r.elapsed_ms:.0f} ms", file=out)
    print(f"  cost ${r.cost}  revenue ${r.revenue}  margin ${r.margin}  trace {r.trace_id}", file=out)
    for a in r.attempts:
        price = f"${a.price}" if a.price is not None else ""
        ms = f"{a.ping_ms:.0f}ms" if a.ping_ms else ""
        print(f"    {a.buyer_id:<14} {a.tier:<10} {a.status:<19} {price:>8} {ms:>6}  {a.reason}", file=out)


def as_json(r: RouteResult) -> str:
    def default(o: object) -> str:
        if isinstance(o, Decimal):
            return str(o)  # money stays exact: a string, never a float
        raise TypeError(type(o).__name__)

    from dataclasses import asdict

    doc = asdict(r)
    doc["outcome"] = r.outcome.value
    return json.dumps(doc, default=default, indent=2)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="routelead-client", description="RouteLead gRPC client.")
    sub = parser.add_subparsers(dest="command", required=True)
    route = sub.add_parser("route", help="route one lead from a JSON file ('-' reads stdin)")
    route.add_argument("file")
    route.add_argument(
        "--target",
        default=os.environ.get("ROUTELEAD_TARGET", "127.0.0.1:50051"),
        help="gRPC target, e.g. dns:///routelead.ns.svc:50051 (or ROUTELEAD_TARGET)",
    )
    route.add_argument(
        "--timeout", type=float, default=2.0, help="seconds for the whole call, retries included"
    )
    route.add_argument("--lead-id", help="idempotency key (overrides the file's)")
    route.add_argument("--test", action="store_true", help="ping and decide, post nothing")
    route.add_argument("--json", action="store_true", help="print the result as JSON")
    route.add_argument(
        "--token-file", help="file holding the bearer token (else ROUTELEAD_TOKEN, else no token)"
    )
    route.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca-file)")
    route.add_argument("--ca-file", help="PEM CA bundle that signed the server certificate (implies --tls)")
    args = parser.parse_args(argv)

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        kwargs = parse_lead_file(text)
    except OSError as exc:
        print(f"routelead-client: cannot read {args.file}: {exc.strerror}", file=err)
        return 2
    except BadFile as exc:
        print(f"routelead-client: {args.file}: {exc}", file=err)
        return 2
    if args.lead_id:
        kwargs["lead_id"] = args.lead_id
    kwargs["test"] = kwargs["test"] or args.test
    try:
        # Secrets from a file or the environment, never from the command line (it shows in `ps`).
        token = (
            Path(args.token_file).read_text().strip()
            if args.token_file
            else os.environ.get("ROUTELEAD_TOKEN")
        )
        ca = Path(args.ca_file).read_bytes() if args.ca_file else None
    except OSError as exc:
        print(f"routelead-client: cannot read {exc.filename}: {exc.strerror}", file=err)
        return 2
    creds = grpc.ssl_channel_credentials(root_certificates=ca) if (args.tls or ca) else None
    with RouteLeadClient(args.target, timeout_s=args.timeout, token=token, credentials=creds) as client:
        try:
            result = client.route(**kwargs)
        except (InvalidLead, NotFound) as exc:
            print(f"routelead-client: {exc}", file=err)
            return 2
        except RouteLeadError as exc:
            print(f"routelead-client: {exc} (lead_id {exc.lead_id}: safe to retry with it)", file=err)
            return 1
    if args.json:
        print(as_json(result), file=out)
    else:
        render(result, out)
    return 0


def entry() -> int:
    return main()


if __name__ == "__main__":
    sys.exit(entry())
