"""TLS on the gRPC port and caller authentication (bearer token, or mTLS).

Secrets never sit in the config file: the certificate, key, client CA and token files are paths
(Kubernetes mounts Secrets as files), tokens may also come from the environment. Several tokens
may be valid at once, so a token is rotated by adding the new one, moving callers, then removing
the old one. The standard health service stays open: kubelet's native gRPC probes send no metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from routelead.telemetry.metrics import AUTH_FAILURES

if TYPE_CHECKING:
    from routelead.settings import Settings

log = structlog.get_logger("routelead.security")
# Callers that need no token: health checks (kubelet probes, load balancers).
# The operator's services check their own, separate credential, the admin token (require_admin):
# one `authorization` header cannot carry a routing token too, and a routing token, which lead
# sources hold, opens none of them (Stats shows every buyer's revenue and every source's margin).
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/routelead.v1.Admin/",
    "/routelead.v1.Stats/",
    "/routelead.v1.StateAdmin/",
)


class SecurityError(Exception):
    """A TLS or token setting is missing, unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class Security:
    cert_chain: bytes | None = None
    private_key: bytes | None = None
    # Set: callers must present a certificate signed by this CA (mTLS).
    client_ca: bytes | None = None
    # SHA-256 digests of the accepted bearer tokens (equal lengths for the constant-time compare).
    token_digests: tuple[bytes, ...] = ()

    @property
    def tls(self) -> bool:
        return self.cert_chain is not None

    @property
    def authenticates(self) -> bool:
        return bool(self.token_digests) or self.client_ca is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        """ROUTELEAD_TLS_CERT, ROUTELEAD_TLS_KEY, ROUTELEAD_TLS_CLIENT_CA (file paths);
        ROUTELEAD_AUTH_TOKEN_FILE (one token per line) and/or ROUTELEAD_AUTH_TOKENS (comma-separated)."""
        cert, key, ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
        if (cert is None) != (key is None):
            raise SecurityError("set both ROUTELEAD_TLS_CERT and ROUTELEAD_TLS_KEY, or neither")
        if ca is not None and cert is None:
            raise SecurityError(
                "ROUTELEAD_TLS_CLIENT_CA (mTLS) needs ROUTELEAD_TLS_CERT and ROUTELEAD_TLS_KEY"
            )
        tokens = [t.strip() for t in settings.auth_tokens.split(",")]
        if path := settings.auth_token_file:
            tokens += [
                line.strip() for line in _read(path, "ROUTELEAD_AUTH_TOKEN_FILE").decode().splitlines()
            ]
        tokens = [t for t in tokens if t]
        if any(len(t) < 16 for t in tokens):
            raise SecurityError("auth tokens must be at least 16 characters")
        return cls(
            cert_chain=_read(cert, "ROUTELEAD_TLS_CERT") if cert else None,
            private_key=_read(key, "ROUTELEAD_TLS_KEY") if key else None,
            client_ca=_read(ca, "ROUTELEAD_TLS_CLIENT_CA") if ca else None,
            token_digests=tuple(_digest(t) for t in tokens),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        assert self.cert_chain is not None and self.private_key is not None
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [BearerTokenAuth(self.token_digests)] if self.token_digests else []

    def check_exposure(self, address: str, insecure: bool) -> None:
        """Off only for the local demo: a non-loopback listener needs TLS and authentication
        unless the operator says `--insecure` explicitly."""
        if insecure or (self.tls and self.authenticates) or is_loopback(address):
            return
        missing = [
            w for w, ok in (("TLS", self.tls), ("caller authentication", self.authenticates)) if not ok
        ]
        raise SecurityError(
            f"refusing to listen on {address} without {' and '.join(missing)}: set ROUTELEAD_TLS_CERT/"
            "ROUTELEAD_TLS_KEY and ROUTELEAD_AUTH_TOKEN_FILE (or ROUTELEAD_TLS_CLIENT_CA), "
            "or pass --insecure"
        )


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"{what}: cannot read {path}: {exc.strerror}") from None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_matches(presented: str, digests: tuple[bytes, ...]) -> bool:
    """Constant time in the presented token and in which configured token matched."""
    given = _digest(presented)
    ok = False
    for d in digests:
        ok |= hmac.compare_digest(given, d)
    return ok


Handler = Any  # grpc.RpcMethodHandler; grpc ships no type information


class BearerTokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """`authorization: Bearer <token>` on every call except health checks."""

    def __init__(self, digests: tuple[bytes, ...]) -> None:
        self._digests = digests

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Handler]], details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        header = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                header = value
        scheme, _, token = header.partition(" ")
        if not header:
            reason = "missing"
        elif scheme.lower() != "bearer" or not token_matches(token.strip(), self._digests):
            reason = "invalid"
        else:
            return handler
        AUTH_FAILURES.labels(reason).inc()
        log.warning("auth.refused", method=details.method, reason=reason)
        return _refusal(handler, f"{reason} bearer token")


def _refusal(handler: Handler, message: str) -> Handler:
    """A handler of the same shape as the real one that only refuses."""

    async def refuse(_request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    shape = (handler.request_streaming, handler.response_streaming)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[shape]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
