"""A server's lease in the run store: renewed by a heartbeat; runs of servers whose lease lapsed are interrupted."""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cracktrader.periodic import Periodic
from cracktrader.settings import Settings

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore

log = logging.getLogger(__name__)
HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with that id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServerLease:
    """Registers the server, renews its lease every `server_heartbeat_s`, and applies run retention."""

    def __init__(self, store: RunStore | None, settings: Settings, server_id: str) -> None:
        self.store = store
        self.settings = settings
        self.server_id = server_id
        self._heartbeat: Periodic | None = None

    async def start(self) -> int:
        """Take the lease; fail the runs whose server is gone; returns how many were."""
        if self.store is None:
            return 0
        await self.store.register_server(self.server_id, host=HOST, pid=os.getpid(), now=datetime.now(UTC))
        interrupted = await self._sweep()
        await self.prune()
        self._heartbeat = Periodic(self._beat, self.settings.server_heartbeat_s, name="cracktrader-lease")
        self._heartbeat.start()
        return interrupted

    async def stop(self) -> None:
        """Stop renewing and release the lease."""
        if self._heartbeat is None:
            return
        await self._heartbeat.stop()  # a beat in progress finishes: cancelling it could strand its connection
        if self.store is not None:
            try:
                await self.store.release_server(self.server_id)
            except Exception:
                log.warning("Could not release the server lease", exc_info=True)

    async def _sweep(self) -> int:
        assert self.store is not None
        return await self.store.mark_interrupted(
            now=datetime.now(UTC),
            server_id=self.server_id,
            lease_ttl=timedelta(seconds=self.settings.server_lease_ttl_s),
            host=HOST,
            is_alive=pid_alive,
        )

    async def _beat(self) -> None:
        """Renew the lease, and fail runs of servers whose lease lapsed."""
        try:
            assert self.store is not None
            await self.store.heartbeat(self.server_id, now=datetime.now(UTC))
            await self._sweep()
        except Exception:  # the database may be briefly away; the next beat tries again
            log.warning("Could not renew the server lease", exc_info=True)

    async def prune(self) -> None:
        """Apply the retention settings (never to live-trading records)."""
        days, count = self.settings.run_retention_days, self.settings.run_retention_count
        if self.store is None or not (days or count):
            return
        try:
            removed = await self.store.prune(
                now=datetime.now(UTC), max_age=timedelta(days=days) if days else None, max_count=count or None
            )
        except Exception:
            log.warning("Could not apply run retention", exc_info=True)
            return
        if removed:
            log.info("Retention removed %d old runs", removed)
