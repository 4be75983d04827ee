"""Configuration: the example loads; every mistake is named by its path; the service refuses to start."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from routelead.config.loader import ConfigError, load_config
from routelead.demo.run import DEMO_KEYS, example_config_path

from tests.configs import compile_doc, document

URL = "http://127.0.0.1:1/x"


def base() -> dict[str, Any]:
    def url(b: str, step: str) -> str:
        return f"http://127.0.0.1:1/{b}/{step}"

    return document(
        [
            {
                "id": "a",
                "ping": {"url": url("a", "ping"), "timeout_ms": 400},
                "post": {"url": URL, "timeout_ms": 300},
            },
            {
                "id": "b",
                "ping": {"url": url("b", "ping"), "timeout_ms": 400},
                "post": {"url": URL, "timeout_ms": 300},
            },
            {"id": "c", "fixed_price": "12.00", "post": {"url": URL, "timeout_ms": 300}},
        ]
    )


def problems(doc: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        compile_doc(doc, env)
    return err.value.problems


def test_the_example_config_loads() -> None:
    config = load_config(example_config_path(), env=DEMO_KEYS)
    flow = config.flows["solar"]
    assert [t.name for t in flow.tiers] == ["premium", "standard", "catch-all"]
    assert flow.deadline_s == 0.75
    assert config.buyers["catchall"].fixed_price is not None
    assert "email" not in config.schema.validate(_example_lead()).ping_fields


def _example_lead() -> dict[str, str]:
    return {"first_name": "A", "last_name": "B", "email": "a@b.co", "phone": "5551234567", "state": "CA",
            "zip": "90210", "homeowner": "true", "tcpa_consent": "true"}  # fmt: skip


def test_a_buyer_timeout_over_the_flow_deadline_is_named_by_path() -> None:
    doc = base()
    doc["buyers"][1]["ping"]["timeout_ms"] = 900
    assert problems(doc) == ["buyers[1].ping.timeout_ms: 900 ms exceeds the 750 ms deadline of flow 'solar'"]


def test_structural_errors_carry_their_paths() -> None:
    doc = base()
    doc["buyers"][0]["ping"]["timeout_ms"] = -5
    doc["buyers"][2]["fixed_price"] = 12.5
    doc["flows"][0]["deadline_ms"] = "soon"
    doc["buyers"][1]["ping"]["tiemout"] = 3
    found = problems(doc)
    assert any(p.startswith("buyers[0].ping.timeout_ms:") for p in found), found
    assert any(p.startswith("buyers[2].fixed_price:") and "quoted decimal" in p for p in found), found
    assert any(p.startswith("flows[0].deadline_ms:") for p in found), found
    assert any(p.startswith("buyers[1].ping.tiemout:") for p in found), found


def test_cross_references_are_checked() -> None:
    doc = base()
    doc["flows"][0]["tiers"][0]["buyers"].append("ghost")
    doc["flows"][0]["tiers"][0]["buyers"].append("a")
    doc["flows"][0]["sources"] = ["src-1", "nobody"]
    doc["buyers"][0]["ping"]["fields"] = {"e": "email", "z": {"field": "zipcode"}, "p": {"from": "price"}}
    doc["buyers"][1]["timezone"] = "Mars/Olympus"
    doc["buyers"].append(dict(doc["buyers"][0]))
    found = problems(doc)
    expected = [
        "flows[0].tiers[0].buyers[3]: unknown buyer 'ghost'",
        "flows[0].tiers[0].buyers[4]: buyer 'a' is already in this flow",
        "flows[0].sources[1]: unknown source 'nobody'",
        "buyers[0].ping.fields.e: 'email' is PII and may not be sent in a ping",
        "buyers[0].ping.fields.z: unknown lead field 'zipcode'",
        "buyers[0].ping.fields.p: `from: price` exists only for the post",
        "buyers[1].timezone: unknown timezone 'Mars/Olympus'",
        "buyers[3]: duplicate id 'a'",
    ]
    for line in expected:
        assert line in found, (line, found)


def test_secrets_come_from_the_environment_or_files(tmp_path: Path) -> None:
    doc = base()
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    doc["buyers"][0]["ping"]["headers"] = {"X-API-Key": "${A_KEY}", "X-Other": f"${{file:{secret}}}"}
    assert problems(doc) == ["buyers[0].ping.headers.X-API-Key: environment variable A_KEY is not set"]
    config = compile_doc(doc, {"A_KEY": "k"})
    assert ("X-API-Key", "k") in config.buyers["a"].ping.headers  # type: ignore[union-attr]
    assert ("X-Other", "from-a-file") in config.buyers["a"].ping.headers  # type: ignore[union-attr]


def test_a_buyer_needs_exactly_one_of_ping_or_fixed_price() -> None:
    doc = base()
    doc["buyers"][2]["ping"] = {"url": URL, "timeout_ms": 100}
    assert any(p.startswith("buyers[2]:") and "either `ping`" in p for p in problems(doc))


def _serve(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "routelead.cli", "serve", "--config", str(config), "--listen", "127.0.0.1:0"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_the_service_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    doc = base()
    doc["buyers"][1]["ping"]["timeout_ms"] = 2000
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))

    proc = _serve(path)

    assert proc.returncode == 2
    assert "buyers[1].ping.timeout_ms: 2000 ms exceeds the 750 ms deadline" in proc.stderr
    assert str(path) in proc.stderr


def test_the_service_refuses_broken_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("lead:\n  fields: [unclosed\n")

    proc = _serve(path)

    assert proc.returncode == 2
    assert "not valid YAML" in proc.stderr and "line" in proc.stderr


def test_caps_per_flow_or_source_must_name_known_ones() -> None:
    doc = document(
        [
            {
                "id": "a",
                "fixed_price": "5",
                "post": {"url": "http://127.0.0.1:9/p", "timeout_ms": 100},
                "caps": {"day": 9, "flows": {"solar": {"day": 3}, "ghost": {"day": 1}}},
                "budgets": {"sources": {"src-1": {"day": "50.00"}, "nobody": {"week": "1"}}},
                "prepaid": {"credit_limit": "25.00"},
            }
        ]
    )

    with pytest.raises(ConfigError) as err:
        compile_doc(doc)

    assert "buyers[0].caps.flows.ghost: unknown flow 'ghost'" in str(err.value)
    assert "buyers[0].budgets.sources.nobody: unknown source 'nobody'" in str(err.value)
    del doc["buyers"][0]["caps"]["flows"]["ghost"], doc["buyers"][0]["budgets"]["sources"]["nobody"]
    caps = compile_doc(doc).buyers["a"].caps
    assert caps.limits == (("day", 9),) and caps.scoped_limits == (("flow=solar", "day", 3),)
    assert caps.scoped_budgets == (("source=src-1", "day", Decimal("50.00")),)
    assert caps.prepaid and caps.credit_limit == Decimal("25.00")


def test_tree_settings_are_validated_with_paths() -> None:
    doc = base()
    doc["buyers"][0]["filter"] = {
        "all": [{"field": "state", "in": ["CA"]}, {"field": "zipcode", "equals": "1"}]
    }
    doc["buyers"][1]["schedule"] = {"days": ["mon", "caturday"], "hours": "09:00-17:00"}
    doc["buyers"][2]["schedule"] = {"timezone": "Nowhere/Land"}
    flow = doc["flows"][0]
    flow["tiers"][0] |= {"weights": {"a": 2, "zz": 1}, "order": "weighted"}
    found = problems(doc)
    expected = [
        "buyers[0].filter.all[1].field: unknown lead field 'zipcode'",
        "buyers[1].schedule: unknown day 'caturday'; use mon, tue, wed, thu, fri, sat, sun",
        "buyers[2].schedule.timezone: unknown timezone 'Nowhere/Land'",
        "flows[0].tiers[0].weights.zz: not a buyer of this tier",
    ]
    for line in expected:
        assert line in found, (line, found)
    flow["tiers"][0]["mode"] = "relay"
    flow["ping_strategy"] = "whenever"
    structural = problems(doc)
    assert any(p.startswith("flows[0].tiers[0].mode:") for p in structural), structural
    assert any(p.startswith("flows[0].ping_strategy:") for p in structural), structural


def test_tree_cross_checks() -> None:
    doc = base()
    flow = doc["flows"][0]
    flow["tiers"][0] |= {"weights": {"a": 2}}
    flow["tiers"][0]["order"] = "priority"
    flow["dynamic_floor"] = {
        "quality": [{"when": {"field": "credit_range", "like": "7%"}, "multiplier": "1.5"}]
    }
    flow["consent_field"] = "tcpa"
    doc["lead"]["created_at_field"] = "zip"
    found = problems(doc)
    for line in (
        "flows[0].tiers[0].weights: only used with `order: weighted`",
        "flows[0].consent_field: unknown lead field 'tcpa'",
        "lead.created_at_field: 'zip' is not a lead field of type datetime",
    ):
        assert line in found, (line, found)
    assert any(
        p.startswith("flows[0].dynamic_floor.quality[0].when: unknown operator 'like'") for p in found
    ), found
