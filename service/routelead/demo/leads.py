"""Sample solar leads (fake people) for the demo and benchmarks."""

from __future__ import annotations

import random

FIRST = ["Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal"]
LAST = ["Alvarez", "Brooks", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones"]
PLACES = [
    ("CA", "90210"),
    ("AZ", "85001"),
    ("TX", "73301"),
    ("FL", "33101"),
    ("NV", "89101"),
    ("NJ", "07001"),
]


def sample_lead(rng: random.Random, n: int) -> dict[str, str]:
    state, zip_code = rng.choice(PLACES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower()}{n}@example.com",
        "phone": f"555{rng.randrange(1000000, 9999999)}",
        "address": f"{rng.randrange(1, 9999)} Sunny Ave",
        "state": state,
        "zip": zip_code,
        "homeowner": rng.choice(["true", "true", "true", "false"]),
        "electric_bill": rng.choice(["$100-200", "$200-300", "$300+"]),
        "credit_range": rng.choice(["600-650", "650-700", "700+"]),
        "property_type": rng.choice(["single_family", "single_family", "townhouse"]),
        "tcpa_consent": "true",
    }
