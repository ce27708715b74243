"""Failed-login limits: a lockout per client address, and a slowdown per user name that spares clean addresses.

An attacker must not be able to lock a user out by failing on purpose, so a user name's failures only hold back
addresses that have failed themselves (the attacker's); the right password from an address with no failures on
record always gets through. Each address is limited on its own, whatever names it tries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["LoginEntry", "LoginKeys", "LoginLimiter", "LoginLimits", "LoginPolicy"]

# Stands in for a missing client address (they then share one allowance).
_UNKNOWN_IP = "-"


@dataclass(slots=True)
class LoginEntry:
    """Failures counted against one key (an address, a user name, or the pair), in seconds on one clock."""

    failures: int
    last_failure: float
    locked_until: float


@dataclass(frozen=True, slots=True)
class LoginKeys:
    """The three keys one login attempt is counted under."""

    ip: str
    user: str
    pair: str


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """The thresholds and waits, and the rules that read them, whatever holds the counters.

    - Per address: after `ip_threshold` failures (any user names) the address is locked out.
    - Per user name: after `user_threshold` failures (from anywhere) the name is slowed down: addresses that have
      failed on it recently may try it again only once the slowdown has passed. Addresses that have not failed
      on it are not held back, so the real user still logs in while an attacker hammers the name.
    Both waits start at `base_lockout_s` and double with every further failure, up to `max_lockout_s`.
    """

    user_threshold: int = 5
    ip_threshold: int = 20
    base_lockout_s: float = 30.0
    max_lockout_s: float = 900.0
    forget_after_s: float = 900.0

    @staticmethod
    def keys(username: str, ip: str | None) -> LoginKeys:
        """The keys of an attempt on `username` from `ip`."""
        address = ip or _UNKNOWN_IP
        return LoginKeys(ip=f"ip:{address}", user=f"u:{username}", pair=f"p:{username}|{address}")

    def thresholds(self, keys: LoginKeys) -> list[tuple[str, int]]:
        """What a failure bumps: each key with the failure count at which it locks."""
        return [(keys.user, self.user_threshold), (keys.ip, self.ip_threshold), (keys.pair, self.user_threshold)]

    def lockout_s(self, failures: int, threshold: int) -> float:
        """The wait after the `failures`-th failure (0 below the threshold)."""
        if failures < threshold:
            return 0.0
        return float(min(self.max_lockout_s, self.base_lockout_s * 2 ** min(failures - threshold, 64)))

    def live(self, entry: LoginEntry | None, now: float) -> LoginEntry | None:
        """The entry, unless it is forgotten (no failure for `forget_after_s` and no lockout running)."""
        if entry is None or (now - entry.last_failure > self.forget_after_s and entry.locked_until <= now):
            return None
        return entry

    def wait(self, keys: LoginKeys, entries: dict[str, LoginEntry | None], now: float) -> int:
        """Whole seconds until this attempt is allowed (0 now), from the keys' entries."""
        wait = 0.0
        locked = self.live(entries.get(keys.ip), now)
        if locked is not None:
            wait = locked.locked_until - now
        # A slowed-down name holds back only the addresses that have failed on it.
        if self.live(entries.get(keys.pair), now) is not None:
            name = self.live(entries.get(keys.user), now)
            if name is not None:
                wait = max(wait, name.locked_until - now)
        return math.ceil(wait) if wait > 0 else 0

    def bump(self, entry: LoginEntry | None, threshold: int, now: float) -> LoginEntry:
        """The entry after one more failure."""
        entry = self.live(entry, now) or LoginEntry(0, now, 0.0)
        entry.failures += 1
        entry.last_failure = now
        lockout = self.lockout_s(entry.failures, threshold)
        if lockout:
            entry.locked_until = max(entry.locked_until, now + lockout)
        return entry


class LoginLimits(Protocol):
    """What login needs of a limiter, wherever its counters live (this process, Redis, PostgreSQL)."""

    async def wait(self, *, username: str, ip: str | None) -> int:
        """Seconds until this address may try this user name; 0 when allowed now."""
        ...

    async def failed(self, *, username: str, ip: str | None) -> None:
        """Count a failure against the address, the user name, and the pair."""
        ...

    async def succeeded(self, *, username: str, ip: str | None) -> None:
        """The address knew the password: the name's slowdown stops applying to it."""
        ...


class LoginLimiter:
    """In-process counters (one server process); bounded so spraying names cannot exhaust memory."""

    def __init__(
        self,
        *,
        user_threshold: int = 5,
        ip_threshold: int = 20,
        base_lockout_s: float = 30.0,
        max_lockout_s: float = 900.0,
        forget_after_s: float = 900.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.policy = LoginPolicy(user_threshold, ip_threshold, base_lockout_s, max_lockout_s, forget_after_s)
        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._entries: dict[str, LoginEntry] = {}

    def retry_after(self, *, username: str, ip: str | None) -> int:
        """Seconds until this address may try this user name; 0 when allowed now."""
        keys = self.policy.keys(username, ip)
        entries: dict[str, LoginEntry | None] = {k: self._entries.get(k) for k in (keys.ip, keys.user, keys.pair)}
        return self.policy.wait(keys, entries, self._clock())

    def record_failure(self, *, username: str, ip: str | None) -> None:
        """Count a failure against the address, the user name, and the pair."""
        now = self._clock()
        if len(self._entries) >= self.max_entries:
            self._prune(now)
        for key, threshold in self.policy.thresholds(self.policy.keys(username, ip)):
            self._entries[key] = self.policy.bump(self._entries.get(key), threshold, now)

    def record_success(self, *, username: str, ip: str | None = None) -> None:
        """The address knew this user's password: it is the user's, so the name's slowdown stops applying to it.

        The name's count stays (it decays on its own), or a login by the real user would reset an attacker's
        slowdown; so does the address's, or logging in to one's own account would wipe failures on others.
        """
        self._entries.pop(self.policy.keys(username, ip).pair, None)

    async def wait(self, *, username: str, ip: str | None) -> int:
        """`retry_after` for the shared interface."""
        return self.retry_after(username=username, ip=ip)

    async def failed(self, *, username: str, ip: str | None) -> None:
        """`record_failure` for the shared interface."""
        self.record_failure(username=username, ip=ip)

    async def succeeded(self, *, username: str, ip: str | None) -> None:
        """`record_success` for the shared interface."""
        self.record_success(username=username, ip=ip)

    def _prune(self, now: float) -> None:
        stale = [k for k, e in self._entries.items() if self.policy.live(e, now) is None or e.locked_until <= now]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
