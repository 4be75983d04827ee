"""`routelead-client`: route a lead from a JSON file, quote and commit it (inbound ping-post),
list and edit buyers, print stats.

`route lead.json` shows who won and why (routing token: ROUTELEAD_TOKEN); `quote ping.json` asks
what RouteLead pays for a lead from its ping fields, `commit QUOTE_ID lead.json` sells it.
`buyers …` and `stats` drive routelead.v1.Admin and routelead.v1.Stats with the admin token
(ROUTELEAD_ADMIN_TOKEN or --token-file); see cli_buyers and cli_stats. Exit 0 on success, 1 when
the service refused or failed the call, 2 for a usage or local error (a bad file, no token).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any, TextIO

from routelead_client import cli_buyers, cli_stats
from routelead_client.admin import DEFAULT_ADMIN_TIMEOUT_S
from routelead_client.cli_common import (
    PROG,
    LocalError,
    connection_options,
    credentials,
    read_text,
    to_json,
    token,
)
from routelead_client.errors import InvalidLead, NotFound, RouteLeadError
from routelead_client.models import QuoteResult, RouteResult
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


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="RouteLead gRPC client.")
    sub = parser.add_subparsers(dest="command", required=True)
    route = sub.add_parser(
        "route",
        parents=[connection_options(timeout_s=2.0)],
        help="route one lead from a JSON file ('-' reads stdin)",
    )
    route.add_argument("file")
    route.add_argument("--lead-id", help="idempotency key (overrides the file's)")
    route.add_argument("--test", action="store_true", help="ping and decide, post nothing")
    route.add_argument("--json", action="store_true", help="print the result as JSON")
    route.add_argument(
        "--token-file", help="file holding the bearer token (else ROUTELEAD_TOKEN, else no token)"
    )
    for name, helps in (
        ("quote", "ask for a quote: the lead's ping fields (no PII) from a JSON file"),
        ("commit", "sell a quoted lead: the quote id and the full lead from a JSON file"),
    ):
        inbound = sub.add_parser(name, parents=[connection_options(timeout_s=2.0)], help=helps)
        if name == "commit":
            inbound.add_argument("quote_id")
        inbound.add_argument("file")
        inbound.add_argument("--json", action="store_true", help="print the result as JSON")
        inbound.add_argument(
            "--token-file", help="file holding the bearer token (else ROUTELEAD_TOKEN, else no token)"
        )
    admin_connection = connection_options(timeout_s=DEFAULT_ADMIN_TIMEOUT_S)
    cli_buyers.add_parser(sub, admin_connection)
    cli_stats.add_parser(sub, admin_connection)
    args = parser.parse_args(argv)
    match args.command:
        case "buyers":
            return cli_buyers.run(args, out, err)
        case "stats":
            return cli_stats.run(args, out, err)
        case "quote" | "commit":
            return _inbound(args, out, err)
    return _route(args, out, err)


def render_quote(q: QuoteResult, out: TextIO) -> None:
    if not q.offered:
        print(f"quote {q.quote_id} → no offer: {q.reason}", file=out)
        return
    assert q.expires_at is not None
    print(
        f"quote {q.quote_id} → ${q.price}, commit by {q.expires_at.isoformat()} "
        f"(in {q.expires_in_ms} ms) [{q.flow}, config {q.config_version}]",
        file=out,
    )


def _inbound(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        lead = parse_lead_file(read_text(args.file))
        routing_token = token(args, "ROUTELEAD_TOKEN")
        creds = credentials(args)
    except BadFile as exc:
        print(f"{PROG}: {args.file}: {exc}", file=err)
        return 2
    except LocalError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    with RouteLeadClient(
        args.target, timeout_s=args.timeout, token=routing_token, credentials=creds
    ) as client:
        try:
            if args.command == "quote":
                result: QuoteResult | RouteResult = client.quote(
                    lead["flow"], lead["source_id"], lead["fields"]
                )
            else:
                result = client.commit(args.quote_id, lead["fields"])
        except (InvalidLead, NotFound) as exc:
            print(f"{PROG}: {exc}", file=err)
            return 2
        except RouteLeadError as exc:
            print(f"{PROG}: {exc}", file=err)
            return 1
    if args.json:
        print(to_json(result), file=out)
    elif isinstance(result, QuoteResult):
        render_quote(result, out)
    else:
        render(result, out)
    return 0


def _route(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        kwargs = parse_lead_file(read_text(args.file))
    except BadFile as exc:
        print(f"{PROG}: {args.file}: {exc}", file=err)
        return 2
    except LocalError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    if args.lead_id:
        kwargs["lead_id"] = args.lead_id
    kwargs["test"] = kwargs["test"] or args.test
    try:
        routing_token = token(args, "ROUTELEAD_TOKEN")
        creds = credentials(args)
    except LocalError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    with RouteLeadClient(
        args.target, timeout_s=args.timeout, token=routing_token, credentials=creds
    ) as client:
        try:
            result = client.route(**kwargs)
        except (InvalidLead, NotFound) as exc:
            print(f"{PROG}: {exc}", file=err)
            return 2
        except RouteLeadError as exc:
            print(f"{PROG}: {exc} (lead_id {exc.lead_id}: safe to retry with it)", file=err)
            return 1
    if args.json:
        print(to_json(result), file=out)
    else:
        render(result, out)
    return 0


def entry() -> int:
    return main()


if __name__ == "__main__":
    sys.exit(entry())
