"""Bid conditions a buyer attaches to its bid (seed 000): honoured, or the bid is discarded.

Fail closed: a condition RouteLead does not understand, or cannot read, discards the bid (it is
CONDITION_FAILED, naming the condition); the lead is never sold under terms nobody checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from routelead.domain.rules import Facts

# Minutes: seed 000 writes the age limit both ways.
AGE_KEYS = ("max_age", "max_age_minutes")
FLAG_KEYS = ("require_consent", "exclusive", "exclusive_required")
# How long the buyer's ping id stays valid (seconds): an inbound quote expires no later (the
# auction itself posts within the lead's deadline, so it never fails a bid).
EXPIRY_KEY = "expires_in_s"
KNOWN = frozenset((*AGE_KEYS, *FLAG_KEYS, "states", EXPIRY_KEY))
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


@dataclass(frozen=True, slots=True)
class Verdict:
    failure: str | None = None
    exclusive: bool = False


_NONE = Verdict()


def check_conditions(conditions: Mapping[str, object], facts: Facts, consent_field: str | None) -> Verdict:
    """`max_age` / `max_age_minutes` (minutes), `states`, `require_consent`, `exclusive`,
    `exclusive_required`, `expires_in_s` (read by quotes); any other condition (other than null)
    fails the bid."""
    if not conditions:
        return _NONE  # most bids carry none: nothing to check, nothing to allocate
    unknown = sorted(k for k, v in conditions.items() if k not in KNOWN and v is not None)
    if unknown:
        shown = ", ".join(_name(k) for k in unknown[:5])
        return Verdict(f"bid condition {shown} not understood: not sold under it")
    for key in AGE_KEYS:
        if (max_age := conditions.get(key)) is not None:
            try:
                minutes = Decimal(str(max_age)) if not isinstance(max_age, bool) else Decimal("NaN")
            except InvalidOperation:
                minutes = Decimal("NaN")
            if not minutes.is_finite():
                return Verdict(f"unreadable bid condition {key}")
            if facts.lead_age_s > float(minutes) * 60:
                return Verdict(f"bid requires a lead at most {max_age} minutes old ({key})")
    if (expiry := conditions.get(EXPIRY_KEY)) is not None and not _seconds(expiry):
        return Verdict(f"unreadable bid condition {EXPIRY_KEY} (seconds)")
    for key in FLAG_KEYS:
        if conditions.get(key) not in (None, True, False):
            return Verdict(f"unreadable bid condition {key} (true or false)")
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


def _seconds(value: object) -> bool:
    if isinstance(value, bool):
        return False
    try:
        seconds = Decimal(str(value))
    except InvalidOperation:
        return False
    return seconds.is_finite() and seconds >= 0


def _name(key: str) -> str:
    """Condition names come from the buyer: shown when plain, else bounded and quoted."""
    return key if _PLAIN.match(key) else repr(key[:40])
