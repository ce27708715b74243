"""The run queue on real PostgreSQL (and SQLite): ordering, limits, leases, fencing, reclaim, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.db_support import DatabaseTarget, database_target

from cracktrader.db.models import Base, RunRecord
from cracktrader.db.run_queue import Claim, LeaseLostError, RunQueue, UserRunLimitError
from cracktrader.db.run_store import RunStore
from cracktrader.runs.executor import Executor
from cracktrader.settings import Settings

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseTarget]:
    with database_target(request.param, tmp_path) as t:
        yield t


async def _queue(target: DatabaseTarget, **settings: object) -> RunQueue:
    engine = target.engine()
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return RunQueue(engine, Settings(**settings))  # type: ignore[arg-type]


async def _enqueue(q: RunQueue, n: int, *, kind: str = "backtest", user: int = 1, priority: int = 0) -> list[str]:
    return [
        await q.enqueue(
            user_id=user,
            kind=kind,
            strategy_name="s",
            config={"i": i},
            now=T0 + timedelta(seconds=i),
            priority=priority,
        )
        for i in range(n)
    ]


def test_claims_follow_priority_then_fifo(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target, max_concurrent_backtests=10)
        low = await _enqueue(q, 3)
        high = await _enqueue(q, 2, priority=5)
        order = [(await q.claim("e", ("backtest",), T0)) for _ in range(5)]
        assert [c.run_id for c in order if c] == high + low
        await q.engine.dispose()

    asyncio.run(main())


def test_user_over_limit_gets_typed_429(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target, max_runs_per_user=2)
        await _enqueue(q, 2)
        with pytest.raises(UserRunLimitError) as err:
            await _enqueue(q, 1)
        assert err.value.status_code == 429 and err.value.to_dict()["code"] == "TOO_MANY_RUNS"
        await _enqueue(q, 1, user=2)
        await q.engine.dispose()

    asyncio.run(main())


def test_expired_lease_requeues_and_fences_the_old_holder_only(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target, run_lease_ttl_s=10, max_concurrent_backtests=10)
        a, b = await _enqueue(q, 2)
        ca = await q.claim("dead", ("backtest",), T0)
        cb = await q.claim("healthy", ("backtest",), T0)
        assert ca and cb and ca.run_id == a
        await q.heartbeat("healthy", T0 + timedelta(seconds=8))
        assert await q.reclaim_expired(T0 + timedelta(seconds=11), "requeue") == [a]
        taken = await q.claim("other", ("backtest",), T0 + timedelta(seconds=11))
        assert taken and taken.run_id == a and taken.token > ca.token
        with pytest.raises(LeaseLostError):
            await q.finish(a, ca.token, "completed", T0)
        await q.finish(b, cb.token, "completed", T0 + timedelta(seconds=12))
        await q.finish(a, taken.token, "completed", T0 + timedelta(seconds=12))
        await q.engine.dispose()

    asyncio.run(main())


def test_expired_backtest_fails_under_fail_policy_but_session_requeues(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target, run_lease_ttl_s=10, max_concurrent_backtests=10)
        (bt,) = await _enqueue(q, 1)
        (live,) = await _enqueue(q, 1, kind="paper")
        await q.claim("dead", ("backtest",), T0)
        await q.claim("dead", ("paper",), T0)
        assert set(await q.reclaim_expired(T0 + timedelta(seconds=11), "fail")) == {bt, live}
        again = await q.claim("e2", ("backtest", "paper"), T0 + timedelta(seconds=11))
        assert again and again.run_id == live
        assert await q.claim("e2", ("backtest",), T0 + timedelta(seconds=11)) is None
        await q.engine.dispose()

    asyncio.run(main())


def test_eight_executors_run_every_run_once_within_the_global_limit() -> None:
    with database_target("postgresql", Path(".")) as target:

        async def main() -> None:
            q = await _queue(target, max_concurrent_backtests=3)
            ids = await _enqueue(q, 20, user=None)  # type: ignore[arg-type]
            running = 0
            peak = 0
            seen: list[str] = []

            async def job(claim: Claim) -> str:
                nonlocal running, peak
                running += 1
                peak = max(peak, running)
                seen.append(claim.run_id)
                await asyncio.sleep(0.02)
                running -= 1
                return "completed"

            queues = [RunQueue(target.engine(), q.settings) for _ in range(8)]
            executors = [Executor(qq, f"e{i}", job, poll_s=0.01) for i, qq in enumerate(queues)]  # type: ignore[arg-type]
            for e in executors:
                e.start()
            for _ in range(6000):
                if len(seen) == 20 and running == 0:
                    break
                await asyncio.sleep(0.01)
            for e in executors:
                await e.stop()
            assert sorted(seen) == sorted(ids)
            assert peak <= 3
            for qq in queues:
                await qq.engine.dispose()
            await q.engine.dispose()

        asyncio.run(main())


def test_drain_hands_an_unfinished_run_back(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target)
        (rid,) = await _enqueue(q, 1)
        started = asyncio.Event()

        async def slow(claim: Claim) -> str:
            started.set()
            await asyncio.sleep(3600)
            return "completed"

        e = Executor(q, "drainer", slow, poll_s=0.01)  # type: ignore[arg-type]
        e.start()
        await asyncio.wait_for(started.wait(), 60)
        await e.stop(drain_timeout_s=0.1)
        again = await q.claim("next", ("backtest",), T0)
        assert again and again.run_id == rid and e.done == []
        await q.engine.dispose()

    asyncio.run(main())


def test_an_executor_that_lost_its_lease_stops_its_attempt_and_records_nothing(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target, run_lease_ttl_s=10)
        (rid,) = await _enqueue(q, 1)
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def long(claim: Claim) -> str:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return "completed"

        e = Executor(q, "paused", long, poll_s=0.01, heartbeat_s=0.02, clock=lambda: T0)  # type: ignore[arg-type]
        e.start()
        await asyncio.wait_for(started.wait(), 60)
        # Its lease lapsed (as if its process had been paused): another executor's reclaim fails the run.
        assert await q.reclaim_expired(T0 + timedelta(seconds=11), "fail") == [rid]
        await asyncio.wait_for(cancelled.wait(), 60)
        await e.stop(drain_timeout_s=0.1)
        assert e.done == []
        async with q.engine.connect() as conn:
            row = (await conn.execute(select(RunRecord.status, RunRecord.queue_state).where(RunRecord.id == rid))).one()
        assert tuple(row) == ("failed", "done")  # what the reclaim wrote, not overwritten by the lost attempt
        await q.engine.dispose()

    asyncio.run(main())


def test_a_starting_server_leaves_queued_and_claimed_runs_to_the_queue(target: DatabaseTarget) -> None:
    async def main() -> None:
        q = await _queue(target, max_concurrent_backtests=10)
        claimed, queued = await _enqueue(q, 2)  # first in, first claimed
        assert (await q.claim("e", ("backtest",), T0)) is not None
        store = RunStore(q.engine)
        # A server starting with no live peer fails the runs it finds active without a live server, but queued and
        # claimed runs belong to the queue: leases and reclaim decide their fate, not a server's start.
        assert await store.mark_interrupted(server_id="a-new-server") == 0
        rows = {run_id: await store.get(run_id) for run_id in (queued, claimed)}
        assert rows[queued] is not None and rows[queued].status == "starting"
        assert rows[claimed] is not None and rows[claimed].status == "running"
        await q.engine.dispose()

    asyncio.run(main())
