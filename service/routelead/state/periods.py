"""Cap period keys in a buyer's own timezone ("day:2026-11-22")."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from routelead.state.ports import Period


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def period_key(period: Period, now: float, tz: str) -> str:
    local = datetime.fromtimestamp(now, zone(tz))
    match period:
        case "hour":
            return f"hour:{local:%Y-%m-%dT%H}"
        case "day":
            return f"day:{local:%Y-%m-%d}"
        case "week":
            year, week, _ = local.isocalendar()
            return f"week:{year}-W{week:02d}"
        case "month":
            return f"month:{local:%Y-%m}"
