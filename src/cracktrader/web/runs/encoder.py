"""JSON encoding of results pages off the event loop: small pages in a thread, large ones in worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cracktrader.runs.results import ResultsPage, encode_page

log = logging.getLogger(__name__)

# Rows (equity points + orders + fills) from which a page goes to a worker process. Building a 250k-row page's
# dicts in a thread takes the GIL in turns with the event loop: /status p99 was 222-464 ms during 8 such reads.
LARGE_PAGE_ROWS = 20_000


def _ready() -> None:
    """A no-op a new worker runs, so that starting the pool starts its processes."""


def _lower_priority() -> None:
    """Workers yield the CPU to the server: on 2 cores two busy encoders otherwise delay the event loop."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)


class PageEncoder:
    """Encodes results pages; at most `processes` large pages at a time, each in its own process."""

    def __init__(self, *, processes: int = 2, large_rows: int = LARGE_PAGE_ROWS) -> None:
        self.processes = processes
        self.large_rows = large_rows
        self._slots = asyncio.Semaphore(processes)
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    async def _executor(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:
                # Started in a thread: the first start waits for the fork server to import the encoder (~1 s),
                # which on the event loop stalled /status for 700 ms.
                self._pool = await asyncio.to_thread(self._start)
        return self._pool

    def _start(self) -> ProcessPoolExecutor:
        # forkserver: forking a process that runs threads and an event loop is unsafe; the fork server imports
        # the encoder once, so each worker starts in milliseconds.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["cracktrader.runs.results"])
        pool = ProcessPoolExecutor(max_workers=self.processes, mp_context=context, initializer=_lower_priority)
        # Spawn every worker now, so no later submission (from the event loop) has to.
        for future in [pool.submit(_ready) for _ in range(self.processes)]:
            future.result()
        return pool

    async def encode(self, page: ResultsPage) -> bytes:
        """The page's JSON bytes."""
        if page.rows < self.large_rows:
            return await asyncio.to_thread(encode_page, page)
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(await self._executor(), encode_page, page)
            except BrokenProcessPool:
                # A worker died (killed, out of memory): start afresh next time, answer this one from a thread.
                log.warning("Results encoder process died; encoding in a thread", exc_info=True)
                self._pool = None
                return await asyncio.to_thread(encode_page, page)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
