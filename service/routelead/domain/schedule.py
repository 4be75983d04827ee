"""Hours of operation: days of week, opening hours (per day if needed) and dates off, in a timezone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in local time; an end before the start crosses midnight."""

    start: time
    end: time

    def contains(self, t: time) -> bool:
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @classmethod
    def parse(cls, text: str) -> Window:
        try:
            a, b = text.split("-")
            start, end = time.fromisoformat(a.strip()), time.fromisoformat(b.strip())
        except ValueError:
            raise ValueError(f"hours must look like 08:00-18:00, got {text!r}") from None
        if start == end:
            raise ValueError(f"an empty window {text!r}")
        return cls(start, end)


@dataclass(frozen=True, slots=True)
class Schedule:
    timezone: str
    hours: Mapping[str, tuple[Window, ...]]  # day → windows; a day absent is closed
    dates_off: frozenset[date]

    def closed_reason(self, now_utc: datetime) -> str | None:
        """None when open at `now_utc`; otherwise why not, for the attempt's reason."""
        local = now_utc.astimezone(ZoneInfo(self.timezone))
        day = DAYS[local.weekday()]
        if local.date() in self.dates_off:
            return f"closed: {local.date()} is a day off ({self.timezone})"
        windows = self.hours.get(day, ())
        if not windows:
            return f"closed on {day} ({self.timezone})"
        if not any(w.contains(local.time()) for w in windows):
            open_ = ", ".join(map(str, windows))
            return f"closed at {local:%H:%M} {day} ({self.timezone}); open {open_}"
        return None


def build_schedule(
    timezone: str,
    days: list[str] | None,
    hours: str | Mapping[str, str | list[str]] | None,
    dates_off: list[date] | None,
) -> Schedule:
    """`days` + one `hours` string, or `hours` per day; ValueError says what is wrong."""
    unknown = [d for d in (days or []) if d not in DAYS]
    if unknown:
        raise ValueError(f"unknown day {unknown[0]!r}; use {', '.join(DAYS)}")
    table: dict[str, tuple[Window, ...]] = {}
    if isinstance(hours, Mapping):
        if days is not None:
            raise ValueError("give `days` with one `hours` range, or `hours` per day, not both")
        for day, spec in hours.items():
            if day not in DAYS:
                raise ValueError(f"unknown day {day!r}; use {', '.join(DAYS)}")
            texts = [spec] if isinstance(spec, str) else list(spec)
            table[day] = tuple(Window.parse(t) for t in texts)
    else:
        window = (Window.parse(hours),) if hours else (Window(time(0), time(23, 59, 59, 999999)),)
        for day in days or DAYS:
            table[day] = window
    return Schedule(timezone, table, frozenset(dates_off or ()))
