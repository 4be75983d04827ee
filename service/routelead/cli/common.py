"""What the `routelead` verb groups share: the event loop, the config, dates, admin calls, tables."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config models and grpc load only when a command needs them
    from routelead.config.runtime import RuntimeConfig
    from routelead.settings import Settings


def fail(message: str) -> None:
    print(f"routelead: {message}", file=sys.stderr)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no Windows build
        return asyncio.run(coro)
    return uvloop.run(coro)


def load(path: str | None) -> RuntimeConfig:
    """The configuration, or exit 2 with the loader's one-line error."""
    from routelead.config.loader import ConfigError, load_config

    if not path:
        fail("no configuration: pass --config FILE or set ROUTELEAD_CONFIG")
        raise SystemExit(2)
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))
        raise SystemExit(2) from None


def when(text: str) -> datetime:
    """An ISO date or time from the command line; without a zone, UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"routelead: {text!r} is not an ISO date or time (e.g. 2026-11-01)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def over_admin_api(
    settings: Settings, call: Callable[[str], Coroutine[Any, Any, int]], *, target: str = "", hint: str = ""
) -> int:
    """Run one call to the running service with the admin token: exit 2 for a local problem (no
    token, an unreadable TLS file), 1 when the service refused or failed the call."""
    from routelead.api.admin_channel import ChannelError
    from routelead.api.credentials import admin_token

    token = admin_token(settings)
    if not token:
        fail("set ROUTELEAD_ADMIN_TOKEN (or ROUTELEAD_ADMIN_TOKEN_FILE)" + hint)
        return 2
    import grpc  # here, not at import: `serve` must not load grpc before it forks its workers

    try:
        code: int = asyncio.run(call(token))
    except ChannelError as exc:
        fail(str(exc))
        return 2
    except grpc.aio.AioRpcError as exc:
        fail(f"{target + ': ' if target else ''}{exc.code().name}: {exc.details()}")
        return 1
    return code


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The label column left-aligned, the figures right-aligned, each as wide as its widest cell."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return "".join(
        "  ".join([cells[0].ljust(widths[0]), *map(str.rjust, cells[1:], widths[1:])]).rstrip() + "\n"
        for cells in (header, *rows)
    )
