"""Per-buyer circuit breaker: a buyer that keeps timing out or erroring is skipped for a while.

closed → (N consecutive failures) → open → (cool-down passes) → half-open: one lead probes it;
success closes the circuit, failure opens it again for another cool-down.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Breaker:
    threshold: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None
    # When the current probe was let through; a probe that never reports (its lead did not
    # end up asking the buyer) expires after one cool-down, so the circuit cannot stick.
    probe_at: float | None = None

    @property
    def probing(self) -> bool:
        return self.probe_at is not None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.probing else "open"

    def allow(self, now: float) -> str | None:
        """None when this lead may ask the buyer; otherwise why not."""
        if self.opened_at is None:
            return None
        if self.probe_at is not None and now - self.probe_at < self.cooldown_s:
            return "circuit half-open: another lead is probing this buyer"
        wait = self.opened_at + self.cooldown_s - now
        if wait > 0:
            return f"circuit open after {self.failures} consecutive failures; next probe in {wait:.0f} s"
        self.probe_at = now  # this lead is the probe
        return None

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures, self.opened_at, self.probe_at = 0, None, None
            return
        self.failures += 1
        if self.probe_at is not None or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at, self.probe_at = now, None


class Breakers:
    """One breaker per buyer, per process (each replica judges its own connections)."""

    def __init__(self) -> None:
        self._by_buyer: dict[str, Breaker] = {}

    def get(self, buyer_id: str, threshold: int, cooldown_s: float) -> Breaker:
        b = self._by_buyer.get(buyer_id)
        if b is None or (b.threshold, b.cooldown_s) != (threshold, cooldown_s):
            b = self._by_buyer[buyer_id] = Breaker(threshold, cooldown_s)
        return b

    def states(self) -> dict[str, str]:
        return {buyer: b.state for buyer, b in self._by_buyer.items()}
