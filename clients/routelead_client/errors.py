"""gRPC status codes as exceptions a caller can catch by meaning."""

from __future__ import annotations

import grpc


class RouteLeadError(Exception):
    """The call failed; `code` is the gRPC status, `lead_id` the idempotency key that was used ('' when
    the call was not a routing)."""

    def __init__(self, code: grpc.StatusCode, details: str, lead_id: str = "", rpc_attempts: int = 1) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details
        self.lead_id = lead_id
        self.rpc_attempts = rpc_attempts


class InvalidArgument(RouteLeadError):
    """INVALID_ARGUMENT: the details say what is wrong (a bad date, a change that does not validate)."""


class InvalidLead(InvalidArgument):
    """INVALID_ARGUMENT: the details name every bad field. Fix the lead; retrying will not help."""


class NotFound(RouteLeadError):
    """NOT_FOUND: unknown flow or source (routing), unknown buyer or version (admin)."""


class Unauthenticated(RouteLeadError):
    """UNAUTHENTICATED: no token, or not the one this API takes (the admin token is not a routing one)."""


class Conflict(RouteLeadError):
    """ABORTED: another change went live since `expected_version`. Reload, re-apply, send again."""


class Unavailable(RouteLeadError):
    """UNAVAILABLE after every retry: no server answered. Retrying later with the same lead_id is safe."""


class DeadlineExceeded(RouteLeadError):
    """The caller's deadline ran out. The lead may have been routed: retry with the same lead_id to learn."""


class FailedPrecondition(RouteLeadError):
    """FAILED_PRECONDITION: a quote expired, a committed lead differs from its quote, or the source
    does not quote. The details say which."""


class RateLimited(RouteLeadError):
    """RESOURCE_EXHAUSTED: a source's quote limit, or the server's admission limit. `retry_after_s`:
    the server's hint (trailing metadata `retry-after-ms`), None when it gave none."""

    retry_after_s: float | None = None


_BY_CODE: dict[grpc.StatusCode, type[RouteLeadError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
}


def error_for(code: grpc.StatusCode, details: str, lead_id: str, rpc_attempts: int) -> RouteLeadError:
    """The error of a RouteLead call: INVALID_ARGUMENT there is always about the lead."""
    cls = InvalidLead if code is grpc.StatusCode.INVALID_ARGUMENT else _BY_CODE.get(code, RouteLeadError)
    return cls(code, details, lead_id, rpc_attempts)


def inbound_error_for(exc: grpc.RpcError, key: str, rpc_attempts: int) -> RouteLeadError:
    """The error of a Quote or Commit call, with the retry-after hint of a refused quote."""
    code: grpc.StatusCode = exc.code()
    err = error_for(code, exc.details() or "", key, rpc_attempts)
    if isinstance(err, RateLimited):
        hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
        err.retry_after_s = int(hint) / 1000 if isinstance(hint, str) and hint.isdigit() else None
    return err


def admin_error_for(code: grpc.StatusCode, details: str) -> RouteLeadError:
    """The error of an Admin or Stats call (no lead, never retried)."""
    return _BY_CODE.get(code, RouteLeadError)(code, details)
