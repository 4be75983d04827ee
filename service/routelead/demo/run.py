"""`routelead demo`: fleet + service + a stream of sample leads, printing who won and why."""

from __future__ import annotations

import os
import random
import shlex
import tempfile
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from typing import TextIO

import grpc

from routelead.api.server import Service
from routelead.config.loader import load_config
from routelead.demo.fleet import start_fleet
from routelead.demo.leads import sample_auto_lead, sample_lead
from routelead.records.db import database_url
from routelead.records.ledger import Ledger
from routelead.settings import Settings, load_settings
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

DEMO_KEYS = {"SUNPOWER_API_KEY": "demo-sunpower-key", "SOLARCITY_API_KEY": "demo-solarcity-key"}


def example_config_path() -> str:
    return str(resources.files("routelead") / "examples" / "solar.yaml")


async def run_demo(leads: int, out: TextIO, seed: int = 7, *, settings: Settings) -> dict[str, int]:
    runner, fleet_port = await start_fleet(seed=seed)
    env = {**DEMO_KEYS, **os.environ, "ROUTELEAD_BUYERS_URL": f"http://127.0.0.1:{fleet_port}"}
    config = load_config(example_config_path(), env=env)
    counts: dict[str, int] = {}
    revenue = cost = Decimal("0")
    # The embedded books: a SQLite file, no server needed. Where the user points the books
    # (DATABASE_URL / ROUTELEAD_DB) the demo writes there; otherwise a fresh file in a temporary
    # directory, so running the demo from a checkout writes nothing into it.
    books_env = demo_books_env(os.environ)
    books = database_url(load_settings({**os.environ, **books_env}) if books_env else settings)
    ledger = await Ledger.open(books)
    sold = ""
    try:
        async with (
            Service(config, ledger=ledger) as service,
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
        ):
            stub = pb_grpc.RouteLeadStub(channel)
            print(
                f"RouteLead demo: service on 127.0.0.1:{service.port}, simulated buyers on :{fleet_port}",
                file=out,
            )
            rng = random.Random(seed)
            for n in range(leads):
                # Two verticals side by side: every third lead is an auto insurance lead.
                flow, sample = ("auto", sample_auto_lead) if n % 3 == 2 else ("solar", sample_lead)
                fields = sample(rng, n)
                if n and n % 7 == 0:
                    fields = sample_lead(random.Random(seed), 0)  # now and then a repeat: the dedupe check
                    flow = "solar"
                reply = await stub.RouteLead(
                    pb.RouteLeadRequest(flow=flow, source_id="aff-sunrise", fields=fields), timeout=5
                )
                outcome = pb.Outcome.Name(reply.outcome)
                counts[outcome] = counts.get(outcome, 0) + 1
                revenue += Decimal(reply.revenue)
                cost += Decimal(reply.cost)
                print_reply(reply, fields, out, flow)
                if reply.sales:
                    sold = reply.lead_id
            await inbound_demo(stub, random.Random(seed + 1), leads, out)
    finally:
        await runner.cleanup()
        await ledger.close()
    where = books.split(":///", 1)[-1]
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in books_env.items())
    hint = f": try `{prefix}routelead lead {sold[:12]}`" if sold else ""
    print(f"\nevery lead is on the books in {where}{hint}", file=out)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"\n{leads} leads: {summary}; revenue {revenue}, cost {cost}, margin {revenue - cost}", file=out)
    return counts


async def inbound_demo(stub: pb_grpc.RouteLeadStub, rng: random.Random, n: int, out: TextIO) -> None:
    """A supplier's ping-post: its ping fields for a quote, then the full lead for the offer."""
    source = "exch-solarhub"
    fields = {**sample_lead(rng, n), "state": "CA", "zip": "90210", "homeowner": "true"}
    ping = {k: v for k, v in fields.items() if k not in PII_FIELDS}
    print(f"\ninbound ping-post: {source} asks for a quote with the ping fields only", file=out)
    quote = await stub.Quote(pb.QuoteRequest(source_id=source, flow="solar", fields=ping), timeout=5)
    if not quote.offered:
        print(f"quote {quote.quote_id[:14]} → no offer: {quote.reason}", file=out)
        return
    print(
        f"quote {quote.quote_id[:14]} → we pay ${quote.price} if it sells; commit within "
        f"{quote.expires_in_ms / 1000:.0f} s",
        file=out,
    )
    reply = await stub.Commit(pb.CommitRequest(quote_id=quote.quote_id, fields=fields), timeout=5)
    print(f"{source} commits the full lead (cost booked at the quoted ${quote.price}):", file=out)
    print_reply(reply, fields, out)


PII_FIELDS = ("first_name", "last_name", "email", "phone", "address")


def demo_books_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that point `routelead lead` at the demo's books: none when the user chose
    them (DATABASE_URL or ROUTELEAD_DB), else ROUTELEAD_DB in a new temporary directory."""
    if env.get("DATABASE_URL", "").strip() or env.get("ROUTELEAD_DB", "").strip():
        return {}
    return {"ROUTELEAD_DB": os.path.join(tempfile.mkdtemp(prefix="routelead-demo-"), "routelead.db")}


def print_reply(
    reply: pb.RouteLeadResponse, fields: dict[str, str], out: TextIO, flow: str = "solar"
) -> None:
    outcome = pb.Outcome.Name(reply.outcome)
    where = f"{flow} {fields.get('state', '?')} {fields.get('zip', '?')[:3]}xx"
    if reply.sales:
        sale = reply.sales[0]
        head = f"SOLD to {sale.buyer_id} at ${sale.price} (margin {_usd(reply.margin)})"
    else:
        head = outcome
    print(f"\nlead {reply.lead_id[:12]} [{where}] → {head} in {reply.elapsed_ms:.0f} ms", file=out)
    if reply.reason:
        print(f"    refused: {reply.reason}", file=out)
    for c in reply.checks:
        said = f"  {c.detail}" if c.detail else ""
        print(f"    check {c.kind} {c.name}: {c.result} in {c.ms:.0f} ms{said}", file=out)
    for a in reply.attempts:
        price = f"${a.price}" if a.price else ""
        ms = f"{a.ping_ms:.0f}ms" if a.ping_ms else ""
        status = pb.AttemptStatus.Name(a.status)
        print(f"    {a.buyer_id:<11} {a.tier:<10} {status:<19} {price:>7} {ms:>6}  {a.reason}", file=out)


def _usd(amount: str) -> str:
    return f"-${amount[1:]}" if amount.startswith("-") else f"${amount}"
