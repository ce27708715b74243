"""Run-queue deployments for tests: real `cracktrader worker` processes beside an API server that executes nothing,
on a PostgreSQL database of the test's own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from cracktrader.db.engine import make_engine
from cracktrader.db.models import RunRecord
from cracktrader.settings import Settings
from web_support import TEST_STRATEGY_DIR, LiveServer

# The workers' lease: a SIGKILLed worker's runs are taken over this long after its last heartbeat.
LEASE_S = 2.0


class WorkerProcess:
    """A real `cracktrader worker` process (stderr to `log`); SIGTERM drains it, SIGKILL kills it."""

    def __init__(self, env: dict[str, str], log: Path, executors: int = 1) -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.executors = executors
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        command = [
            sys.executable,
            "-m",
            "cracktrader",
            "worker",
            "--executors",
            str(self.executors),
            "--log-level",
            "info",
        ]
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while "Worker started" not in self.log.read_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@contextlib.contextmanager
def deployment(
    tmp_path: Path, base: Settings, workers: int, executors: int = 1, **env: str
) -> Iterator[tuple[LiveServer, list[WorkerProcess], Settings]]:
    """An API server that executes nothing on the test's PostgreSQL database, and `workers` workers (of
    `executors` executors each)."""
    settings = base.model_copy(update={"run_queue": True, "strategy_dir": TEST_STRATEGY_DIR})
    worker_env = {
        "DATABASE_URL": settings.database_url,
        "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR),
        "CRACKTRADER_RUN_LEASE_TTL_S": str(LEASE_S),
        "CRACKTRADER_RUN_HEARTBEAT_S": "0.25",
        "CRACKTRADER_EXECUTOR_POLL_S": "0.05",
        **env,
    }
    procs = [WorkerProcess(worker_env, tmp_path / f"worker-{i}.log", executors) for i in range(workers)]
    with LiveServer(settings, executor=False) as srv:
        try:
            for proc in procs:
                proc.start()
            yield srv, procs, settings
        finally:
            for proc in procs:
                proc.stop()


async def holder_of(settings: Settings, run_id: str, procs: list[WorkerProcess]) -> tuple[str, WorkerProcess]:
    """The executor holding a run, and the worker process it runs in (its id names the pid)."""
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            holder = (await conn.execute(select(RunRecord.executor_id).where(RunRecord.id == run_id))).scalar_one()
    finally:
        await engine.dispose()
    assert holder is not None
    return holder, next(p for p in procs if p.proc is not None and f":{p.proc.pid}:" in holder)
