"""A lead's way in: the request, checked against its flow's lead type; a repeated lead_id must
be the same request. Every problem is named by its field, never by its value."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from routelead.buyer_calls import Routed
from routelead.config.runtime import Flow, RuntimeConfig, Source
from routelead.domain.lead import Lead, LeadInvalid
from routelead.domain.outcome import RoutingResult
from routelead.domain.request import differing_fields

_LEAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class NotFound(LookupError):
    """Unknown flow or source (gRPC NOT_FOUND)."""


class LeadConflict(ValueError):
    """A lead_id repeated with another request (gRPC ALREADY_EXISTS); says what differs, never a value."""


@dataclass(frozen=True, slots=True)
class LeadRequest:
    lead_id: str
    flow: str
    source_id: str
    fields: Mapping[str, str]
    test: bool = False
    # The caller's own remaining gRPC deadline, when it set one.
    caller_budget_s: float | None = None


def same_request(first: RoutingResult, routed: Routed, digest: str) -> None:
    """A repeat of a lead_id gets the first answer only if it is the same request."""
    differs = [
        f"{what} differs"
        for what, a, b in (
            ("flow", first.flow, routed.flow.id),
            ("source_id", first.source_id, routed.source.id),
        )
        if a != b
    ]
    if fields := differing_fields(first.request_digest, digest):
        shown = ", ".join(fields[:10]) + (f" and {len(fields) - 10} more" if len(fields) > 10 else "")
        differs.append(f"fields differ: {shown}")
    if differs:
        raise LeadConflict(
            f"lead_id {first.lead_id} was already used for another request ({'; '.join(differs)}): "
            "a lead_id names one request; send this one under a new lead_id"
        )


def validate(req: LeadRequest, config: RuntimeConfig) -> Routed:
    """The request and the lead against the schema: every problem at once, each naming its field."""
    problems = []
    if req.lead_id and not _LEAD_ID.match(req.lead_id):
        problems.append("lead_id: 1-128 characters of letters, digits and . _ : -")
    if not req.flow:
        problems.append("flow: required")
    if not req.source_id:
        problems.append("source_id: required")
    flow = config.flows.get(req.flow)
    lead: Lead | None = None
    try:
        # The flow's lead type decides the fields (an unknown flow: the default type's, to say all).
        lead = (config.schema_of(flow) if flow is not None else config.schema).validate(req.fields)
    except LeadInvalid as exc:
        problems.extend(exc.problems)
    if problems or lead is None:
        raise LeadInvalid(problems)
    if flow is None:
        raise NotFound(f"flow {req.flow!r} is not configured")
    source = seller(config, flow, req.source_id)
    return Routed(req.lead_id or uuid.uuid4().hex, flow, source, lead, req.test, config)


def seller(config: RuntimeConfig, flow: Flow, source_id: str) -> Source:
    """The source selling into `flow`, as it prices the flow's lead type; NotFound says why not."""
    source = config.sources.get(source_id)
    if source is None:
        raise NotFound(f"source {source_id!r} is not configured")
    if flow.sources is not None and source.id not in flow.sources:
        raise NotFound(f"source {source.id!r} does not sell into flow {flow.id!r}")
    if not source.sells(flow.lead_type):
        raise NotFound(f"source {source.id!r} does not sell lead type {flow.lead_type!r} (flow {flow.id!r})")
    return source.selling(flow.lead_type)
