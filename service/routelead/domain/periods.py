"""Cap periods in a buyer's own timezone: their keys ("day:2026-11-22") and when they end."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from zoneinfo import ZoneInfo

from routelead.domain.caps import Period


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def period_key(period: Period, now: float, tz: str) -> str:
    local = datetime.fromtimestamp(now, zone(tz))
    match period:
        case "hour":
            # The offset tells apart the two 01:00 hours of a DST fall-back night.
            return f"hour:{local:%Y-%m-%dT%H%z}"
        case "day":
            return f"day:{local:%Y-%m-%d}"
        case "week":
            year, week, _ = local.isocalendar()
            return f"week:{year}-W{week:02d}"
        case "month":
            return f"month:{local:%Y-%m}"


def period_end(period: Period, now: float, tz: str) -> float:
    """The epoch second at which the period containing `now` ends (DST-aware: a day is 23 or 25
    hours on a change-over night)."""
    z = zone(tz)
    local = datetime.fromtimestamp(now, z)
    match period:
        case "hour":
            into = local.minute * 60 + local.second + local.microsecond / 1e6
            return now - into + 3600.0
        case "day":
            return _midnight(local.date() + timedelta(days=1), z)
        case "week":
            return _midnight(local.date() + timedelta(days=7 - local.weekday()), z)
        case "month":
            first = local.date().replace(day=1)
            return _midnight((first + timedelta(days=32)).replace(day=1), z)


def _midnight(day: date, z: ZoneInfo) -> float:
    return datetime.combine(day, dtime(0), tzinfo=z).timestamp()
