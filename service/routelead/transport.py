"""All buyer HTTP goes through here: one keep-alive aiohttp session, hard time and size limits."""

from __future__ import annotations

import asyncio
import ssl
from typing import Self

import aiohttp

from routelead.buyers.base import HttpAnswer, HttpRequest

DEFAULT_MAX_BODY = 64 * 1024
_READ_CHUNK = 16 * 1024


class TransportError(Exception):
    """The request failed. `delivered_maybe` is False only when the buyer provably got nothing."""

    def __init__(self, reason: str, *, delivered_maybe: bool) -> None:
        super().__init__(reason)
        self.delivered_maybe = delivered_maybe


class TransportTimeout(TransportError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no answer within {timeout_s * 1000:.0f} ms", delivered_maybe=True)


class BodyTooLarge(TransportError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes", delivered_maybe=True)


class Transport:
    """Owns the shared ClientSession; `send` never outlives its timeout and never reads unbounded bodies."""

    def __init__(self, *, max_connections: int = 1000, per_host: int = 256, verify_tls: bool = True) -> None:
        self._max_connections = max_connections
        self._per_host = per_host
        self._verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._per_host,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            ssl=ssl.create_default_context() if self._verify_tls else False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Per-request limits are applied in send(); the session itself never waits forever.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "RouteLead/0.1"},
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, req: HttpRequest, timeout_s: float, max_body: int = DEFAULT_MAX_BODY) -> HttpAnswer:
        if self._session is None:
            raise RuntimeError("Transport.start() was not called")
        if timeout_s <= 0:
            raise TransportTimeout(0)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._exchange(req, max_body)
        except TimeoutError:
            raise TransportTimeout(timeout_s) from None
        except aiohttp.ClientConnectorCertificateError:
            raise TransportError(
                "cannot connect: TLS certificate not trusted", delivered_maybe=False
            ) from None
        except aiohttp.ClientConnectorError as exc:
            # Refused, unreachable, DNS, TLS handshake: nothing reached the buyer.
            why = exc.os_error.strerror or type(exc.os_error).__name__
            raise TransportError(f"cannot connect: {why}", delivered_maybe=False) from None
        except aiohttp.ClientPayloadError:
            raise TransportError("answer body broken off or badly encoded", delivered_maybe=True) from None
        except aiohttp.ClientResponseError as exc:
            raise TransportError(f"malformed HTTP answer: {exc.message[:80]}", delivered_maybe=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"connection failed: {_short(exc)}", delivered_maybe=True) from None

    async def _exchange(self, req: HttpRequest, max_body: int) -> HttpAnswer:
        assert self._session is not None
        async with self._session.request(
            req.method, req.url, data=req.body, headers=dict(req.headers), allow_redirects=False
        ) as resp:
            length = resp.content_length
            if length is not None and length > max_body:
                raise BodyTooLarge(max_body)
            chunks: list[bytes] = []
            size = 0
            # Read incrementally, so a huge (or decompression-bomb) body costs at most max_body.
            while chunk := await resp.content.read(_READ_CHUNK):
                size += len(chunk)
                if size > max_body:
                    raise BodyTooLarge(max_body)
                chunks.append(chunk)
            return HttpAnswer(resp.status, b"".join(chunks), resp.headers.get("Content-Type", ""))


def _short(exc: BaseException) -> str:
    # The class name only: exception texts can carry URLs, and URLs can carry API keys.
    return type(exc).__name__
