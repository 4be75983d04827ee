"""RouteLead client: route leads over gRPC with typed results, deadlines, safe retries and round-robin."""

from routelead_client.aio import AsyncRouteLeadClient
from routelead_client.errors import (
    DeadlineExceeded,
    InvalidLead,
    NotFound,
    RouteLeadError,
    Unavailable,
)
from routelead_client.models import AttemptInfo, Outcome, RouteResult, SaleInfo
from routelead_client.policy import RetryPolicy
from routelead_client.sync import RouteLeadClient

__all__ = [
    "AsyncRouteLeadClient",
    "AttemptInfo",
    "DeadlineExceeded",
    "InvalidLead",
    "NotFound",
    "Outcome",
    "RetryPolicy",
    "RouteLeadClient",
    "RouteLeadError",
    "RouteResult",
    "SaleInfo",
    "Unavailable",
]
