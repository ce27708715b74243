"""Background loops stop between runs, so a database call in progress is never cancelled half-way."""

from __future__ import annotations

import asyncio

import pytest

from cracktrader.periodic import Periodic

pytestmark = pytest.mark.anyio


async def test_stop_lets_the_run_in_progress_finish_instead_of_cancelling_it() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def work() -> None:
        started.set()
        await release.wait()  # stands for a query in flight
        finished.append(True)

    periodic = Periodic(work, 0.001, name="test")
    periodic.start()
    await started.wait()
    stopping = asyncio.create_task(periodic.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # it waits for the query, it does not cancel it
    release.set()
    await stopping
    assert finished == [True]


async def test_stop_between_runs_ends_at_once_and_runs_no_more() -> None:
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)

    periodic = Periodic(work, 3600.0, name="test")  # the first run would be an hour away
    periodic.start()
    await asyncio.wait_for(periodic.stop(), timeout=5)
    assert runs == []
    await periodic.stop()  # a second stop is harmless


async def test_it_runs_again_after_each_interval() -> None:
    three = asyncio.Event()
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)
        if len(runs) == 3:
            three.set()

    periodic = Periodic(work, 0.001, name="test")
    periodic.start()
    await asyncio.wait_for(three.wait(), timeout=10)
    await periodic.stop()
    assert len(runs) >= 3
