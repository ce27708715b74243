"""The event log and relay: events published by one process reach another's subscribers in order, once, with no gap,
over the in-process channel, Redis and PostgreSQL NOTIFY (real ones), through killed listeners and slow clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis
from sqlalchemy import text

from cracktrader.db import migrate
from cracktrader.db.engine import make_engine
from cracktrader.db.event_store import EventStore
from cracktrader.notify import NOTICE_MAX_BYTES, LocalNotices, Notices, PostgresNotices, RedisNotices
from cracktrader.runs.event_relay import EventRelay, RelaySubscription
from cracktrader.runs.events import Event
from db_support import DatabaseTarget, database_target

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ("local", "redis", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(backend: str, tmp_path: Path) -> Iterator[DatabaseTarget]:
    # The local channel runs with SQLite (laptop mode); Redis and NOTIFY with PostgreSQL, as a deployment does.
    with database_target("sqlite" if backend == "local" else "postgresql", tmp_path) as t:
        migrate.upgrade(t.url, connect_args=t.connect_args)
        yield t


class Pair:
    """Two relays on their own connections, as two server processes have: `a` publishes, `b` delivers."""

    def __init__(self, a: EventRelay, b: EventRelay, redis_name: str | None) -> None:
        self.a, self.b, self.redis_name = a, b, redis_name


@asynccontextmanager
async def two_relays(
    backend: str, target: DatabaseTarget, *, queue_size: int = 256, max_lag: int = 10_000
) -> AsyncIterator[Pair]:
    engines = [make_engine(target.url, connect_args=target.connect_args) for _ in range(2)]
    channel = f"ct_test_{uuid.uuid4().hex[:12]}"
    clients: list[Any] = []
    notices: list[Notices]
    if backend == "local":
        shared = LocalNotices()  # one process: both relays share its channel
        notices = [shared, shared]
    elif backend == "redis":
        clients = [Redis.from_url(REDIS_URL, client_name=channel) for _ in range(2)]
        notices = [RedisNotices(c, channel) for c in clients]
    else:
        notices = [PostgresNotices(e, channel) for e in engines]
    relays = [
        EventRelay(EventStore(e), n, queue_size=queue_size, max_lag=max_lag)
        for e, n in zip(engines, notices, strict=True)
    ]
    for relay in relays:
        await relay.start()
    try:
        yield Pair(relays[0], relays[1], channel if backend == "redis" else None)
    finally:
        for relay in relays:
            await relay.close()
        for client in clients:
            await client.aclose()
        for engine in engines:
            await engine.dispose()


def ev(i: int, run_id: str = "r1") -> Event:
    return Event("equity_update", {"run_id": run_id, "bar": i, "value": 100.0 + i})


async def take(sub: RelaySubscription, n: int, timeout: float = 20.0) -> list[tuple[int, int]]:
    """(number, bar) of the next n events."""
    out = []
    async with asyncio.timeout(timeout):
        for _ in range(n):
            item = await sub.get()
            assert item is not None, "dropped"
            out.append((item.seq, item.event.payload["bar"]))
    return out


async def nothing_more(sub: RelaySubscription, wait: float = 0.3) -> bool:
    try:
        async with asyncio.timeout(wait):
            await sub.get()
    except TimeoutError:
        return True
    return False


async def test_events_published_on_one_process_reach_the_other_in_order_with_no_gap(
    backend: str, target: DatabaseTarget
) -> None:
    async with two_relays(backend, target) as p:
        sub = await p.b.subscribe("r1")
        other = await p.b.subscribe("r2")
        bar = 0
        for size in [1, 5, 2, 7, 1, 1, 3] * 6:
            await p.a.publish("r1", [ev(bar + i) for i in range(size)])
            bar += size
        await p.a.publish("r2", [ev(0, "r2")])
        got = await take(sub, bar)
        assert got == [(i + 1, i) for i in range(bar)]
        assert await take(other, 1) == [(1, 0)]
        assert await nothing_more(sub)


async def test_a_subscriber_resuming_from_its_last_number_gets_what_it_missed_once_then_live(
    backend: str, target: DatabaseTarget
) -> None:
    async with two_relays(backend, target) as p:
        await p.a.publish("r1", [ev(i) for i in range(50)])
        resumed = await p.b.subscribe("r1", since=20)
        live = await p.b.subscribe("r1")  # no number: from now on only
        assert await take(resumed, 30) == [(i + 1, i) for i in range(20, 50)]
        await p.a.publish("r1", [ev(i) for i in range(50, 60)])
        assert await take(resumed, 10) == [(i + 1, i) for i in range(50, 60)]
        assert await take(live, 10) == [(i + 1, i) for i in range(50, 60)]
        assert await nothing_more(resumed) and await nothing_more(live)


async def test_a_subscriber_to_every_run_gets_the_runs_noticed_after_it_subscribed(
    backend: str, target: DatabaseTarget
) -> None:
    async with two_relays(backend, target) as p:
        await p.a.publish("old", [ev(0, "old")])
        await asyncio.sleep(0.2)  # that notice has come and gone
        every = await p.b.subscribe()
        await p.a.publish("r1", [ev(0), ev(1)])
        await p.a.publish("r2", [ev(0, "r2")])
        async with asyncio.timeout(20):
            got = [await every.get() for _ in range(3)]
        assert sorted((g.run_id, g.seq) for g in got if g is not None) == [("r1", 1), ("r1", 2), ("r2", 1)]
        assert await nothing_more(every)


async def test_a_resuming_subscriber_reads_a_backlog_larger_than_its_queue_at_its_own_pace(
    backend: str, target: DatabaseTarget
) -> None:
    async with two_relays(backend, target, queue_size=8) as p:
        await p.a.publish("r1", [ev(i) for i in range(100)])
        resumed = await p.b.subscribe("r1", since=10)
        assert await take(resumed, 90) == [(i + 1, i) for i in range(10, 100)]
        assert resumed.queue.qsize() == 0 and not resumed.resync
        assert await nothing_more(resumed)


async def test_a_subscriber_that_falls_behind_is_told_to_resynchronise_and_never_slows_another(
    backend: str, target: DatabaseTarget
) -> None:
    async with two_relays(backend, target, queue_size=8, max_lag=16) as p:
        slow = await p.b.subscribe("r1")
        fast = await p.b.subscribe("r1")
        got: list[tuple[int, int]] = []
        for i in range(40):
            await p.a.publish("r1", [ev(i)])
            got += await take(fast, 1)
        assert got == [(i + 1, i) for i in range(40)]
        async with asyncio.timeout(5):
            seen = []
            while (item := await slow.get()) is not None:
                seen.append(item.seq)
        # It kept a full queue of the first events, then the marker once 16 more were waiting.
        assert slow.resync and seen == list(range(1, 9))
        # It resynchronises from the last number it has, and gets exactly the rest.
        again = await p.b.subscribe("r1", since=seen[-1])
        assert [s for s, _ in await take(again, 32)] == list(range(9, 41))


@pytest.mark.parametrize("backend", ["redis", "postgresql"])
async def test_a_killed_listener_listens_again_within_5_s_and_its_subscribers_miss_nothing(
    backend: str, target: DatabaseTarget
) -> None:
    async with two_relays(backend, target) as p:
        sub = await p.b.subscribe("r1")
        await p.a.publish("r1", [ev(0)])
        assert await take(sub, 1) == [(1, 0)]
        notices: Any = p.b.notices
        before = notices.connections
        killed_at = time.monotonic()
        if backend == "postgresql":
            pid = notices.backend_pid
            async with p.a.store._engine.begin() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        else:
            admin = redis.Redis.from_url(REDIS_URL)
            try:
                ids = [c["id"] for c in admin.client_list() if c["name"] == p.redis_name and c["cmd"] == "subscribe"]
                assert len(ids) == 2  # one listener per relay
                for client_id in ids:
                    admin.client_kill_filter(_id=client_id)
            finally:
                admin.close()
        # Published while the listener may be down: those notices can be lost, the events cannot.
        for i in range(1, 21):
            await p.a.publish("r1", [ev(i)])
        assert await take(sub, 20) == [(i + 1, i) for i in range(1, 21)]
        while notices.connections <= before:
            assert time.monotonic() - killed_at < 5, "the listener did not come back within 5 s"
            await asyncio.sleep(0.01)
        await p.a.publish("r1", [ev(21)])
        assert await take(sub, 1, timeout=5) == [(22, 21)]
        assert await nothing_more(sub)


async def test_concurrent_appenders_of_one_run_never_share_a_number(backend: str, target: DatabaseTarget) -> None:
    engines = [make_engine(target.url, connect_args=target.connect_args) for _ in range(2)]
    try:
        stores = [EventStore(e) for e in engines]

        async def append(k: int) -> list[int]:
            numbers = []
            for i in range(25):
                logged = await stores[k % 2].append("r1", [ev(1000 * k + i), ev(1000 * k + i)])
                numbers += [item.seq for item in logged]
            return numbers

        results = await asyncio.gather(*(append(k) for k in range(4)))
        numbers = sorted(n for r in results for n in r)
        assert numbers == list(range(1, 201))
        assert all(r == sorted(r) for r in results)
        assert [i.seq for i in await stores[0].read_after("r1", 0, limit=500)] == list(range(1, 201))
        assert await stores[1].last_seq("r1") == 200
        assert await stores[0].delete_run("r1") == 200 and await stores[1].last_seq("r1") == 0
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_malformed_or_oversized_notice_is_refused_or_ignored(backend: str, target: DatabaseTarget) -> None:
    async with two_relays(backend, target) as p:
        sub = await p.b.subscribe("r1")
        await p.a.notices.publish("no numbers here")
        await p.a.notices.publish("r1:x-y")
        with pytest.raises(ValueError, match=f"a notice carries at most {NOTICE_MAX_BYTES} bytes"):
            await p.a.notices.publish("r" * 8000)
        await p.a.publish("r1", [ev(0)])
        assert await take(sub, 1) == [(1, 0)]
        assert await nothing_more(sub)
