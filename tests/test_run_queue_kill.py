"""A real executor process killed with SIGKILL loses its lease; another executor takes its backtest over."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.db_support import database_target

from cracktrader.db.engine import make_engine
from cracktrader.db.models import Base
from cracktrader.db.run_queue import Claim, LeaseLostError, RunQueue
from cracktrader.runs.executor import Executor
from cracktrader.settings import Settings

LEASE_S = 2.0


def _child(url: str, connect_args: dict[str, Any], claimed: Any) -> None:
    async def main() -> None:
        queue = RunQueue(make_engine(url, connect_args=connect_args), Settings(run_lease_ttl_s=LEASE_S))  # type: ignore[call-arg]

        async def forever(claim: Claim) -> str:
            claimed.put((claim.run_id, claim.token))
            await asyncio.sleep(3600)
            return "completed"

        Executor(queue, "doomed", forever, kinds=("backtest",), poll_s=0.05, heartbeat_s=0.5).start()  # type: ignore[arg-type]
        await asyncio.sleep(3600)

    asyncio.run(main())


def test_sigkilled_executor_backtest_is_taken_over_within_lease_plus_5s() -> None:
    with database_target("postgresql", Path(".")) as target:

        async def setup() -> RunQueue:
            q = RunQueue(target.engine(), Settings(run_lease_ttl_s=LEASE_S, expired_backtest_policy="requeue"))  # type: ignore[call-arg]
            async with q.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            await q.enqueue(user_id=1, kind="backtest", strategy_name="s", config={}, now=datetime.now(UTC))
            return q

        q = asyncio.run(setup())
        ctx = multiprocessing.get_context("spawn")
        claimed = ctx.Queue()
        proc = ctx.Process(target=_child, args=(target.url, target.connect_args, claimed))
        proc.start()
        run_id, token = claimed.get(timeout=120)
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(30)
        killed = time.monotonic()

        async def takeover() -> tuple[Claim, float]:
            queue = RunQueue(target.engine(), q.settings)
            try:
                while True:
                    await queue.reclaim_expired(datetime.now(UTC))
                    got = await queue.claim("rescuer", ("backtest",), datetime.now(UTC))
                    if got is not None:
                        elapsed = time.monotonic() - killed
                        try:
                            await queue.finish(run_id, token, "completed", datetime.now(UTC))
                            raise AssertionError("stale token accepted")
                        except LeaseLostError:
                            pass
                        await queue.finish(got.run_id, got.token, "completed", datetime.now(UTC))
                        return got, elapsed
                    await asyncio.sleep(0.05)
            finally:
                await queue.engine.dispose()

        got, elapsed = asyncio.run(asyncio.wait_for(takeover(), 120))
        print(f"takeover after SIGKILL: {elapsed:.2f}s (lease {LEASE_S}s)")
        assert got.run_id == run_id and got.token > token
        assert elapsed <= LEASE_S + 5
        asyncio.run(q.engine.dispose())
