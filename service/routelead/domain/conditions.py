"""Bid conditions a buyer attaches to its bid (seed 000): honoured, or the bid is discarded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from routelead.domain.rules import Facts


@dataclass(frozen=True, slots=True)
class Verdict:
    failure: str | None = None
    exclusive: bool = False


def check_conditions(conditions: Mapping[str, object], facts: Facts, consent_field: str | None) -> Verdict:
    """`max_age` (minutes), `states`, `require_consent`, `exclusive`; unknown keys are ignored."""
    if (max_age := conditions.get("max_age")) is not None:
        try:
            minutes = Decimal(str(max_age))
        except InvalidOperation:
            return Verdict("unreadable bid condition max_age")
        if not minutes.is_finite() or facts.lead_age_s > float(minutes) * 60:
            return Verdict(f"bid requires a lead at most {max_age} minutes old")
    if (states := conditions.get("states")) is not None:
        if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
            return Verdict("unreadable bid condition states")
        if facts.fields.get("state") not in {s.upper() for s in states}:
            shown = ", ".join(str(s) for s in states[:8])
            return Verdict(f"bid limited to states [{shown}]")
    consented = consent_field is not None and facts.fields.get(consent_field) == "true"
    if conditions.get("require_consent") is True and not consented:
        return Verdict("bid requires consent, the lead has none")
    exclusive = conditions.get("exclusive") is True or conditions.get("exclusive_required") is True
    return Verdict(exclusive=exclusive)
