"""The blocking admin client: buyers over routelead.v1.Admin and reports over routelead.v1.Stats."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import Message
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import admin_pb2_grpc as apb_grpc
from routelead.v1 import stats_pb2 as spb
from routelead.v1 import stats_pb2_grpc as spb_grpc

from routelead_client.errors import admin_error_for
from routelead_client.policy import auth_metadata, channel_options
from routelead_client.stats import WindowStats, windows_from_proto

DEFAULT_ADMIN_TIMEOUT_S = 10.0
_Reply = TypeVar("_Reply", bound=Message)


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """The configuration version a change made live."""

    version: int
    author: str
    reason: str
    created_at: datetime
    digest: str


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container's arbitrary uid)
        return "unknown"


def _entity_json(doc: Mapping[str, Any]) -> str:
    def default(o: object) -> str:
        # Config money is a quoted decimal string; a Decimal becomes exactly that, never a float.
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, date):  # YAML reads an unquoted 2026-12-25 as a date
            return o.isoformat()
        raise TypeError(f"{type(o).__name__} is not JSON")

    return json.dumps(doc, default=default)


_LIVE = apb.ListVersionsRequest(limit=1)
_BUYERS = apb.ListEntitiesRequest(kind=apb.BUYER)


class AdminRequests:
    """What the blocking and the asyncio admin clients share: who they act as, every request
    they send and how each answer is read. Only how a call is made differs between them."""

    def __init__(self, target: str, *, token: str, timeout_s: float, author: str | None) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.author = author or os_user()
        # Sent as `authorization: Bearer <token>` on every call; pair it with TLS credentials off loopback.
        self._metadata = auth_metadata(token)

    def _change(self, reason: str, expected_version: int | None) -> apb.Change:
        return apb.Change(author=self.author, reason=reason, expected_version=expected_version or 0)

    @staticmethod
    def _get(buyer_id: str) -> apb.GetEntityRequest:
        return apb.GetEntityRequest(kind=apb.BUYER, id=buyer_id)

    def _upsert(
        self, doc: Mapping[str, Any], reason: str, expected_version: int | None
    ) -> apb.UpsertEntityRequest:
        return apb.UpsertEntityRequest(
            kind=apb.BUYER, json=_entity_json(doc), change=self._change(reason, expected_version)
        )

    def _delete(self, buyer_id: str, reason: str, expected_version: int | None) -> apb.DeleteEntityRequest:
        return apb.DeleteEntityRequest(
            kind=apb.BUYER, id=buyer_id, change=self._change(reason, expected_version)
        )

    def _paused(
        self, buyer_id: str, paused: bool, reason: str, expected_version: int | None
    ) -> apb.SetBuyerPausedRequest:
        return apb.SetBuyerPausedRequest(
            buyer_id=buyer_id, paused=paused, change=self._change(reason, expected_version)
        )

    @staticmethod
    def _stats_request(
        window: str,
        from_date: date | None,
        to_date: date | None,
        by_day: bool,
        tz: str | None,
        buyer: str | None,
        flow: str | None,
        source: str | None,
    ) -> spb.GetStatsRequest:
        return spb.GetStatsRequest(
            window=window,
            from_date=from_date.isoformat() if from_date else "",
            to_date=to_date.isoformat() if to_date else "",
            by_day=by_day,
            timezone=tz or "",
            buyer_id=buyer or "",
            flow=flow or "",
            source_id=source or "",
        )


def version_of(reply: apb.ChangeResponse) -> ConfigVersion:
    v = reply.version
    return ConfigVersion(
        version=v.version,
        author=v.author,
        reason=v.reason,
        created_at=datetime.fromisoformat(v.created_at),
        digest=v.digest,
    )


def buyer_ids(reply: apb.ListEntitiesResponse) -> list[str]:
    return [e.id for e in reply.entities]


def buyer_doc(entity: apb.Entity) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(entity.json)
    return doc


class RouteLeadAdmin(AdminRequests):
    """Buyers and stats with the admin token; every change is a new, validated configuration version.

    Use as `with RouteLeadAdmin(target, token=...) as admin: admin.pause_buyer("a", "holiday")`.
    Nothing is retried: a change whose answer was lost may have gone live, and `expected_version`
    is the way to make a repeat safe. Safe to share between threads. `AsyncRouteLeadAdmin` is the
    asyncio twin.
    """

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
            grpc.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._admin = apb_grpc.AdminStub(self._channel)
        self._stats = spb_grpc.StatsStub(self._channel)

    def _call(self, rpc: Callable[..., _Reply], request: Message) -> _Reply:
        try:
            return rpc(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise admin_error_for(exc.code(), exc.details() or "") from None

    def live_version(self) -> int:
        """The live version's number: read it before get_buyer to pass it as `expected_version`."""
        listed: apb.ListVersionsResponse = self._call(self._admin.ListVersions, _LIVE)
        return listed.live

    def list_buyers(self) -> list[str]:
        return buyer_ids(self._call(self._admin.ListEntities, _BUYERS))

    def get_buyer(self, buyer_id: str) -> dict[str, Any]:
        """The buyer as in the file; header secrets come back as "***" (send them back unchanged)."""
        return buyer_doc(self._call(self._admin.GetEntity, self._get(buyer_id)))

    def put_buyer(
        self, doc: Mapping[str, Any], reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        """Insert or replace the buyer `doc["id"]`; the service validates it like the file."""
        return version_of(self._call(self._admin.UpsertEntity, self._upsert(doc, reason, expected_version)))

    def delete_buyer(
        self, buyer_id: str, reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        return version_of(
            self._call(self._admin.DeleteEntity, self._delete(buyer_id, reason, expected_version))
        )

    def pause_buyer(
        self, buyer_id: str, reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        request = self._paused(buyer_id, True, reason, expected_version)
        return version_of(self._call(self._admin.SetBuyerPaused, request))

    def resume_buyer(
        self, buyer_id: str, reason: str, *, expected_version: int | None = None
    ) -> ConfigVersion:
        request = self._paused(buyer_id, False, reason, expected_version)
        return version_of(self._call(self._admin.SetBuyerPaused, request))

    def stats(
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
        """Buyer performance and flow / source money from the books.

        `window`: "last_hour", "today" (in `tz`, an IANA name; default UTC) or "range" (from_date to
        to_date, both included; with `by_day`, one window per day). `buyer` / `flow` / `source` narrow it.
        """
        request = self._stats_request(window, from_date, to_date, by_day, tz, buyer, flow, source)
        return windows_from_proto(self._call(self._stats.GetStats, request))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
