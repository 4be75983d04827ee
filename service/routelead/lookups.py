"""Lookup steps: verification and enrichment calls made before any ping, all at once, within the
lead's deadline. Each answers with facts (`phone.valid` → "true") that filters, bid conditions and
pricing rules read, and a Check for the lead's record; a failing step follows its `on_failure`.

The requests and answers are the buyers' machinery (endpoint, encoder, reader); the lead's values
go to the verifier only, never into a span, a log line or a check's detail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from routelead.buyers.base import BadAnswer
from routelead.config.runtime import Lookup
from routelead.domain.mapping import Transaction
from routelead.domain.outcome import Check
from routelead.transport import Transport, TransportError, TransportTimeout

tracer = trace.get_tracer("routelead")
# How long past its own timeout a lookup task may run before it is cancelled regardless.
_SAFETY_S = 0.02


@dataclass(slots=True)
class Looked:
    """What the lookups of one lead found: the facts to add, each step's check, and the reason the
    lead is refused (a failed `on_failure: reject` step), if it is."""

    facts: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    refused: str = ""


class Lookups:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def run(
        self, steps: Sequence[Lookup], fields: Mapping[str, str], lead_id: str, until: float
    ) -> Looked:
        """Every step at once; one still out at `until` counts as timed out (its policy applies)."""
        looked = Looked()
        if not steps:
            return looked
        tasks = [asyncio.create_task(self._one(s, fields, lead_id, until)) for s in steps]
        _, late = await asyncio.wait(tasks, timeout=max(0.0, until - time.monotonic()) + _SAFETY_S)
        for task in late:
            task.cancel()
        for step, task in zip(steps, tasks, strict=True):
            if task in late:
                check = Check(step.id, "lookup", "timed_out", "no answer within the lead's deadline")
                facts: dict[str, str] = {}
            else:
                check, facts = task.result()
            if check.result != "passed":
                if step.on_failure == "reject":
                    looked.refused = looked.refused or f"lookup {step.id}: {check.detail}"
                    check = Check(step.id, "lookup", "rejected", check.detail, check.ms)
                elif step.on_failure == "false":
                    facts = {name: "false" for name, _ in step.facts}
                    check = Check(
                        step.id, "lookup", check.result, f"{check.detail}; facts set false", check.ms
                    )
                check = Check(check.name, check.kind, check.result, check.detail, check.ms, facts)
            looked.facts.update(facts)
            looked.checks.append(check)
        return looked

    async def _one(
        self, step: Lookup, fields: Mapping[str, str], lead_id: str, until: float
    ) -> tuple[Check, dict[str, str]]:
        request = step.endpoint.request(fields, Transaction(lead_id))
        timeout = min(step.endpoint.timeout_s, until - time.monotonic())
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
            "lookup", kind=trace.SpanKind.CLIENT, attributes={"lookup.id": step.id}
        ) as span:
            facts: dict[str, str] = {}
            status = 0
            if timeout <= 0:
                result, detail = "timed_out", "no time left before the lead's deadline"
            else:
                try:
                    answer = await self._transport.send(request, timeout, step.max_body)
                except TransportTimeout as exc:
                    result, detail = "timed_out", f"timed out: {exc}"
                except TransportError as exc:
                    result, detail = "failed", f"failed: {exc}"
                else:
                    status = answer.status
                    if step.statuses.action(answer.status) != "read":
                        result, detail = "failed", f"HTTP {answer.status}"
                    else:
                        try:
                            facts = step.read(step.reader.read(answer))
                        except BadAnswer:
                            # Not its text: a verifier's body may echo the lead's values.
                            result, detail = "failed", "answer not readable"
                        else:
                            missing = [name for name, _ in step.facts if name not in facts]
                            if missing:
                                result, detail = "failed", f"answer lacks {', '.join(missing)}"
                            else:
                                result, detail = "passed", ""
            ms = (time.perf_counter() - t0) * 1000
            attrs: dict[str, str | float | int] = {"status": result, "latency_ms": round(ms, 3)}
            if status:
                attrs["http.status_code"] = status
            span.set_attributes(attrs)
        return Check(step.id, "lookup", result, detail, ms, facts), facts
