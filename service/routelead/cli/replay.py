"""`routelead replay --config candidate.yaml [--since …] [--until …]`: what-if, offline."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from routelead.cli.common import fail, table, when
from routelead.replay.engine import Comparison, Side

if TYPE_CHECKING:
    from routelead.settings import Settings

CANNOT_KNOW = """\
What replay cannot know (counted above, never guessed silently):
  - bids from buyers that were not pinged when the lead was routed: left out ("unpinged");
  - post outcomes of buyers that never got a post: assumed to accept at their bid ("assumed accepts");
  - PII-dependent filters: PII is never stored, so filters see only the ping fields;
  - caps, schedules, dedupe, circuit breakers, rotation turns and volume counts at the original moment;
  - returns after the sale: both sides are compared at sale time.
"""


def add_parsers(sub: Any, settings: Settings) -> None:
    p = sub.add_parser("replay", help="what-if: recorded leads and bids through a candidate config")
    p.add_argument("--config", required=True, help="the candidate configuration (YAML)")
    p.add_argument("--since", help="ISO date or time, UTC (default: 24 hours ago)")
    p.add_argument("--until", help="ISO date or time, UTC (default: now)")
    p.add_argument("--flow", help="only this flow")
    p.add_argument("--lead-type", help="only leads of this lead type (vertical)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    from routelead.config.loader import ConfigError, load_config

    try:
        # Secrets (${VAR}) need not be set: replay never contacts a buyer.
        config = load_config(args.config, _placeholders(Path(args.config).read_text()))
    except (ConfigError, OSError) as exc:
        fail(str(exc))
        return 2
    until = when(args.until) if args.until else datetime.now(UTC)
    since = when(args.since) if args.since else until - timedelta(days=1)
    if until <= since:
        fail("--until must be after --since")
        return 2
    lead_type = getattr(args, "lead_type", None)
    comparison = asyncio.run(_replay(config, since, until, args.flow, settings, lead_type))
    (out or sys.stdout).write(render(comparison, since, until))
    return 0


# ${VAR} or ${VAR:-default}, as the loader reads them (${file:…} does not match: read as usual).
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def _placeholders(text: str) -> dict[str, str]:
    """A stand-in for each ${VAR} without a default; one with a default (`${BUYERS_URL:-http://…}`)
    takes its default, so URLs built from it stay URLs."""
    return {m.group(1): "replay-placeholder" for m in _VAR.finditer(text) if m.group(2) is None}


async def _replay(
    config: Any,
    since: datetime,
    until: datetime,
    flow: str | None,
    settings: Settings,
    lead_type: str | None = None,
) -> Comparison:
    from routelead.records.db import database_url
    from routelead.records.ledger import Ledger
    from routelead.records.reports import Reports
    from routelead.replay.engine import compare_into
    from routelead.replay.recorded import recorded_leads

    ledger = await Ledger.open(database_url(settings))
    try:
        counts = await Reports(ledger.engine).post_accept_rates(since - timedelta(days=7))
        # The same smoothing as the live ranking (a prior of 9 in 10 accepted).
        rates = {b: Decimal(a + 9) / Decimal(n + 10) for b, (a, n) in counts.items()}
        comparison = Comparison()
        async for lead in recorded_leads(ledger.engine, since, until, flow, lead_type):
            compare_into(comparison, config, lead, rates)
        return comparison
    finally:
        await ledger.close()


def _pct(n: int, d: int) -> str:
    return f"{n * 100 / d:.1f}%" if d else "-"


def render(c: Comparison, since: datetime, until: datetime) -> str:
    a, b = c.actual, c.candidate
    lines = [f"replay of {a.leads} recorded leads [{since.isoformat()} .. {until.isoformat()})\n\n"]
    rows = [
        ("sold", str(a.sold), str(b.sold), f"{b.sold - a.sold:+d}"),
        ("sell-through", _pct(a.sold, a.leads), _pct(b.sold, b.leads), ""),
        ("revenue", str(a.revenue), str(b.revenue), _signed(b.revenue - a.revenue)),
        ("cost", str(a.cost), str(b.cost), _signed(b.cost - a.cost)),
        ("margin", str(a.margin), str(b.margin), _signed(b.margin - a.margin)),
    ]
    lines.append(table(("total", "actual", "candidate", "difference"), rows))
    lines.append("\n")
    lines.append(table(("buyer", "sold", "revenue", "margin", "cand sold", "cand revenue", "cand margin",
                        "revenue diff"), _buyer_rows(a, b)))  # fmt: skip
    u = c.unknowns
    lines.append(
        f"\nunpinged buyers left out: {u.unpinged}   assumed accepts: {u.assumed_accepts}"
        f"   leads whose flow/source the candidate lacks: {u.not_configured}\n\n"
    )
    lines.append(CANNOT_KNOW)
    return "".join(lines)


def _signed(d: Decimal) -> str:
    return f"+{d}" if d > 0 else str(d)


def _buyer_rows(a: Side, b: Side) -> list[tuple[str, ...]]:
    zero = (0, Decimal("0.00"), Decimal("0.00"))
    rows: list[tuple[str, ...]] = []
    for buyer in sorted(a.by_buyer.keys() | b.by_buyer.keys()):
        n1, r1, m1 = a.by_buyer.get(buyer, zero)
        n2, r2, m2 = b.by_buyer.get(buyer, zero)
        rows.append((buyer, str(n1), str(r1), str(m1), str(n2), str(r2), str(m2), _signed(r2 - r1)))
    return rows
