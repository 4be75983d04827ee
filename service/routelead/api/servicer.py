"""The RouteLead RPC: request in, router, response out; domain errors become gRPC codes."""

from __future__ import annotations

import asyncio

import grpc
import structlog

from routelead.api.convert import to_proto
from routelead.domain.lead import LeadInvalid
from routelead.records.port import BooksUnavailable
from routelead.router import LeadConflict, LeadRequest, NotFound, Router
from routelead.state.ports import LeadInFlight
from routelead.telemetry.propagation import caller_context
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

log = structlog.get_logger("routelead.api")


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
