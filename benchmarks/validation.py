"""Validation cost per lead: the schema alone and the router's whole `_validate` step.

`python -m benchmarks.validation` prints microseconds per lead (median of 7 runs of 20 000
leads) for the example's solar lead: against the one-type configuration (`lead:`), and against
a configuration of two lead types, where the flow's type picks the schema. Run it on an older
checkout (PYTHONPATH pointing at its `service/`) for the before figure; the two-type rows need
lead types and are skipped there.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

import yaml
from routelead.config.loader import load_config_bytes
from routelead.intake import validate as _validate
from routelead.router import LeadRequest

FIELDS: dict[str, Any] = {
    "first_name": {"type": "string", "required": True, "pii": True, "max_length": 100},
    "last_name": {"type": "string", "required": True, "pii": True, "max_length": 100},
    "email": {"type": "email", "required": True, "pii": True},
    "phone": {"type": "phone", "required": True, "pii": True},
    "state": {"type": "state", "required": True},
    "zip": {"type": "zip", "required": True},
    "homeowner": {"type": "bool", "required": True},
    "credit_range": {"type": "string", "enum": ["<600", "600-650", "650-700", "700+"]},
    "tcpa_consent": {"type": "bool", "required": True},
}
AUTO = {
    "email": {"type": "email", "required": True, "pii": True},
    "date_of_birth": {"type": "date", "required": True, "pii": True},
    "vehicle_year": {"type": "int", "required": True},
}
LEAD = {
    "first_name": "Ana", "last_name": "Diaz", "email": "Ana@Example.com", "phone": "(555) 123-4567",
    "state": "ca", "zip": "90210-1234", "homeowner": "yes", "credit_range": "700+", "tcpa_consent": "true",
}  # fmt: skip
N, REPEAT = 20_000, 7


def _doc(lead_types: bool) -> bytes:
    post = {"url": "http://127.0.0.1:9/b/post", "timeout_ms": 200}
    doc: dict[str, Any] = {
        "sources": [{"id": "s", "cost": "1.00"}],
        "buyers": [{"id": "b", "fixed_price": "5.00", "post": post}],
        "flows": [{"id": "solar", "tiers": [{"name": "t", "buyers": ["b"]}]}],
    }
    if lead_types:
        doc["lead_types"] = [{"id": "solar", "fields": FIELDS}, {"id": "auto", "fields": AUTO}]
    else:
        doc["lead"] = {"fields": FIELDS}
    return yaml.safe_dump(doc).encode()


def per_lead_us(work: Callable[[], object]) -> float:
    runs = timeit.repeat(work, number=N, repeat=REPEAT)
    return statistics.median(runs) / N * 1e6


def main() -> None:
    one = load_config_bytes(_doc(False), "one type", {})
    request = LeadRequest("L-1", "solar", "s", LEAD)
    rows = [
        ("schema.validate, one type (`lead:`)", lambda: one.schema.validate(LEAD)),
        ("router _validate, one type (`lead:`)", lambda: _validate(request, one)),
    ]
    try:
        two = load_config_bytes(_doc(True), "two types", {})
    except Exception as exc:  # an older checkout: no lead types
        print(f"(two lead types skipped: {type(exc).__name__})")
    else:
        rows.append(("router _validate, two types (solar flow)", lambda: _validate(request, two)))
    for label, work in rows:
        print(f"{label:<44} {per_lead_us(work):6.2f} µs/lead")


if __name__ == "__main__":
    main()
