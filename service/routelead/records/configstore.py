"""Configuration versions in the database, and every replica following the live one.

A change is a new row (version = previous + 1; the primary key makes concurrent writers
conflict instead of overwriting). PostgreSQL announces it with NOTIFY in the same transaction;
watchers LISTEN, and also poll, so a missed notification (a reconnect) costs at most a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
import yaml
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from routelead.config import documents as docs
from routelead.config.loader import ConfigError, load_config_bytes
from routelead.config.runtime import RuntimeConfig
from routelead.config.secrets import SecretPolicy, admin_problems
from routelead.records.schema import config_versions

log = structlog.get_logger("routelead.config")
CHANNEL = "routelead_config"
FILE_AUTHOR = "file"


class StaleVersion(Exception):
    """The change was made against a version that is no longer the live one."""


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    digest: str
    author: str
    reason: str
    created_at: datetime
    document: str


def compile_version(
    v: Version, env: Mapping[str, str] | None = None, file_document: str | None = None
) -> RuntimeConfig:
    """Validate and compile exactly as the file is; the ledger names it `v<N>`.

    A version the file did not write (an Admin change) may name only the `${…}` references the
    operator allows (ROUTELEAD_SECRET_PREFIXES, ROUTELEAD_SECRETS_DIR) or that `file_document`,
    the file version it descends from, names at the same place: checked before anything is
    read, on every replica, so a version stored by any means never sends another secret."""
    if v.author != FILE_AUTHOR:
        reference_check(v.document, file_document, env, f"config version {v.version}")
    config = load_config_bytes(v.document.encode(), f"config version {v.version}", env)
    return dataclasses.replace(config, version=f"v{v.version}")


def reference_check(
    document: str, file_document: str | None, env: Mapping[str, str] | None, origin: str
) -> None:
    """ConfigError naming each reference an Admin-made document may not name."""
    try:
        parsed = docs.parse(document)
        from_file = docs.parse(file_document) if file_document else None
    except (docs.DocumentError, yaml.YAMLError) as exc:
        raise ConfigError(origin, [str(exc)]) from None
    problems = admin_problems(parsed, from_file, SecretPolicy.from_env(env))
    if problems:
        raise ConfigError(origin, problems)


def _version(row: Any) -> Version:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return Version(int(row.version), row.digest, row.author, row.reason, created, row.document)


class ConfigStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def seed(self, document: str, env: Mapping[str, str] | None = None) -> Version:
        """The file seeds version 1. Later starts: an unchanged file leaves the live version (and
        its Admin changes) alone; an edited file is a change like any other, a new version."""
        digest = hashlib.sha256(document.encode()).hexdigest()[:16]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(config_versions.c.digest)
                    .where(config_versions.c.author == FILE_AUTHOR)
                    .order_by(config_versions.c.version.desc())
                    .limit(1)
                )
            ).first()
        live = await self.latest()
        if live is not None and row is not None and row.digest == digest:
            return live
        load_config_bytes(document.encode(), "the configuration file", env)  # never store an invalid file
        reason = "seeded from the configuration file" if live is None else "the configuration file changed"
        try:
            return await self.commit(document, FILE_AUTHOR, reason, live.version if live else 0)
        except StaleVersion:
            # Another replica stored it at the same moment.
            live = await self.latest()
            assert live is not None
            return live

    async def latest(self) -> Version | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(config_versions).order_by(config_versions.c.version.desc()).limit(1)
                )
            ).first()
        return _version(row) if row else None

    async def file_document(self, before: int | None = None) -> str | None:
        """The newest version the configuration file wrote (older than `before`, when given):
        the references it names are the ones an Admin change may keep where they are."""
        query = sa.select(config_versions.c.document).where(config_versions.c.author == FILE_AUTHOR)
        if before is not None:
            query = query.where(config_versions.c.version < before)
        async with self.engine.connect() as conn:
            found = await conn.scalar(query.order_by(config_versions.c.version.desc()).limit(1))
        return str(found) if found is not None else None

    async def compile(self, v: Version, env: Mapping[str, str] | None = None) -> RuntimeConfig:
        """compile_version, against the file version `v` descends from."""
        base = None if v.author == FILE_AUTHOR else await self.file_document(before=v.version)
        return compile_version(v, env, base)

    async def latest_number(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.max(config_versions.c.version))) or 0)

    async def get(self, version: int) -> Version:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(config_versions).where(config_versions.c.version == version))
            ).first()
        if row is None:
            raise LookupError(f"no configuration version {version}")
        return _version(row)

    async def versions(self, limit: int = 100) -> list[Version]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(config_versions).order_by(config_versions.c.version.desc()).limit(limit)
            )
            return [_version(r) for r in rows]

    async def commit(self, document: str, author: str, reason: str, parent: int) -> Version:
        """Store `document` as version parent + 1; StaleVersion when someone else got there first."""
        v = Version(
            parent + 1,
            hashlib.sha256(document.encode()).hexdigest()[:16],
            author[:128],
            reason,
            datetime.now(UTC),
            document,
        )
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(config_versions).values(**dataclasses.asdict(v)))
                if conn.dialect.name == "postgresql":
                    await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, str(v.version))))
        except IntegrityError:
            raise StaleVersion(f"version {parent + 1} already exists: reload and retry") from None
        log.info("config.version_stored", version=v.version, author=v.author, digest=v.digest)
        return v


class ConfigWatcher:
    """Keeps one replica on the live version: `apply` is called with each newer compiled config."""

    def __init__(
        self,
        store: ConfigStore,
        apply: Callable[[RuntimeConfig], None],
        current: int,
        *,
        env: Mapping[str, str] | None = None,
        poll_s: float = 0.25,
    ) -> None:
        self._store = store
        self._apply = apply
        self.current = current
        self._env = env
        self._poll_s = poll_s
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self._store.engine.dialect.name == "postgresql":
                await self._listen(stack)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                self._wake.clear()
                try:
                    await self.check()
                except Exception as exc:
                    log.warning("config.watch_failed", error=type(exc).__name__)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self, stack: contextlib.AsyncExitStack) -> None:
        """LISTEN on a connection of its own; if that fails (or drops), polling still finds changes."""
        try:
            conn = await stack.enter_async_context(self._store.engine.connect())
            driver: Any = (await conn.get_raw_connection()).driver_connection
            await driver.add_listener(CHANNEL, self._notified)
            stack.push_async_callback(driver.remove_listener, CHANNEL, self._notified)
        except Exception as exc:
            log.warning("config.listen_unavailable", error=type(exc).__name__)

    async def check(self) -> None:
        if await self._store.latest_number() <= self.current:
            return
        v = await self._store.latest()
        assert v is not None
        try:
            config = await self._store.compile(v, self._env)
        except ConfigError as exc:
            # Valid where it was made, not here (a missing secret): keep routing on the old one.
            log.error("config.version_rejected", version=v.version, problems=exc.problems)
            self.current = v.version
            return
        self._apply(config)
        self.current = v.version
        log.info("config.version_live", version=v.version, at=time.time())
