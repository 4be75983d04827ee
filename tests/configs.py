"""Build configuration files for tests; they go through the real loader."""

from __future__ import annotations

from typing import Any

import yaml
from routelead.config.loader import load_config_bytes
from routelead.config.runtime import RuntimeConfig

LEAD_FIELDS: dict[str, Any] = {
    "first_name": {"type": "string", "required": True, "pii": True},
    "last_name": {"type": "string", "pii": True},
    "email": {"type": "email", "required": True, "pii": True},
    "phone": {"type": "phone", "required": True, "pii": True},
    "state": {"type": "state", "required": True},
    "zip": {"type": "zip", "required": True},
    "homeowner": {"type": "bool"},
    "credit_range": {"type": "string", "enum": ["600-650", "650-700", "700+"]},
}

GOOD_LEAD = {
    "first_name": "Maria",
    "last_name": "Gonzalez",
    "email": "maria.gonzalez@example.com",
    "phone": "(555) 201-3344",
    "state": "CA",
    "zip": "90210",
    "homeowner": "yes",
    "credit_range": "700+",
}
PII_VALUES = ("Maria", "Gonzalez", "maria.gonzalez@example.com", "5552013344", "201-3344")


def buyer(server_url: Any, buyer_id: str, **extra: Any) -> dict[str, Any]:
    """A bidding JSON buyer whose ping and post go to the test buyer server."""
    ping = {"url": server_url(buyer_id, "ping"), "timeout_ms": 400, **extra.pop("ping", {})}
    post = {"url": server_url(buyer_id, "post"), "timeout_ms": 300, **extra.pop("post", {})}
    return {"id": buyer_id, "ping": ping, "post": post, **extra}


def fixed_buyer(server_url: Any, buyer_id: str, price: str, **extra: Any) -> dict[str, Any]:
    post = {"url": server_url(buyer_id, "post"), "timeout_ms": 300}
    return {"id": buyer_id, "fixed_price": price, "post": post, **extra}


def document(
    buyers: list[dict[str, Any]], tiers: list[list[str]] | None = None, **flow: Any
) -> dict[str, Any]:
    tiers = tiers if tiers is not None else [[b["id"] for b in buyers]]
    return {
        "lead": {"fields": LEAD_FIELDS},
        "sources": [{"id": "src-1", "cost": "10.00"}, {"id": "src-free", "cost": "0"}],
        "buyers": buyers,
        "flows": [
            {
                "id": "solar",
                "deadline_ms": 750,
                "tiers": [{"name": f"t{i + 1}", "buyers": ids} for i, ids in enumerate(tiers)],
                **flow,
            }
        ],
    }


def compile_doc(doc: dict[str, Any], env: dict[str, str] | None = None) -> RuntimeConfig:
    return load_config_bytes(yaml.safe_dump(doc).encode(), "test.yaml", env or {})
