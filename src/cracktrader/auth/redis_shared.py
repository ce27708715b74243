"""Rate limits and revocation notices shared by every server process through Redis."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from cracktrader.auth.login_limiter import LoginEntry, LoginPolicy
from cracktrader.notify import RedisNotices

__all__ = ["RedisLoginLimiter", "RedisRateLimiter", "RedisRevocationNotices"]

log = logging.getLogger(__name__)

# GCRA (a token bucket kept as one "theoretical arrival time" per key), in one atomic round trip. Redis's own
# clock is the time, so processes on machines with skewed clocks still share one allowance.
# ARGV: seconds per request, the burst window in seconds. Returns 0 when allowed, else milliseconds to wait.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + interval
local wait = new - now - period
if wait > 0 then return math.ceil(wait * 1000) end
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil((new - now) * 1000) + 1)
return 0
"""

# One failure against each key, atomically, on Redis's clock. A key expires once it is forgotten (no failure for
# the forget window and no lockout running), so a missing key is LoginPolicy.live's "forgotten" and memory stays
# bounded. ARGV: forget_after_s, the length L of the lockout table, each key's threshold, then the table:
# LoginPolicy.lockout_s for threshold + 0 .. threshold + L - 1 failures (the last repeats), so the rule stays there.
_FAIL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local forget = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local threshold = tonumber(ARGV[2 + i])
  local v = redis.call('HMGET', key, 'f', 'u')
  local failures = tonumber(v[1] or '0') + 1
  local locked = tonumber(v[2] or '0')
  local j = failures - threshold
  if j >= 0 then
    local lockout = tonumber(ARGV[2 + #KEYS + math.min(j, n - 1) + 1])
    if now + lockout > locked then locked = now + lockout end
  end
  redis.call('HSET', key, 'f', failures, 'l', string.format('%.6f', now), 'u', string.format('%.6f', locked))
  redis.call('PEXPIREAT', key, math.ceil(math.max(now + forget, locked) * 1000))
end
return 1
"""

# Pause before re-subscribing after the connection dropped (a notice may have been missed: caches are dropped).
_RECONNECT_S = 0.5


class RedisRateLimiter:
    """`per_minute` requests a minute per key across all processes, in bursts of up to `per_minute`."""

    def __init__(self, client: Any, per_minute: int, *, prefix: str) -> None:
        self.per_minute = per_minute
        self._client = client
        self._prefix = f"{prefix}rate:"
        self._script = client.register_script(_GCRA)
        self._args = (60.0 / per_minute if per_minute else 0.0, 60.0)

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.per_minute > 0

    async def take(self, key: str) -> int:
        """Spend one request of `key`'s allowance: 0 when allowed, else whole seconds until one is."""
        if not self.enabled:
            return 0
        wait_ms = int(await self._script(keys=[self._prefix + key], args=self._args))
        return max(1, math.ceil(wait_ms / 1000)) if wait_ms > 0 else 0


class RedisRevocationNotices:
    """Tells every process of a revocation over one pub/sub channel; each process keeps one subscription."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._notices = RedisNotices(client, f"{prefix}auth:revoked")

    @property
    def channel(self) -> str:
        return self._notices.channel

    @property
    def connections(self) -> int:
        """Subscriptions made so far (tests wait for a resubscription after killing the listener's connection)."""
        return self._notices.connections

    async def publish(self) -> None:
        """Announce that this process revoked something (after the database change committed)."""
        await self._notices.publish()

    async def start(self, on_notice: Callable[[], None]) -> None:
        """Subscribe and call `on_notice` per notice, and after a resubscription (notices sent meanwhile are lost)."""
        await self._notices.start(lambda _payload: on_notice())

    async def close(self) -> None:
        """Unsubscribe."""
        await self._notices.close()


class RedisLoginLimiter:
    """LoginPolicy with its counters in Redis: a lockout earned on one process holds on all of them."""

    def __init__(self, client: Any, policy: LoginPolicy, *, prefix: str) -> None:
        self.policy = policy
        self._client = client
        self._prefix = f"{prefix}login:"
        self._fail = client.register_script(_FAIL)
        # lockout_s depends only on failures - threshold; it stops growing once it reaches the cap.
        table = [policy.lockout_s(j, 0) for j in range(65)]
        self._table = table[: table.index(policy.max_lockout_s) + 1] if policy.max_lockout_s in table else table

    async def wait(self, *, username: str, ip: str | None) -> int:
        """Seconds until this address may try this user name; 0 when allowed now (one round trip)."""
        keys = self.policy.keys(username, ip)
        names = (keys.ip, keys.user, keys.pair)
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self._prefix + name, "f", "l", "u")
            pipe.time()
            *rows, (seconds, micros) = await pipe.execute()
        entries: dict[str, LoginEntry | None] = {
            name: LoginEntry(int(row[0]), float(row[1]), float(row[2])) if row[0] is not None else None
            for name, row in zip(names, rows, strict=True)
        }
        return self.policy.wait(keys, entries, seconds + micros / 1_000_000)

    async def failed(self, *, username: str, ip: str | None) -> None:
        """Count a failure against the address, the user name, and the pair."""
        pairs = self.policy.thresholds(self.policy.keys(username, ip))
        args = [self.policy.forget_after_s, len(self._table), *(t for _, t in pairs), *self._table]
        await self._fail(keys=[self._prefix + k for k, _ in pairs], args=args)

    async def succeeded(self, *, username: str, ip: str | None) -> None:
        """The address knew the password: the name's slowdown stops applying to it."""
        await self._client.delete(self._prefix + self.policy.keys(username, ip).pair)
