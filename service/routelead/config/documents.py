"""Edits to a configuration document (the YAML as data), before it is validated like the file.

Pure functions: no I/O. Secrets stay out of what is shown: header values that are not
`${VAR}` / `${file:…}` references are masked, and a masked value sent back is the stored one.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any

import yaml

KINDS = {"buyer": "buyers", "source": "sources", "flow": "flows", "lead_type": "lead_types"}
# The `lead` block is the lead type of this id (config.model.DEFAULT_LEAD_TYPE).
LEAD_BLOCK_ID = "default"
MASK = "***"
_REFERENCE = re.compile(r"^(\$\{[^}]+\})+$")


class DocumentError(ValueError):
    """The edit cannot apply (unknown id, wrong shape); the message names what."""


def parse(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise DocumentError("the document must be a mapping with lead, sources, buyers and flows")
    return doc


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _items(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    if kind not in KINDS:
        raise DocumentError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    items = doc.setdefault(KINDS[kind], [])
    if not isinstance(items, list):
        raise DocumentError(f"{KINDS[kind]}: must be a list")
    return items


def _lead_block(doc: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The `lead` block as the lead type it is (id "default"), for kind lead_type."""
    block = doc.get("lead") if kind == "lead_type" else None
    return {"id": LEAD_BLOCK_ID, **block} if isinstance(block, dict) else None


def entities(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    block = _lead_block(doc, kind)
    return [redact(x) for x in ([block] if block else []) + _items(doc, kind) if isinstance(x, dict)]


def get(doc: dict[str, Any], kind: str, entity_id: str) -> dict[str, Any]:
    block = _lead_block(doc, kind)
    if block is not None and entity_id == LEAD_BLOCK_ID:
        return block
    for x in _items(doc, kind):
        if isinstance(x, dict) and x.get("id") == entity_id:
            return redact(x)
    raise DocumentError(f"no {kind} {entity_id!r}")


def upsert(doc: dict[str, Any], kind: str, entity: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
        raise DocumentError(f"a {kind} is a mapping with a string `id`")
    out = copy.deepcopy(doc)
    if _lead_block(out, kind) is not None and entity["id"] == LEAD_BLOCK_ID:
        out["lead"] = {k: v for k, v in entity.items() if k != "id"}
        return out
    items = _items(out, kind)
    for i, x in enumerate(items):
        if isinstance(x, dict) and x.get("id") == entity["id"]:
            items[i] = restore_masked(entity, x)
            return out
    items.append(entity)
    return out


def delete(doc: dict[str, Any], kind: str, entity_id: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    items = _items(out, kind)
    if kind == "lead_type":
        # The default type is what every flow and buyer without `lead_type(s)` uses: deleting it
        # would move them onto another type without a word.
        block = _lead_block(out, kind)
        first = next((x.get("id") for x in items if isinstance(x, dict)), None)
        if (block is not None and entity_id == LEAD_BLOCK_ID) or (block is None and entity_id == first):
            raise DocumentError(
                f"lead type {entity_id!r} is the default type (used by every flow and buyer that "
                "names no lead type): it cannot be deleted, only edited"
            )
    kept = [x for x in items if not (isinstance(x, dict) and x.get("id") == entity_id)]
    if len(kept) == len(items):
        raise DocumentError(f"no {kind} {entity_id!r}")
    out[KINDS[kind]] = kept
    return out


def set_enabled(
    doc: dict[str, Any], buyer_id: str, enabled: bool, paused: dict[str, str] | None = None
) -> dict[str, Any]:
    """Pause (with who, when and why, for the buyer's attempt lines) or resume a buyer."""
    out = copy.deepcopy(doc)
    for x in _items(out, "buyer"):
        if isinstance(x, dict) and x.get("id") == buyer_id:
            x["enabled"] = enabled
            x.pop("paused", None)
            if not enabled and paused:
                x["paused"] = paused
            return out
    raise DocumentError(f"no buyer {buyer_id!r}")


def _headers(entity: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for step in ("ping", "post"):
        endpoint = entity.get(step)
        if isinstance(endpoint, dict) and isinstance(endpoint.get("headers"), dict):
            found.append(endpoint["headers"])
    return found


def redact(entity: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(entity)
    for headers in _headers(out):
        for name, value in headers.items():
            if not (isinstance(value, str) and _REFERENCE.match(value)):
                headers[name] = MASK
    return out


def redact_document(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    buyers = out.get("buyers")
    if isinstance(buyers, list):
        out["buyers"] = [redact(b) if isinstance(b, dict) else b for b in buyers]
    return out


def restore_masked(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A read-modify-write sends masked values back: keep the stored ones for those."""
    out = copy.deepcopy(new)
    for step in ("ping", "post"):
        n, o = out.get(step), old.get(step)
        if not (isinstance(n, dict) and isinstance(o, dict)):
            continue
        nh, oh = n.get("headers"), o.get("headers")
        if isinstance(nh, dict) and isinstance(oh, dict):
            for name, value in nh.items():
                if value == MASK and name in oh:
                    nh[name] = oh[name]
    return out


def diff(a: str, b: str, a_label: str, b_label: str) -> str:
    shown_a = dump(redact_document(parse(a)))
    shown_b = dump(redact_document(parse(b)))
    return "".join(difflib.unified_diff(shown_a.splitlines(True), shown_b.splitlines(True), a_label, b_label))
