"""Small notices from one server process to all the others: Redis pub/sub, PostgreSQL NOTIFY, or this process alone.

A notice is a short text (at most NOTICE_MAX_BYTES). Both channels drop what is published while a listener is
disconnected, so a listener is told `None` after each reconnect ("notices may have been lost"): a notice only says
where to look, and the data it points at (the database, the event log) is what makes delivery complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "NOTICE_MAX_BYTES",
    "LocalNotices",
    "Notices",
    "OnNotice",
    "PostgresNotices",
    "RedisNotices",
    "open_notices",
    "redis_client_name",
]

log = logging.getLogger(__name__)

# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; Redis has no such limit, but one rule for both.
NOTICE_MAX_BYTES = 7_999
# How long a listener waits before connecting again after its connection dropped.
RECONNECT_S = 0.5

# Called with each notice's text, or None after a reconnect (what was published meanwhile is unknown).
OnNotice = Callable[[str | None], None]


class Notices(Protocol):
    """One channel of notices between the processes of a deployment."""

    async def publish(self, payload: str = "") -> None:
        """Send a notice to every listening process (this one included)."""
        ...

    async def start(self, on_notice: OnNotice) -> None:
        """Listen (before returning, so no later notice is missed); `on_notice` runs on the loop for each."""
        ...

    async def close(self) -> None:
        """Stop listening."""
        ...


def _check(payload: str) -> str:
    if len(payload.encode()) > NOTICE_MAX_BYTES:
        raise ValueError(f"a notice carries at most {NOTICE_MAX_BYTES} bytes, got {len(payload.encode())}")
    return payload


class LocalNotices:
    """One process: a notice goes straight to this channel's listeners (laptop mode, SQLite)."""

    def __init__(self) -> None:
        self._listeners: list[OnNotice] = []

    async def publish(self, payload: str = "") -> None:
        """Call every listener now."""
        _check(payload)
        for listener in list(self._listeners):
            listener(payload)

    async def start(self, on_notice: OnNotice) -> None:
        """Add a listener."""
        self._listeners.append(on_notice)

    async def close(self) -> None:
        """Drop the listeners."""
        self._listeners.clear()


class PostgresNotices:
    """NOTIFY on a channel; each process LISTENs on one held connection and listens again when it is killed."""

    def __init__(self, engine: AsyncEngine, channel: str) -> None:
        self._engine = engine
        self.channel = channel
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._on_notice: OnNotice | None = None
        self._reconnect: asyncio.Task[None] | None = None
        # Connections made so far (tests wait for a reconnect after killing the listener's).
        self.connections = 0

    @property
    def backend_pid(self) -> int | None:
        """The listening connection's server process id (None while disconnected)."""
        return int(self._driver.get_server_pid()) if self._driver is not None else None

    async def publish(self, payload: str = "") -> None:
        """NOTIFY (in its own transaction, so after the change it announces has committed)."""
        async with self._engine.begin() as conn:
            await self.publish_in(conn, payload)

    async def publish_in(self, conn: AsyncConnection, payload: str = "") -> None:
        """NOTIFY within the caller's transaction: PostgreSQL sends it at the commit, and never if it rolls back."""
        params = {"channel": self.channel, "payload": _check(payload)}
        await conn.execute(text("SELECT pg_notify(:channel, :payload)"), params)

    async def start(self, on_notice: OnNotice) -> None:
        """LISTEN (before returning, so no later notice is missed) and call `on_notice` per notice."""
        self._on_notice = on_notice
        await self._listen()

    async def _listen(self) -> None:
        on_notice = self._on_notice
        assert on_notice is not None
        conn = await self._engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(self.channel, lambda _c, _pid, _channel, payload: on_notice(payload))
            driver.add_termination_listener(self._terminated)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._driver = conn, driver
        self.connections += 1

    def _terminated(self, *_: object) -> None:
        # The listening connection is gone: notices sent meanwhile are lost, so say so and listen again.
        if self._on_notice is None:  # closing
            return
        log.warning("Notices on %s from PostgreSQL interrupted; listening again", self.channel)
        self._on_notice(None)
        self._driver = None
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.get_running_loop().create_task(self._relisten(), name=f"{self.channel}-relisten")

    async def _relisten(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.invalidate()
        while True:
            await asyncio.sleep(RECONNECT_S)
            try:
                await self._listen()
            except Exception:
                continue  # still down
            if self._on_notice is not None:
                self._on_notice(None)  # whatever happened while away is unknown
            return

    async def close(self) -> None:
        """Stop listening and drop the connection."""
        self._on_notice = None
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnect
            self._reconnect = None
        if self._conn is not None:
            # Closed, not pooled: a LISTEN must not follow the connection to its next user.
            with contextlib.suppress(Exception):
                await self._conn.invalidate()
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn, self._driver = None, None


class RedisNotices:
    """PUBLISH on a channel; each process keeps one subscription and subscribes again when it drops."""

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._task: asyncio.Task[None] | None = None
        # Subscriptions made so far (tests wait for a resubscription after killing the listener's connection).
        self.connections = 0

    async def publish(self, payload: str = "") -> None:
        """PUBLISH the notice."""
        await self._client.publish(self.channel, _check(payload).encode())

    async def start(self, on_notice: OnNotice) -> None:
        """Subscribe (before returning, so no notice published afterwards is missed) and call `on_notice` per notice."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)
        self.connections += 1
        self._task = asyncio.create_task(self._listen(pubsub, on_notice), name=f"{self.channel}-notices")

    async def _listen(self, pubsub: Any, on_notice: OnNotice) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    data = message["data"]
                    on_notice(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception:
                log.warning("Notices on %s from Redis interrupted; resubscribing", self.channel, exc_info=True)
                on_notice(None)
                await asyncio.sleep(RECONNECT_S)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self.channel)
                except Exception:
                    continue  # still down: the next read fails and this runs again
                self.connections += 1
                on_notice(None)  # whatever was published while away is unknown

    async def close(self) -> None:
        """Unsubscribe."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def redis_client_name(text: str) -> str:
    """A Redis client name made of `text` (names take no spaces), so CLIENT LIST tells a deployment's apart."""
    return "".join(c if c.isalnum() or c in ":-_." else "_" for c in text)[:200]


async def open_notices(
    *, redis_url: str | None, redis_prefix: str, engine: AsyncEngine, name: str
) -> tuple[Notices, Callable[[], Any] | None]:
    """Notices on channel `name`: Redis when configured, else PostgreSQL when the database is, else this process.

    Returns the channel and, for Redis, the client's closer (await it after closing the channel).
    """
    if redis_url:
        from redis.asyncio import Redis

        channel = f"{redis_prefix}{name}"
        client = Redis.from_url(
            redis_url, client_name="".join(c if c.isalnum() or c in ":-_." else "_" for c in channel)
        )
        await client.ping()  # a wrong URL stops the server at start, not at the first event
        return RedisNotices(client, channel), client.aclose
    if engine.dialect.name == "postgresql":
        return PostgresNotices(engine, name.replace(":", "_").replace("-", "_")), None
    return LocalNotices(), None
