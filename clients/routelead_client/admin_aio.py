"""The asyncio admin client: RouteLeadAdmin's twin on grpc.aio, for services that run an event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import Message
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import admin_pb2_grpc as apb_grpc
from routelead.v1 import stats_pb2_grpc as spb_grpc

from routelead_client.admin import (
    _BUYERS,
    _LIVE,
    DEFAULT_ADMIN_TIMEOUT_S,
    AdminRequests,
    ConfigVersion,
    buyer_doc,
    buyer_ids,
    version_of,
)
from routelead_client.errors import admin_error_for
from routelead_client.policy import channel_options
from routelead_client.stats import WindowStats, windows_from_proto

_Reply = TypeVar("_Reply", bound=Message)


class AsyncRouteLeadAdmin(AdminRequests):
    """Buyers and stats with the admin token, awaited: `async with AsyncRouteLeadAdmin(target,
    token=...) as admin: await admin.pause_buyer("a", "holiday")`. Same rules as RouteLeadAdmin:
    nothing is retried, `expected_version` makes a repeat safe. Use it from one event loop."""

    def __init__(
        self,
        target: str,
        *,
        token: str,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = DEFAULT_ADMIN_TIMEOUT_S,
        author: str | None = None,
        options: Mapping[str, int | str] | None = None,
    ) -> None:
        super().__init__(target, token=token, timeout_s=timeout_s, author=author)
        opts = channel_options(options)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=opts)
        )
        self._admin = apb_grpc.AdminStub(self._channel)
        self._stats = spb_grpc.StatsStub(self._channel)

    async def _call(self, rpc: Callable[..., Awaitable[_Reply]], request: Message) -> _Reply:
        try:
            return await rpc(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise admin_error_for(exc.code(), exc.details() or "") from None

    async def live_version(self) -> int:
        """The live version's number: read it before get_buyer to pass it as `expected_version`."""
        listed: apb.ListVersionsResponse = await self._call(self._admin.ListVersions, _LIVE)
        return listed.live

    async def list_buyers(self) -> list[str]:
        return buyer_ids(await self._call(self._admin.ListEntities, _BUYERS))

    async def get_buyer(self, buyer_id: str) -> dict[str, Any]:
        """The buyer as in the file; header secrets come back as "***" (send them back unchanged)."""
        return buyer_doc(await self._call(self._admin.GetEntity, self._get(buyer_id)))

    async def put_buyer(
        self, doc: Mapping[str, Any], reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        """Insert or replace the buyer `doc["id"]`; the service validates it like the file."""
        request = self._upsert(doc, reason, expected_version)
        return version_of(await self._call(self._admin.UpsertEntity, request))

    async def delete_buyer(
        self, buyer_id: str, reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        request = self._delete(buyer_id, reason, expected_version)
        return version_of(await self._call(self._admin.DeleteEntity, request))

    async def pause_buyer(
        self, buyer_id: str, reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        request = self._paused(buyer_id, True, reason, expected_version)
        return version_of(await self._call(self._admin.SetBuyerPaused, request))

    async def resume_buyer(
        self, buyer_id: str, reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        request = self._paused(buyer_id, False, reason, expected_version)
        return version_of(await self._call(self._admin.SetBuyerPaused, request))

    async def stats(
        self,
        window: str = "last_hour",
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        by_day: bool = False,
        tz: str | None = None,
        buyer: str | None = None,
        flow: str | None = None,
        source: str | None = None,
    ) -> list[WindowStats]:
        """As RouteLeadAdmin.stats: buyer performance and flow / source money from the books."""
        request = self._stats_request(window, from_date, to_date, by_day, tz, buyer, flow, source)
        return windows_from_proto(await self._call(self._stats.GetStats, request))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
