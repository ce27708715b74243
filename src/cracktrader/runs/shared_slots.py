"""Runner slots shared by every server process: pointers in the database, changes announced, remote runs mirrored.

A slot's pointer changes only by compare-and-set in the database (`SlotStore`), so two processes never fill one
slot; each change is announced on the deployment's notices, and every process reloads that slot. A slot whose
run another process holds shows that run's events: this process follows the run in the event log and hands its
events to its own subscribers (its slot streams), keeping the latest status for `/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cracktrader.db.slot_store import SlotPointer, SlotStore, owner_key
from cracktrader.notify import Notices
from cracktrader.runs.event_relay import EventRelay, RelaySubscription
from cracktrader.runs.events import STATUS_UPDATE, EventBus

if TYPE_CHECKING:
    from cracktrader.runs.registry import RunRegistry
    from cracktrader.runs.slots import Slot

log = logging.getLogger(__name__)

# A run's status from its stored row, when the event log has none (it has not started, or its events were pruned).
StoredStatus = Callable[[str], Awaitable[dict[str, Any] | None]]
# Stop a run another process holds: (run_id, flatten) -> the answer of POST /run/stop.
StopElsewhere = Callable[[str, bool], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class _Mirror:
    """A run another process holds, followed in the event log."""

    sub: RelaySubscription
    status: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None
    slots: set[str] = field(default_factory=set)  # owners whose slot shows it


class SharedSlots:
    """This process's end of the shared slots."""

    def __init__(
        self,
        *,
        store: SlotStore,
        notices: Notices,
        relay: EventRelay,
        bus: EventBus,
        registry: RunRegistry,
        stored_status: StoredStatus,
        stop_elsewhere: StopElsewhere,
    ) -> None:
        self.store = store
        self.notices = notices
        self.relay = relay
        self.bus = bus
        self.registry = registry
        self.stored_status = stored_status
        self.stop_elsewhere = stop_elsewhere
        self._mirrors: dict[str, _Mirror] = {}
        self._loaded: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen for slot changes made by other processes."""
        await self.notices.start(self._on_notice)

    async def close(self) -> None:
        """Stop listening and mirroring."""
        await self.notices.close()
        for task in list(self._tasks):
            task.cancel()
        for mirror in self._mirrors.values():
            mirror.sub.close()
            if mirror.task is not None:
                mirror.task.cancel()
        self._mirrors.clear()

    # Pointers ------------------------------------------------------------------------------------------
    async def ensure(self, slot: Slot) -> None:
        """Load a slot's pointer the first time this process uses it."""
        if owner_key(slot.user_id) not in self._loaded:
            await self.refresh(slot)

    async def refresh(self, slot: Slot) -> None:
        """Reload a slot's pointer from the database (before a command, and on another process's notice)."""
        key = owner_key(slot.user_id)
        pointer = await self.store.get(key)
        self._loaded.add(key)
        await self._apply(slot, pointer, announced=False)

    async def fill(self, slot: Slot, run_id: str) -> bool:
        """Point the slot at a new run unless another process filled it first."""
        key = owner_key(slot.user_id)
        pointer = await self.store.fill(key, run_id)
        if pointer is None:
            await self.refresh(slot)
            return False
        await self.notices.publish(key)
        return True

    async def empty(self, slot: Slot, run_id: str) -> bool:
        """Reset the slot that shows `run_id`; False when it shows another run by now."""
        key = owner_key(slot.user_id)
        done = await self.store.empty(key, run_id)
        if done:
            await self.notices.publish(key)
        return done

    async def forget(self, run_id: str) -> None:
        """A deleted run: no slot of any process shows it any more."""
        for key in await self.store.forget(run_id):
            await self.notices.publish(key)

    async def _apply(self, slot: Slot, pointer: SlotPointer, *, announced: bool) -> None:
        previous = slot.run_id
        if pointer.run_id is not None and not self._held_here(pointer.run_id):
            await self._follow(pointer.run_id, owner_key(slot.user_id))
        slot.show(pointer.run_id, pointer.last_run_id)
        if previous is not None and previous != pointer.run_id:
            self._unfollow(previous, owner_key(slot.user_id))
            if pointer.run_id is None and announced:  # reset by another process: its streams show idle here too
                self.registry.publish_idle(slot.user_id)

    def _on_notice(self, payload: str | None) -> None:
        keys = None if payload is None else {payload}  # None: notices may have been lost, reload every slot
        for slot in list(self.registry.slots.values()):
            key = owner_key(slot.user_id)
            if key in self._loaded and (keys is None or key in keys):
                task = asyncio.get_running_loop().create_task(self._reload(slot))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _reload(self, slot: Slot) -> None:
        try:
            pointer = await self.store.get(owner_key(slot.user_id))
            await self._apply(slot, pointer, announced=True)
        except Exception:
            log.warning("Could not reload the runner slot of %s", owner_key(slot.user_id), exc_info=True)

    # Runs other processes hold -------------------------------------------------------------------------
    def _held_here(self, run_id: str) -> bool:
        return self.registry.owner_of(run_id)[0]

    def remote_status(self, run_id: str) -> dict[str, Any] | None:
        """The latest status of a run another process holds, as it published it."""
        mirror = self._mirrors.get(run_id)
        return None if mirror is None else mirror.status

    async def _follow(self, run_id: str, key: str) -> None:
        mirror = self._mirrors.get(run_id)
        if mirror is None:
            # Subscribed first, then the latest status read: nothing published in between is missed.
            mirror = _Mirror(await self.relay.subscribe(run_id))
            self._mirrors[run_id] = mirror
            last = await self.relay.store.last_of_type(run_id, STATUS_UPDATE)
            if mirror.status is None:
                mirror.status = dict(last.event.payload) if last is not None else await self.stored_status(run_id)
            mirror.task = asyncio.get_running_loop().create_task(self._pump(run_id, mirror))
        mirror.slots.add(key)

    def _unfollow(self, run_id: str, key: str) -> None:
        mirror = self._mirrors.get(run_id)
        if mirror is None:
            return
        mirror.slots.discard(key)
        if not mirror.slots:
            del self._mirrors[run_id]
            mirror.sub.close()
            if mirror.task is not None:
                mirror.task.cancel()

    async def _pump(self, run_id: str, mirror: _Mirror) -> None:
        """The run's events to this process's subscribers, its status kept for `/status`."""
        with contextlib.suppress(asyncio.CancelledError):
            while (item := await mirror.sub.get()) is not None:
                if item.event.type == STATUS_UPDATE:
                    mirror.status = dict(item.event.payload)
                self.bus.publish(item.event, to_sinks=False)
            if mirror.sub.resync and self._mirrors.get(run_id) is mirror:
                # It fell behind (this loop was starved): follow it again from the latest status.
                keys = set(mirror.slots)
                del self._mirrors[run_id]
                for key in keys:
                    await self._follow(run_id, key)
