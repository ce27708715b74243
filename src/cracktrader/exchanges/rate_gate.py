"""Honour an exchange's 429 (slow down) and 418 (binance's IP ban) answers: wait `Retry-After`, through the clock."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import ccxt

from cracktrader.clock import Clock

DEFAULT_RETRY_S = 1.0  # a 429 without Retry-After
DEFAULT_BAN_S = 120.0  # a 418 without Retry-After: binance bans for 2 minutes to 3 days
# ccxt puts the status in the message: binance "binance 418 I'm a Teapot {...}", the generic handler
# "<id> <METHOD> <url> 429 <reason> <body>". Word boundaries keep a timestamp's digits from matching.
_STATUS = re.compile(r"(?<![\w.])(418|429)(?![\w.])")


def http_status(exc: BaseException) -> int | None:
    """418 or 429 when a rate-limit error's message names one, else None."""
    match = _STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def is_ban(exc: BaseException) -> bool:
    """Whether `exc` is binance's 418: the IP is banned, not merely throttled."""
    return isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection) and http_status(exc) == 418


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The `Retry-After` header in seconds (any case of the name), or None when absent or not a number."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None  # an HTTP-date: no exchange we support sends one; the default applies
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


class RateGate:
    """When the next request to one exchange may go out, after its 429 and 418 answers."""

    def __init__(
        self,
        clock: Clock,
        *,
        default_retry_s: float = DEFAULT_RETRY_S,
        ban_s: float = DEFAULT_BAN_S,
        on_ban: Callable[[int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_ban = on_ban  # told when a ban starts (not when a running one is extended), with its end (ms)
        self._default_retry_s = default_retry_s
        self._ban_s = ban_s
        self._until_ms = 0
        self._banned_until_ms = 0

    def note(self, exc: BaseException, headers: Mapping[str, str] | None = None) -> None:
        """Record a RateLimitExceeded/DDoSProtection answer; any other exception is ignored."""
        if not isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
            return
        ban = http_status(exc) == 418
        seconds = retry_after_s(headers)
        if seconds is None:
            seconds = self._ban_s if ban else self._default_retry_s
        until = self._clock.now_ms() + math.ceil(seconds * 1000)
        # A later, shorter answer never shortens a wait already promised.
        self._until_ms = max(self._until_ms, until)
        if ban:
            started = not self.banned
            self._banned_until_ms = max(self._banned_until_ms, until)
            if started and self._on_ban is not None:
                self._on_ban(self._banned_until_ms)

    def blocked_ms(self) -> int:
        """Milliseconds until a request may go out (0: now)."""
        return max(0, self._until_ms - self._clock.now_ms())

    @property
    def banned(self) -> bool:
        """Whether a 418 ban is still running."""
        return self._clock.now_ms() < self._banned_until_ms

    async def wait(self) -> None:
        """Sleep through the clock until requests are allowed (a note made meanwhile extends it)."""
        while self.blocked_ms() > 0:
            await self._clock.sleep_until(self._until_ms)
