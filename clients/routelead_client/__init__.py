"""RouteLead client: route leads over gRPC with typed results, deadlines, safe retries and round-robin;
manage buyers and read stats with the admin token."""

from routelead_client.admin import ConfigVersion, RouteLeadAdmin
from routelead_client.admin_aio import AsyncRouteLeadAdmin
from routelead_client.aio import AsyncRouteLeadClient
from routelead_client.errors import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    InvalidLead,
    NotFound,
    RateLimited,
    RouteLeadError,
    Unauthenticated,
    Unavailable,
)
from routelead_client.models import AttemptInfo, Outcome, QuoteResult, RouteResult, SaleInfo
from routelead_client.policy import RetryPolicy
from routelead_client.stats import BuyerStats, MoneyStats, WindowStats
from routelead_client.sync import RouteLeadClient

__all__ = [
    "AsyncRouteLeadAdmin",
    "AsyncRouteLeadClient",
    "AttemptInfo",
    "BuyerStats",
    "ConfigVersion",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "InvalidLead",
    "MoneyStats",
    "NotFound",
    "Outcome",
    "QuoteResult",
    "RateLimited",
    "RetryPolicy",
    "RouteLeadAdmin",
    "RouteLeadClient",
    "RouteLeadError",
    "RouteResult",
    "SaleInfo",
    "Unauthenticated",
    "Unavailable",
    "WindowStats",
]
