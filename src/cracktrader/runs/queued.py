"""Runs through the queue: enqueue a request, and the executors that claim and run them in this process."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cracktrader.db.run_queue import Claim, RunQueue
from cracktrader.runs.backtest import validate_backtest
from cracktrader.runs.config import BacktestConfig, record_fields, redact
from cracktrader.runs.executor import Executor, JobResult

if TYPE_CHECKING:
    from cracktrader.runs.commands import RunCommands
    from cracktrader.runs.event_log import RunEventLog
    from cracktrader.runs.registry import RunRegistry

# What executors claim: backtests, sweeps and walk-forwards. Sessions run in the process that accepted them.
QUEUED_KINDS: tuple[str, ...] = ("backtest", "sweep", "walkforward")


async def enqueue_backtest(queue: RunQueue, config: BacktestConfig, *, user_id: int | None) -> str:
    """Validate a backtest as the registry would, then queue it for any executor; its run id."""
    await asyncio.to_thread(validate_backtest, config, settings=queue.settings)
    fields = record_fields(config)
    return await queue.enqueue(
        user_id=user_id,
        kind="backtest",
        strategy_name=fields["strategy_name"],
        timeframe=fields["timeframe"],
        exchange=fields["exchange"],
        symbols=fields["symbols"],
        config=redact(config.model_dump()),
        spec=config.model_dump(mode="json"),
        now=datetime.now(UTC),
    )


ENDED: tuple[JobResult, ...] = ("completed", "failed", "stopped")
RunJob = Callable[[Claim], Coroutine[Any, Any, JobResult]]


def queued_job(registry: RunRegistry) -> RunJob:
    """The job an executor runs for a claimed run: the registry's own execution (or its sweeps' or walk-forwards'),
    under the claimed id."""

    async def run(claim: Claim) -> JobResult:
        jobs = {"sweep": registry.sweeps, "walkforward": registry.walkforwards}
        if claim.kind in jobs:
            registry_of_kind = jobs[claim.kind]
            if registry_of_kind is None:
                raise RuntimeError(f"this process runs no {claim.kind}s")
            return await registry_of_kind.execute_claimed(claim)
        config = BacktestConfig.model_validate(claim.spec)
        status = await registry.execute_claimed(claim.run_id, config, user_id=claim.user_id)
        for ended in ENDED:
            if status == ended:
                return ended
        raise RuntimeError(f"the backtest ended {status}")

    return run


def link_jobs(
    registry: RunRegistry, queue: RunQueue, event_log: RunEventLog | None, commands: RunCommands | None
) -> None:
    """Send the registry's sweeps and walk-forwards through the run queue."""
    from cracktrader.sweeps.pool_jobs import QueueLink

    relay = event_log.relay if event_log is not None else None
    for jobs in (registry.sweeps, registry.walkforwards):
        if jobs is not None:
            jobs.link = QueueLink(queue, relay=relay, commands=commands)


def executor_id(index: int) -> str:
    """A name for an executor that says where it runs (host, pid) and is unique across restarts."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{index}:{uuid.uuid4().hex[:8]}"


class Executors:
    """This process's executors: as many as its worker pool runs backtests at once."""

    def __init__(self, queue: RunQueue, registry: RunRegistry, *, count: int, poll_s: float) -> None:
        job = queued_job(registry)
        self.executors = [Executor(queue, executor_id(i), job, kinds=QUEUED_KINDS, poll_s=poll_s) for i in range(count)]

    def start(self) -> None:
        """Start claiming."""
        for executor in self.executors:
            executor.start()

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop claiming; runs under way finish within the timeout or go back to the queue."""
        await asyncio.gather(*(e.stop(drain_timeout_s) for e in self.executors))

    @property
    def done(self) -> list[str]:
        """Runs these executors finished."""
        return [run_id for e in self.executors for run_id in e.done]
