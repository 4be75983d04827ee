"""Sample solar and auto insurance leads (fake people) for the demo and benchmarks."""

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


MAKES = [
    ("Toyota", "Camry"),
    ("Honda", "Civic"),
    ("Ford", "F-150"),
    ("Chevrolet", "Equinox"),
    ("Tesla", "Model 3"),
    ("Subaru", "Outback"),
]
INSURERS = ["State Farm", "GEICO", "Progressive", "Allstate", "USAA", ""]


def sample_auto_lead(rng: random.Random, n: int) -> dict[str, str]:
    """An auto insurance lead: the vehicle, the driver's cover and history, and who they are."""
    state, zip_code = rng.choice(PLACES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    make, model = rng.choice(MAKES)
    insurer = rng.choice(INSURERS)
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower()}.auto{n}@example.com",
        "phone": f"555{rng.randrange(1000000, 9999999)}",
        "date_of_birth": f"{rng.randrange(1950, 2004)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        "state": state,
        "zip": zip_code,
        "vehicle_year": str(rng.randrange(2004, 2026)),
        "vehicle_make": make,
        "vehicle_model": model,
        "currently_insured": "true" if insurer else "false",
        "current_insurer": insurer,
        "accidents_3y": rng.choice(["0", "0", "0", "1", "2"]),
        "homeowner": rng.choice(["true", "false"]),
        "tcpa_consent": "true",
    }
