"""Revocations made by other processes (the CLI writes the database directly) reach a server by polling."""

from __future__ import annotations

import logging
from typing import Any

from cracktrader.auth.principal import Authenticator
from cracktrader.periodic import Periodic

__all__ = ["DEFAULT_POLL_S", "RevocationPoller"]

log = logging.getLogger(__name__)

# Half a second between polls keeps every revocation inside the 1 s target even with a slow query.
DEFAULT_POLL_S = 0.5
_UNSET: Any = object()


class RevocationPoller:
    """Reads the store's revocation marker every `interval_s` and invalidates the authenticator when it moves.

    One small query per interval, whatever the request rate; requests themselves never query for revocations.
    """

    def __init__(self, authenticator: Authenticator, *, interval_s: float = DEFAULT_POLL_S) -> None:
        self.authenticator = authenticator
        self.interval_s = interval_s
        # Completed polls: tests wait for "two polls after my change" instead of sleeping.
        self.polls = 0
        self._marker: Any = _UNSET
        self._periodic: Periodic | None = None
        self._failing = False

    async def poll_once(self) -> bool:
        """Read the marker; invalidate the caches when it changed since the last poll. Whether it changed."""
        marker = await self.authenticator.store.revocation_marker()
        changed = marker != self._marker
        if changed:
            if self._marker is not _UNSET:
                self.authenticator.invalidate()
            self._marker = marker
        self.polls += 1
        return changed

    async def start(self) -> None:
        """Take the first reading (so nothing cached before it can be stale), then poll in the background."""
        await self._poll_logged()
        self._periodic = Periodic(self._poll_logged, self.interval_s, name="auth-revocation-poller")
        self._periodic.start()

    async def close(self) -> None:
        """Stop polling (a poll in progress finishes first)."""
        if self._periodic is not None:
            await self._periodic.stop()
            self._periodic = None

    async def _poll_logged(self) -> None:
        try:
            await self.poll_once()
        except Exception:
            # The database is down or busy: requests fail on their own; log once per outage, not twice a second.
            if not self._failing:
                log.warning("Polling for revoked credentials failed; retrying", exc_info=True)
            self._failing = True
            return
        if self._failing:
            log.info("Polling for revoked credentials recovered")
            # Whatever happened during the outage is unknown: drop the caches.
            self.authenticator.invalidate()
        self._failing = False
