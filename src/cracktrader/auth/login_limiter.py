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

__all__ = ["LoginLimiter"]

# Stands in for a missing client address (they then share one allowance).
_UNKNOWN_IP = "-"


@dataclass(slots=True)
class _Entry:
    failures: int
    last_failure: float
    locked_until: float


class LoginLimiter:
    """In-process counters (the server runs one process); bounded so spraying names cannot exhaust memory.

    - Per address: after `ip_threshold` failures (any user names) the address is locked out.
    - Per user name: after `user_threshold` failures (from anywhere) the name is slowed down: addresses that have
      failed on it recently may try it again only once the slowdown has passed. Addresses that have not failed
      on it are not held back, so the real user still logs in while an attacker hammers the name.
    Both waits start at `base_lockout_s` and double with every further failure, up to `max_lockout_s`.
    """

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
        self.user_threshold = user_threshold
        self.ip_threshold = ip_threshold
        self.base_lockout_s = base_lockout_s
        self.max_lockout_s = max_lockout_s
        self.forget_after_s = forget_after_s
        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or (now - entry.last_failure > self.forget_after_s and entry.locked_until <= now):
            return None
        return entry

    def retry_after(self, *, username: str, ip: str | None) -> int:
        """Seconds until this address may try this user name; 0 when allowed now."""
        now = self._clock()
        address = ip or _UNKNOWN_IP
        wait = 0.0
        locked = self._live(f"ip:{address}", now)
        if locked is not None:
            wait = locked.locked_until - now
        # A slowed-down name holds back only the addresses that have failed on it.
        if self._live(f"p:{username}|{address}", now) is not None:
            name = self._live(f"u:{username}", now)
            if name is not None:
                wait = max(wait, name.locked_until - now)
        return math.ceil(wait) if wait > 0 else 0

    def record_failure(self, *, username: str, ip: str | None) -> None:
        """Count a failure against the address, the user name, and the pair."""
        now = self._clock()
        if len(self._entries) >= self.max_entries:
            self._prune(now)
        address = ip or _UNKNOWN_IP
        self._bump(f"u:{username}", self.user_threshold, now)
        self._bump(f"ip:{address}", self.ip_threshold, now)
        self._bump(f"p:{username}|{address}", self.user_threshold, now)

    def record_success(self, *, username: str, ip: str | None = None) -> None:
        """The address knew this user's password: it is the user's, so the name's slowdown stops applying to it.

        The name's count stays (it decays on its own), or a login by the real user would reset an attacker's
        slowdown; so does the address's, or logging in to one's own account would wipe failures on others.
        """
        self._entries.pop(f"p:{username}|{ip or _UNKNOWN_IP}", None)

    def _bump(self, key: str, threshold: int, now: float) -> None:
        entry = self._live(key, now)
        if entry is None:
            entry = _Entry(0, now, 0.0)
            self._entries[key] = entry
        entry.failures += 1
        entry.last_failure = now
        if entry.failures >= threshold:
            lockout = min(self.max_lockout_s, self.base_lockout_s * 2 ** (entry.failures - threshold))
            entry.locked_until = now + lockout

    def _prune(self, now: float) -> None:
        stale = [k for k in self._entries if self._live(k, now) is None or self._entries[k].locked_until <= now]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
