"""The per-key token bucket behind the API's rate limits."""

from __future__ import annotations

from cracktrader.auth.rate_limit import RateLimiter


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_the_limit_passes_then_waits_for_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)
    assert [limiter.hit("a") for _ in range(60)] == [0] * 60
    assert limiter.hit("a") == 1  # one token a second
    clock.now = 0.5
    assert limiter.hit("a") == 1
    clock.now = 1.0
    assert limiter.hit("a") == 0 and limiter.hit("a") == 1


def test_keys_are_independent_and_retry_after_rounds_up() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock=clock)
    assert limiter.hit("a") == 0 and limiter.hit("a") == 0
    assert limiter.hit("a") == 30  # 2 a minute: one every 30 s
    assert limiter.hit("b") == 0
    clock.now = 29.0
    assert limiter.hit("a") == 1
    clock.now = 3600.0  # a long pause refills only up to the burst size
    assert [limiter.hit("a") for _ in range(3)] == [0, 0, 30]


def test_zero_disables_and_memory_stays_bounded() -> None:
    assert RateLimiter(0).hit("x") == 0 and not RateLimiter(0).enabled
    clock = Clock()
    limiter = RateLimiter(10, clock=clock, max_keys=100)
    for k in range(1000):
        limiter.hit(f"k{k}")
    assert len(limiter._buckets) <= 100
