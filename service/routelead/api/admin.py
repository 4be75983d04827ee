"""The routelead.v1.Admin service: live configuration changes as new, validated, immutable versions."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeAlias

import grpc
import orjson

from routelead.api.credentials import admin_token
from routelead.config import documents as docs
from routelead.config.loader import ConfigError, load_config_bytes
from routelead.config.secrets import SecretPolicy
from routelead.records.configstore import FILE_AUTHOR, ConfigStore, StaleVersion, Version, reference_check
from routelead.v1 import admin_pb2 as pb
from routelead.v1 import admin_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "AdminServicer", "admin_token"]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Admin"].full_name
_KIND: dict[int, str] = {pb.BUYER: "buyer", pb.SOURCE: "source", pb.FLOW: "flow", pb.LEAD_TYPE: "lead_type"}
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _info(v: Version) -> pb.VersionInfo:
    return pb.VersionInfo(
        version=v.version,
        digest=v.digest,
        author=v.author,
        reason=v.reason,
        created_at=v.created_at.isoformat(),
    )


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, store: ConfigStore, token: str, env: Mapping[str, str] | None = None) -> None:
        if len(token) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        self._store = store
        self._expected = f"Bearer {token}".encode()
        self._env = env
        SecretPolicy.from_env(env)  # a bad ROUTELEAD_SECRET_PREFIXES / _SECRETS_DIR fails the start

    def register(self, server: grpc.aio.Server) -> str:
        pb_grpc.add_AdminServicer_to_server(self, server)
        return SERVICE_NAME

    async def _auth(self, context: Context) -> None:
        await require_admin(context, self._expected)

    async def _live(self, context: Context) -> Version:
        v = await self._store.latest()
        if v is None:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "no configuration version stored yet")
        return v

    async def _version(self, context: Context, n: int) -> Version:
        if n == 0:
            return await self._live(context)
        try:
            return await self._store.get(n)
        except LookupError as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    async def _commit(
        self, context: Context, change: pb.Change, edit: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> pb.ChangeResponse:
        await self._auth(context)
        if not change.author.strip() or not change.reason.strip():
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "change.author and change.reason: required"
            )
        live = await self._live(context)
        if change.expected_version and change.expected_version != live.version:
            await _abort(
                context,
                grpc.StatusCode.ABORTED,
                f"version {live.version} is live, not {change.expected_version}: reload",
            )
        try:
            text = docs.dump(edit(docs.parse(live.document)))
        except docs.DocumentError as exc:
            code = (
                grpc.StatusCode.NOT_FOUND if str(exc).startswith("no ") else grpc.StatusCode.INVALID_ARGUMENT
            )
            await _abort(context, code, str(exc))
        return await self._store_checked(context, text, change, live.version)

    async def _store_checked(
        self, context: Context, text: str, change: pb.Change, parent: int
    ) -> pb.ChangeResponse:
        if change.author.strip().lower() == FILE_AUTHOR:
            # Versions by the file are trusted as the operator's; an Admin change is not one.
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"change.author: {FILE_AUTHOR!r} is reserved"
            )
        try:
            # The references it names first: nothing is read for a change that may not name it.
            origin = "the changed configuration"
            reference_check(text, await self._store.file_document(), self._env, origin)
            load_config_bytes(text.encode(), origin, self._env)
        except ConfigError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            v = await self._store.commit(text, change.author.strip(), change.reason.strip(), parent)
        except StaleVersion as exc:
            await _abort(context, grpc.StatusCode.ABORTED, str(exc))
        return pb.ChangeResponse(version=_info(v))

    async def _kind(self, context: Context, kind: int) -> str:
        if kind not in _KIND:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "kind: BUYER, SOURCE, FLOW or LEAD_TYPE")
        return _KIND[kind]

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: Context
    ) -> pb.ListVersionsResponse:
        await self._auth(context)
        versions = await self._store.versions(request.limit or 100)
        return pb.ListVersionsResponse(
            versions=[_info(v) for v in versions], live=versions[0].version if versions else 0
        )

    async def ExportVersion(
        self, request: pb.ExportVersionRequest, context: Context
    ) -> pb.ExportVersionResponse:
        await self._auth(context)
        v = await self._version(context, request.version)
        shown = docs.dump(docs.redact_document(docs.parse(v.document)))
        return pb.ExportVersionResponse(version=_info(v), yaml=shown)

    async def DiffVersions(
        self, request: pb.DiffVersionsRequest, context: Context
    ) -> pb.DiffVersionsResponse:
        await self._auth(context)
        a = await self._version(context, request.from_version)
        b = await self._version(context, request.to_version)
        return pb.DiffVersionsResponse(
            unified_diff=docs.diff(a.document, b.document, f"v{a.version}", f"v{b.version}")
        )

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.ChangeResponse:
        await self._auth(context)
        if not request.change.author.strip() or not request.change.reason.strip():
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "change.author and change.reason: required"
            )
        target = await self._version(context, request.to_version)
        live = await self._live(context)
        if request.change.expected_version and request.change.expected_version != live.version:
            await _abort(context, grpc.StatusCode.ABORTED, f"version {live.version} is live: reload")
        change = pb.Change(
            author=request.change.author,
            reason=f"rollback to v{target.version}: {request.change.reason.strip()}",
        )
        return await self._store_checked(context, target.document, change, live.version)

    async def ListEntities(
        self, request: pb.ListEntitiesRequest, context: Context
    ) -> pb.ListEntitiesResponse:
        await self._auth(context)
        kind = await self._kind(context, request.kind)
        live = await self._live(context)
        items = docs.entities(docs.parse(live.document), kind)
        return pb.ListEntitiesResponse(
            entities=[
                pb.Entity(kind=request.kind, id=str(x.get("id", "")), json=orjson.dumps(x).decode())
                for x in items
            ],
            version=live.version,
        )

    async def GetEntity(self, request: pb.GetEntityRequest, context: Context) -> pb.Entity:
        await self._auth(context)
        kind = await self._kind(context, request.kind)
        live = await self._live(context)
        try:
            x = docs.get(docs.parse(live.document), kind, request.id)
        except docs.DocumentError as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.Entity(kind=request.kind, id=request.id, json=orjson.dumps(x).decode())

    async def UpsertEntity(self, request: pb.UpsertEntityRequest, context: Context) -> pb.ChangeResponse:
        await self._auth(context)
        kind = await self._kind(context, request.kind)
        try:
            entity = orjson.loads(request.json)
        except orjson.JSONDecodeError:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "json: not valid JSON")
        return await self._commit(context, request.change, lambda d: docs.upsert(d, kind, entity))

    async def DeleteEntity(self, request: pb.DeleteEntityRequest, context: Context) -> pb.ChangeResponse:
        await self._auth(context)
        kind = await self._kind(context, request.kind)
        return await self._commit(context, request.change, lambda d: docs.delete(d, kind, request.id))

    async def SetBuyerPaused(self, request: pb.SetBuyerPausedRequest, context: Context) -> pb.ChangeResponse:
        stamp = {
            "by": request.change.author.strip(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": request.change.reason.strip(),
        }
        return await self._commit(
            context,
            request.change,
            lambda d: docs.set_enabled(d, request.buyer_id, not request.paused, stamp),
        )


async def require_admin(context: Any, expected: bytes) -> None:
    """The admin token, compared in constant time; the routing tokens do not open the Admin API."""
    given = dict(context.invocation_metadata() or ()).get("authorization", "")
    given_b = given.encode() if isinstance(given, str) else bytes(given)
    if not hmac.compare_digest(given_b, expected):
        await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "the Admin API needs its admin token")


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this tells the type checker
