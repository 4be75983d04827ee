"""The compliance checks before any ping: suppression lists, then the lead type's lookups.

What they find becomes lead facts (lookups) and seats skipped without a ping (a buyer's own
suppression list); a global list hit or a lookup whose failure policy rejects refuses the lead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from routelead.buyer_calls import Routed
from routelead.domain.auction import AuctionSpec
from routelead.domain.outcome import Check, RoutingResult, Status
from routelead.domain.suppression import lead_values
from routelead.lookups import Lookups
from routelead.state.ports import StateUnavailable, SuppressionStore


class ComplianceChecks:
    def __init__(
        self, suppression: SuppressionStore | None, fingerprint: Callable[[list[str]], str], lookups: Lookups
    ) -> None:
        self._suppression = suppression
        self._fingerprint = fingerprint
        self._lookups = lookups

    async def run(self, routed: Routed, result: RoutingResult, until: float) -> Checked | None:
        """The compliance checks before any ping: the suppression lists, then the lead type's
        lookups. Their facts and the buyers whose own lists hold the lead, or None when a check
        refused the lead (the result's checks and reason say which)."""
        blocked: dict[str, list[str]] = {}
        if self._suppression is not None:
            types = {n: f.type for n, f in routed.config.schema_of(routed.flow).fields.items()}
            digests = [
                self._fingerprint(["suppress", k, v]) for k, v in lead_values(routed.lead.fields, types)
            ]
            t0 = time.perf_counter()
            try:
                hits = await self._suppression.hits(digests)
            except StateUnavailable:
                # Fail closed: a lead is not sold while the do-not-contact lists cannot be read.
                why = "suppression lists unavailable: not sold while they cannot be checked"
                result.checks.append(Check("suppression", "list", "rejected", why))
                result.reason = why
                return None
            ms = (time.perf_counter() - t0) * 1000
            named = sorted({n for n, b in hits if not b})
            for n, b in sorted(hits):
                if b:
                    blocked.setdefault(b, []).append(n)
            if named:
                # The list's name, never the value it matched.
                result.reason = f"suppressed: on list {', '.join(named)}"
                result.checks.append(Check("suppression", "list", "rejected", result.reason, ms))
                return None
            on_buyers = ", ".join(f"{b}: {', '.join(ns)}" for b, ns in blocked.items())
            detail = f"on buyers' lists ({on_buyers})" if blocked else ""
            result.checks.append(Check("suppression", "list", "passed", detail, ms))
        looked = await self._lookups.run(
            routed.config.lookups_of(routed.flow), routed.lead.fields, routed.id, until
        )
        result.checks.extend(looked.checks)
        if looked.refused:
            result.reason = looked.refused
            return None
        return Checked(looked.facts, blocked)


@dataclass(frozen=True, slots=True)
class Checked:
    """What the compliance checks let through: the lookups' facts, and the buyers whose own
    suppression lists hold the lead (buyer → list names)."""

    facts: dict[str, str]
    blocked: dict[str, list[str]]


def suppress(spec: AuctionSpec, blocked: Mapping[str, list[str]]) -> AuctionSpec:
    """Skip, without a ping, every buyer whose own suppression list holds the lead."""
    tiers = tuple(
        replace(
            t,
            seats=tuple(
                replace(
                    s,
                    skip=(
                        Status.SKIPPED_FILTER,
                        f"suppressed: on its list {', '.join(blocked[s.bidder.id])}",
                    ),
                )
                if s.skip is None and s.bidder.id in blocked
                else s
                for s in t.seats
            ),
        )
        for t in spec.tiers
    )
    return replace(spec, tiers=tiers)
