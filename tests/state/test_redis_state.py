"""What only the Redis backend does: script loading, key layout, the mirror, the outbox, outages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import yaml
from routelead.domain.outcome import Outcome, RoutingResult
from routelead.domain.periods import period_end
from routelead.settings import SettingsError, load_settings
from routelead.state.plan import GRACE_S
from routelead.state.ports import CapLimits, LeadInFlight, StateUnavailable, lead_deadline
from routelead.state.redis import connect
from routelead.state.select import hot_state

from tests.configs import document, fixed_buyer
from tests.state.conftest import SECRET, RedisProcess

DAY = CapLimits("b1", "America/New_York", (("day", 2),), (("week", Decimal("500")),))


async def test_the_script_is_reloaded_when_redis_forgot_it(redis_url: str) -> None:
    state = connect(redis_url, SECRET, op_timeout_s=2.0)
    try:
        assert await state.caps.reserve(DAY, "l1", time.time()) is not None
        await state.redis.script_flush()

        assert await state.caps.reserve(DAY, "l2", time.time()) is not None
        assert await state.caps.reserve(DAY, "l3", time.time()) is None
    finally:
        await state.close()


async def test_keys_share_the_buyers_hash_tag_and_expire_with_their_period(redis_url: str) -> None:
    state = connect(redis_url, SECRET, op_timeout_s=2.0)
    try:
        now = time.time()
        r = await state.caps.reserve(DAY, "l1", now, Decimal("42.50"))
        assert r is not None
        keys = sorted(str(k, "utf-8") if isinstance(k, bytes) else k for k in await state.redis.keys("*"))
        assert keys and all(k.startswith("rl:{b1}:") for k in keys)
        day_key = f"rl:{{b1}}:{r.keys[0]}"
        expected = period_end("day", now, "America/New_York") - now + GRACE_S
        assert abs(await state.redis.ttl(day_key) - expected) < 5
        assert await state.caps.count("b1", r.budget_keys[0]) == 4250
    finally:
        await state.close()


async def test_the_mirror_sees_other_replicas_sales_and_top_ups(redis_url: str) -> None:
    one = connect(redis_url, SECRET, op_timeout_s=2.0)
    two = connect(redis_url, SECRET, op_timeout_s=2.0)
    prepaid = CapLimits("pp", "UTC", (), (), prepaid=True)
    try:
        now = time.time()
        assert one.caps.has_room(DAY, now) and one.caps.has_room(prepaid, now)
        await one.caps.refresh()
        assert not one.caps.has_room(prepaid, now)  # balance 0 is now known
        for i in range(2):
            assert await two.caps.reserve(DAY, f"l{i}", now) is not None
        await two.caps.top_up("pp", Decimal("100"))

        await asyncio.sleep(0.6)  # two refresh periods

        assert not one.caps.has_room(DAY, time.time())
        assert one.caps.has_room(prepaid, time.time(), Decimal("99.99"))
    finally:
        await one.close()
        await two.close()


async def test_a_waiting_repeat_gives_up_at_its_own_deadline(redis_url: str) -> None:
    state = connect(redis_url, SECRET, op_timeout_s=2.0)
    started = asyncio.Event()

    async def slow() -> RoutingResult:
        started.set()
        await asyncio.sleep(1.0)
        return RoutingResult("L3", "solar", "src", False, Outcome.SOLD, Decimal("1"))

    try:
        first = asyncio.create_task(state.idempotency.once("L3", slow))
        await started.wait()
        t0 = time.monotonic()
        token = lead_deadline.set(t0 + 0.2)
        try:
            with pytest.raises(LeadInFlight):
                await state.idempotency.once("L3", slow)
        finally:
            lead_deadline.reset(token)
        assert time.monotonic() - t0 < 0.6
        assert not (await first).replayed
        assert (await state.idempotency.once("L3", slow)).replayed
    finally:
        await state.close()


async def test_with_redis_down_every_call_is_bounded_and_fails_safe(own_redis: RedisProcess) -> None:
    state = connect(own_redis.url, SECRET, op_timeout_s=0.1)
    try:
        now = time.time()
        kept = await state.caps.reserve(DAY, "before", now)
        assert kept is not None
        own_redis.executor.stop()

        t0 = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.caps.reserve(DAY, "during", now)
        await state.caps.commit(kept, outbox=b"sale")  # recorded later, never raised into the lead
        with pytest.raises(StateUnavailable):
            await state.dedupe.seen_or_add("k", 60, add=True)
        turn = await state.rotation.next_turn("t")
        ran = await state.idempotency.once(
            "L9", lambda: asyncio.sleep(0, RoutingResult("L9", "f", "s", False, Outcome.UNSOLD, Decimal(0)))
        )
        assert time.monotonic() - t0 < 2.0
        assert not state.caps.healthy and not state.caps.has_room(DAY, now)
        assert turn == 0 and ran.lead_id == "L9"
        assert state.metrics.redis_fallbacks_total == {"rotation": 1, "idempotency": 1}

        own_redis.executor.start()
        # The failed commit wrote neither half: the reservation is still open (and counted) and
        # the outbox is empty; retried, both land together.
        assert await state.redis.hexists("rl:{b1}:res", kept.id)
        assert await state.redis.xlen("rl:{b1}:outbox") == 0
        await state.caps.commit(kept, outbox=b"sale")
        assert not await state.redis.hexists("rl:{b1}:res", kept.id)
        assert await state.redis.xlen("rl:{b1}:outbox") == 1
        assert state.caps.healthy
    finally:
        await state.close()


def test_serving_on_redis_without_a_dedupe_key_is_refused(redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTELEAD_DEDUPE")}
    env["REDIS_URL"] = redis_url
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(document([fixed_buyer(lambda b, s: "http://127.0.0.1:9/x", "a", "5")]))
    )

    proc = subprocess.run(
        [sys.executable, "-m", "routelead.cli", "serve", "--config", str(tmp_path / "c.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2
    assert "ROUTELEAD_DEDUPE_KEY" in proc.stderr


def test_balances_are_shown_and_topped_up_from_the_cli(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "routelead.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("balance", "pp", "--top-up", "250.00").stdout.strip() == "250.00"
    assert cli("balance", "pp", "--top-up", "-50").stdout.strip() == "200.00"
    assert cli("balance", "pp").stdout.strip() == "200.00"
    bad = cli("balance", "pp", "--top-up", "lots")
    assert bad.returncode == 2 and "not an amount" in bad.stderr
    unknown = cli("settle", "pp", "nope", "--free")
    assert unknown.returncode == 1 and "no open reservation" in unknown.stderr
    no_redis = subprocess.run(
        [sys.executable, "-m", "routelead.cli", "unsettled"],
        env={k: v for k, v in env.items() if k != "REDIS_URL"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_redis.returncode == 2 and "REDIS_URL" in no_redis.stderr


async def test_volume_counts_are_shared_by_replicas(redis_url: str) -> None:
    from routelead.state.redis import connect

    one, two = (
        connect(redis_url, b"k" * 16, op_timeout_s=2.0),
        connect(redis_url, b"k" * 16, op_timeout_s=2.0),
    )
    try:
        await one.volume.add("source:s1", 1_800_000_000.0)
        await two.volume.add("source:s1", 1_800_000_000.0)
        assert (await one.volume.counts("source:s1", 1_800_000_000.0))["day"] == 2
    finally:
        await one.close()
        await two.close()


async def test_answers_are_kept_as_long_as_the_operator_sets(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "ROUTELEAD_DEDUPE_KEY": SECRET.decode(), "ROUTELEAD_ANSWER_TTL_HOURS": "2"}
    state = hot_state(load_settings(env))

    async def work() -> RoutingResult:
        return RoutingResult("ttl-1", "solar", "src", False, Outcome.UNSOLD, Decimal("0.00"))

    try:
        await state.idempotency.once("ttl-1", work)
    finally:
        await state.close()
    with redis.Redis.from_url(redis_url) as r:
        ttl = r.ttl("rl:idem:ttl-1")

    assert 7000 < ttl <= 7200
    for bad in ("0", "forever", "9999"):
        with pytest.raises(SettingsError, match=f"ROUTELEAD_ANSWER_TTL_HOURS: .*got '{bad}'"):
            load_settings({**env, "ROUTELEAD_ANSWER_TTL_HOURS": bad})
