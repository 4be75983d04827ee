"""The lead schema: validation, normalisation and the PII split."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from routelead.domain.patterns import Pattern

FieldType = Literal[
    "string",
    "int",
    "decimal",
    "bool",
    "email",
    "phone",
    "zip",
    "state",
    "date",
    "datetime",
    # Consent evidence: a TrustedForm certificate URL or a Jornaya LeadiD token. Always PII: it
    # goes to the buyer in the post, never in a ping.
    "consent_certificate",
]
# A TrustedForm certificate (https://cert.trustedform.com/<40 hex>) or a Jornaya LeadiD token.
_TRUSTEDFORM = re.compile(r"^https://cert\.trustedform\.com/[0-9a-f]{40}$")
_LEADID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

US_STATES = frozenset(
    [
        "AL",
        "AK",
        "AZ",
        "AR",
        "CA",
        "CO",
        "CT",
        "DE",
        "DC",
        "FL",
        "GA",
        "HI",
        "ID",
        "IL",
        "IN",
        "IA",
        "KS",
        "KY",
        "LA",
        "ME",
        "MD",
        "MA",
        "MI",
        "MN",
        "MS",
        "MO",
        "MT",
        "NE",
        "NV",
        "NH",
        "NJ",
        "NM",
        "NY",
        "NC",
        "ND",
        "OH",
        "OK",
        "OR",
        "PA",
        "RI",
        "SC",
        "SD",
        "TN",
        "TX",
        "UT",
        "VT",
        "VA",
        "WA",
        "WV",
        "WI",
        "WY",
        "PR",
        "GU",
        "VI",
        "AS",
        "MP",
    ]
)
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
# Digits are ASCII only: Python's \d, int() and Decimal() also take Arabic-Indic, fullwidth and
# other Unicode digits, which no buyer's system reads as a ZIP or an amount.
_ZIP = re.compile(r"^([0-9]{5})(?:-?[0-9]{4})?$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_DECIMAL = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType = "string"
    required: bool = False
    pii: bool = False
    pattern: Pattern | None = None
    enum: frozenset[str] | None = None
    max_length: int = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a submitted lead, so one request cannot eat the worker."""

    max_fields: int = 200
    max_value_length: int = 4096


@dataclass(frozen=True, slots=True)
class Lead:
    """A validated, normalised lead. `ping_fields` is the only view buyers see before a sale."""

    fields: Mapping[str, str]
    ping_fields: Mapping[str, str]

    @property
    def pii_values(self) -> list[str]:
        """The lead's PII values worth looking for in text (short ones would match anything)."""
        return [v for k, v in self.fields.items() if k not in self.ping_fields and len(v) >= 3]


class LeadInvalid(ValueError):
    """Every problem with a lead, each naming its field, so the caller fixes all at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class LeadSchema:
    fields: Mapping[str, FieldSpec]
    unknown_fields: Literal["reject", "drop"] = "reject"
    limits: Limits = Limits()
    created_at_field: str | None = None

    def lead_age_s(self, lead: Lead, now: datetime) -> float:
        """Seconds since the consumer submitted the form; 0 when the lead does not say."""
        stamp = lead.fields.get(self.created_at_field) if self.created_at_field else None
        if stamp is None:
            return 0.0
        return max(0.0, (now - datetime.fromisoformat(stamp)).total_seconds())

    @property
    def pii_fields(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.fields.items() if spec.pii)

    def validate(self, submitted: Mapping[str, str]) -> Lead:
        """Check and normalise `submitted`; raise LeadInvalid listing every bad field."""
        problems: list[str] = []
        if len(submitted) > self.limits.max_fields:
            raise LeadInvalid([f"fields: {len(submitted)} fields, at most {self.limits.max_fields} allowed"])
        clean: dict[str, str] = {}
        for name in sorted(submitted):
            raw = submitted[name]
            label = f"fields.{_safe_name(name)}"
            if len(raw) > self.limits.max_value_length:
                problems.append(f"{label}: longer than {self.limits.max_value_length} characters")
                continue
            spec = self.fields.get(name)
            if spec is None:
                if self.unknown_fields == "reject":
                    problems.append(f"{label}: unknown field")
                continue
            value = raw.strip()
            if not value:
                continue  # blank counts as absent; `required` below reports it
            try:
                clean[name] = normalise(spec, value)
            except ValueError as exc:
                problems.append(f"{label}: {exc}")
        for name, spec in self.fields.items():
            if (
                spec.required
                and name not in clean
                and not any(p.startswith(f"fields.{name}:") for p in problems)
            ):
                problems.append(f"fields.{name}: required")
        if problems:
            raise LeadInvalid(problems)
        pii = self.pii_fields
        return Lead(fields=clean, ping_fields={k: v for k, v in clean.items() if k not in pii})


def normalise(spec: FieldSpec, value: str) -> str:
    """One field's canonical text form, or ValueError saying what is wrong (never echoing PII)."""
    if len(value) > spec.max_length:
        raise ValueError(f"longer than {spec.max_length} characters")
    match spec.type:
        case "string":
            out = value
        case "int":
            if not _INT.match(value):
                raise ValueError("must be a whole number")
            out = str(int(value))
        case "decimal":
            if not _DECIMAL.match(value):
                raise ValueError("must be a decimal number (ASCII digits)")
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise ValueError("must be a decimal number") from None
            if not number.is_finite():
                raise ValueError("must be a finite number")
            out = str(number)
        case "bool":
            lowered = value.lower()
            if lowered in _TRUE:
                out = "true"
            elif lowered in _FALSE:
                out = "false"
            else:
                raise ValueError("must be true or false")
        case "email":
            if not _EMAIL.match(value):
                raise ValueError("must be an email address")
            out = value.lower()
        case "consent_certificate":
            if _TRUSTEDFORM.match(value.lower()):
                out = value.lower()
            elif _LEADID.match(value.upper()):
                out = value.upper()
            else:
                raise ValueError("must be a TrustedForm certificate URL or a Jornaya LeadiD token")
        case "phone":
            digits = re.sub(r"[\s().+-]", "", value)
            if len(digits) == 11 and digits.startswith("1"):
                digits = digits[1:]
            if not (digits.isascii() and digits.isdigit() and len(digits) == 10):
                raise ValueError("must be a 10-digit US phone number")
            out = digits
        case "zip":
            m = _ZIP.match(value)
            if not m:
                raise ValueError("must be a 5-digit ZIP code")
            out = m.group(1)
        case "state":
            out = value.upper()
            if out not in US_STATES:
                raise ValueError("must be a two-letter US state code")
        case "date":
            if not _DATE.match(value):
                raise ValueError("must be a date as YYYY-MM-DD")
            out = value
        case "datetime":
            try:
                stamp = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO 8601 date and time") from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)  # a stamp without a zone is taken as UTC
            out = stamp.astimezone(UTC).isoformat()
    if spec.enum is not None and out not in spec.enum:
        raise ValueError(f"must be one of {', '.join(sorted(spec.enum))}")
    if spec.pattern is not None and not spec.pattern.fullmatch(out):
        raise ValueError("does not match the required pattern")
    return out


def _safe_name(name: str) -> str:
    """Field names come from the caller: show them, but bounded and printable."""
    if _FIELD_NAME.match(name):
        return name
    return repr(name[:40])
