"""The RouteLead service's RPCs (RouteLead, Quote, Commit): request in, router, response out;
domain errors become gRPC codes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import grpc
import structlog

from routelead.api.convert import to_proto
from routelead.domain.lead import LeadInvalid
from routelead.domain.money import fmt
from routelead.inbound import (
    Inbound,
    QuoteAnswer,
    QuoteExpired,
    QuoteLimited,
    QuoteMismatch,
    QuoteRefused,
    QuoteRequest,
    QuoteUnknown,
)
from routelead.records.port import BooksUnavailable
from routelead.router import LeadConflict, LeadRequest, NotFound, Router
from routelead.state.ports import LeadInFlight, StateUnavailable
from routelead.telemetry.propagation import caller_context
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

log = structlog.get_logger("routelead.api")
T = TypeVar("T")


class RouteLeadServicer(pb_grpc.RouteLeadServicer):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def RouteLead(
        self,
        request: pb.RouteLeadRequest,
        context: grpc.aio.ServicerContext[pb.RouteLeadRequest, pb.RouteLeadResponse],
    ) -> pb.RouteLeadResponse:
        lead = LeadRequest(
            lead_id=request.lead_id,
            flow=request.flow,
            source_id=request.source_id,
            fields=dict(request.fields),
            test=request.test,
            caller_budget_s=context.time_remaining(),
        )
        try:
            # The caller's W3C trace context makes our RouteLead span a child of its span.
            with caller_context(context.invocation_metadata()):
                # Shielded: a caller that cancels or hangs up mid-post must not cut the lead off
                # between the buyer's yes and the books (it would be unbooked, unremembered, and
                # sold again on retry). Routing is bounded by its deadline; the retry gets the answer.
                result = await asyncio.shield(asyncio.ensure_future(self._router.route(lead)))
        except LeadInvalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except LeadInFlight as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
        except LeadConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except BooksUnavailable as exc:
            # Safe to retry as is: nothing was routed, or (Unbooked) the retry gets the held answer.
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            # Type only: messages of unexpected errors may quote lead data.
            log.error("lead.failed", lead_id=request.lead_id, flow=request.flow, error=type(exc).__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error routing the lead; see the service logs"
            )
        return to_proto(result)

    async def Quote(
        self,
        request: pb.QuoteRequest,
        context: grpc.aio.ServicerContext[pb.QuoteRequest, pb.QuoteResponse],
    ) -> pb.QuoteResponse:
        asked = QuoteRequest(
            request.source_id, request.flow, dict(request.fields), caller_budget_s=context.time_remaining()
        )
        answer = await _inbound_call(context, self._inbound.quote(asked), "quote")
        return quote_proto(answer, time.time())

    async def Commit(
        self,
        request: pb.CommitRequest,
        context: grpc.aio.ServicerContext[pb.CommitRequest, pb.RouteLeadResponse],
    ) -> pb.RouteLeadResponse:
        sold = self._inbound.commit(request.quote_id, dict(request.fields), context.time_remaining())
        return to_proto(await _inbound_call(context, sold, "commit"))

    @property
    def _inbound(self) -> Inbound:
        assert isinstance(self._router, Inbound), "the service runs an Inbound router"
        return self._router


def quote_proto(a: QuoteAnswer, now: float) -> pb.QuoteResponse:
    return pb.QuoteResponse(
        quote_id=a.quote_id,
        offered=a.offered,
        price=fmt(a.price) if a.price is not None else "",
        expires_at=datetime.fromtimestamp(a.expires_at, UTC).isoformat(timespec="milliseconds")
        if a.offered
        else "",
        expires_in_ms=max(0, round((a.expires_at - now) * 1000)) if a.offered else 0,
        reason=a.reason,
        flow=a.flow,
        source_id=a.source_id,
        config_version=a.config_version,
        elapsed_ms=round(a.elapsed_ms, 3),
    )


async def _inbound_call(context: Any, work: Awaitable[T], what: str) -> T:
    """Quote and Commit: shielded like RouteLead (a commit cut off mid-post would be unbooked);
    each domain error becomes its gRPC status."""
    try:
        with caller_context(context.invocation_metadata()):
            return await asyncio.shield(asyncio.ensure_future(work))
    except LeadInvalid as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except (NotFound, QuoteUnknown) as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    except (QuoteRefused, QuoteExpired, QuoteMismatch) as exc:
        await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except QuoteLimited as exc:
        context.set_trailing_metadata((("retry-after-ms", str(max(1, round(exc.retry_after_s * 1000)))),))
        await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except LeadInFlight as exc:
        await _abort(context, grpc.StatusCode.ABORTED, str(exc))
    except LeadConflict as exc:
        await _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
    except (BooksUnavailable, StateUnavailable) as exc:
        await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
    except Exception as exc:
        log.error(f"{what}.failed", error=type(exc).__name__)
        await _abort(context, grpc.StatusCode.INTERNAL, f"internal error in {what}; see the service logs")


async def _abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")
