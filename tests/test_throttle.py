"""ccxt's throttle with idle time credited: a lone request goes at once, a burst still waits its turns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from ccxt.async_support.base import throttler as ccxt_throttler

from cracktrader.data.sources.ccxt_source import make_async_exchange
from cracktrader.exchanges import throttle
from cracktrader.exchanges.throttle import IdleCreditThrottler
from cracktrader.settings import Settings

pytestmark = pytest.mark.anyio

# binance: rateLimit 50 ms, an order costs 0.2 (10 ms), an order lookup 0.8.
BUCKET = {"refillRate": 1 / 50, "capacity": 1.0, "delay": 0.001, "cost": 1.0, "tokens": 0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FrozenTime:
    """The clock both throttles refill by, moved only by the test (seconds, as `time.time`)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[FrozenTime]:
    clock = FrozenTime()
    monkeypatch.setattr(ccxt_throttler, "time", clock)  # ccxt's loop: `from time import time`
    monkeypatch.setattr(throttle.time, "time", clock)
    yield clock


async def _passes(future: asyncio.Future[None], within_s: float = 0.02) -> bool:
    """Whether the throttle lets the request go while its loop runs a while (the frozen clock does not move)."""
    try:
        await asyncio.wait_for(asyncio.shield(future), within_s)
    except TimeoutError:
        return False
    return True


async def test_a_request_after_an_idle_spell_goes_at_once(frozen: FrozenTime) -> None:
    gate = IdleCreditThrottler(dict(BUCKET))
    assert await _passes(gate(0.2))
    frozen.now += 0.1  # 100 ms idle: far more than the 10 ms the order cost

    assert await _passes(gate(0.2))
    assert gate.config["tokens"] == pytest.approx(1.0 - 0.2)  # refilled to capacity, then charged


async def test_ccxts_own_throttle_holds_that_request_back_for_its_cost(frozen: FrozenTime) -> None:
    # What the credit fixes (ccxt issue #25556): the idle spell is forgotten, the tokens stay at -0.2.
    gate = ccxt_throttler.Throttler(dict(BUCKET))
    assert await _passes(gate(0.2))
    frozen.now += 0.1
    waiting = gate(0.2)

    assert not await _passes(waiting)
    gate.running = False  # stop its loop: frozen time would keep it waiting
    await asyncio.sleep(0.002)


async def test_a_burst_after_idling_gets_the_buckets_capacity_and_then_waits(frozen: FrozenTime) -> None:
    gate = IdleCreditThrottler(dict(BUCKET))
    assert await _passes(gate(0.25))
    frozen.now += 10.0  # however long it idled, the credit stops at the capacity: 1.0, four requests and a fifth
    burst = [gate(0.25) for _ in range(6)]

    assert [await _passes(f) for f in burst] == [True] * 5 + [False]
    frozen.now += 0.020  # more than its cost (12.5 ms) later the sixth goes
    assert await _passes(burst[5], 1.0)


async def test_clients_made_for_the_runtime_use_the_crediting_throttle() -> None:
    client = make_async_exchange("binance", Settings(exchange_options={}))
    try:
        assert isinstance(client.throttler, IdleCreditThrottler)
        assert client.throttler.config["refillRate"] == pytest.approx(1 / client.rateLimit)
    finally:
        await client.close()
