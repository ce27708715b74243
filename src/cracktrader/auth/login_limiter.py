"""Failed-login limits per username and per client IP, with a lockout that doubles on every further failure."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginLimiter"]


@dataclass(slots=True)
class _Entry:
    failures: int
    last_failure: float
    locked_until: float


class LoginLimiter:
    """In-process counters (the server runs one process); bounded so spraying names cannot exhaust memory."""

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

    def _now(self) -> float:
        return self._clock()

    def retry_after(self, *, username: str, ip: str | None) -> int:
        """Seconds until a login for this username from this IP may be tried; 0 when allowed now."""
        now = self._now()
        wait = 0.0
        for key in self._keys(username, ip):
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now:
                wait = max(wait, entry.locked_until - now)
        return math.ceil(wait)

    def record_failure(self, *, username: str, ip: str | None) -> None:
        """Count a failure; past the threshold, lock for base * 2^(failures past it), capped."""
        now = self._now()
        if len(self._entries) >= self.max_entries:
            self._prune(now)
        for key in self._keys(username, ip):
            threshold = self.user_threshold if key.startswith("u:") else self.ip_threshold
            entry = self._entries.get(key)
            if entry is None or now - entry.last_failure > self.forget_after_s:
                entry = _Entry(0, now, 0.0)
                self._entries[key] = entry
            entry.failures += 1
            entry.last_failure = now
            if entry.failures >= threshold:
                lockout = min(self.max_lockout_s, self.base_lockout_s * 2 ** (entry.failures - threshold))
                entry.locked_until = now + lockout

    def record_success(self, *, username: str) -> None:
        """A correct password clears the username's counter (the IP's decays on its own)."""
        self._entries.pop(f"u:{username}", None)

    def _keys(self, username: str, ip: str | None) -> list[str]:
        return [f"u:{username}", f"ip:{ip}"] if ip else [f"u:{username}"]

    def _prune(self, now: float) -> None:
        stale = [k for k, e in self._entries.items() if e.locked_until <= now]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
