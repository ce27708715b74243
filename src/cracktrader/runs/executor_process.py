"""`cracktrader worker`: a process of executors that claims queued runs from the database and runs them.

It shares with the API processes only the database and the notices channel (Redis or PostgreSQL): each run's
events go to the event log, so any API process streams them; stops asked of any API process reach it as notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db.credential_store import CredentialStore
from cracktrader.db.engine import is_sqlite, make_engine
from cracktrader.db.migrate import upgrade
from cracktrader.db.run_queue import RunQueue
from cracktrader.db.run_store import RunStore
from cracktrader.db.secret_box import SecretBox
from cracktrader.db.sweep_store import SweepStore
from cracktrader.db.walkforward_store import WalkForwardStore
from cracktrader.errors import CracktraderError
from cracktrader.notify import open_notices
from cracktrader.runs.alerts import AlertSink
from cracktrader.runs.commands import RunCommands
from cracktrader.runs.event_log import open_event_log
from cracktrader.runs.events import LOGGED_EVENTS, EventBus
from cracktrader.runs.queued import Executors, link_jobs
from cracktrader.runs.registry import RunRegistry
from cracktrader.runs.sessions import SessionRegistry, session_calls
from cracktrader.settings import Settings
from cracktrader.sweeps.runner import SweepRegistry
from cracktrader.sweeps.walkforward_runner import WalkForwardRegistry

log = logging.getLogger(__name__)

# The LISTEN connections a worker holds for good on PostgreSQL: run events and run commands.
WORKER_LISTENERS = 2


class WorkerConfigError(CracktraderError):
    """A worker cannot serve this deployment (SQLite is one process: serve runs its executor itself)."""

    code = "WORKER_CONFIG_INVALID"
    status_code = 400


class ClosingAlertSink(AlertSink, Protocol):
    """The alerts of the worker's sessions: stored and delivered like the API server's (the CLI builds it)."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None: ...
    async def close(self) -> None: ...


# The worker's alert sink, made on its database and bus (web's AlertService: it is not the runs layer's to import).
AlertsFactory = Callable[[Settings, AsyncEngine, EventBus], ClosingAlertSink]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What a worker needs besides the core settings: the notices channel and the event log's limits."""

    redis_url: str | None = None
    redis_prefix: str = "cracktrader:"
    queue_size: int = 256
    event_log_days: int = 7
    executors: int | None = None  # default: CRACKTRADER_MAX_CONCURRENT_BACKTESTS
    alerts: AlertsFactory | None = None  # None: the sessions' alerts go nowhere but their status


def check_worker_database(url: str) -> None:
    """Refuse SQLite: its file serves one process, whose `serve` already executes the queue."""
    if is_sqlite(url):
        raise WorkerConfigError(
            "cracktrader worker needs the database every server shares: set DATABASE_URL to PostgreSQL "
            "(postgresql://user@host/db). With SQLite, `cracktrader serve` executes runs itself."
        )


async def run_worker(settings: Settings, options: WorkerOptions, stop: asyncio.Event) -> list[str]:
    """Execute queued runs until `stop` is set, then drain; the ids of the runs this worker finished."""
    check_worker_database(settings.database_url)
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = make_engine(settings.database_url, held_connections=WORKER_LISTENERS)
    store = RunStore(engine)
    bus = EventBus(queue_size=options.queue_size)
    registry = RunRegistry(bus=bus, store=store, settings=settings)
    event_log = await open_event_log(
        bus=bus,
        engine=engine,
        types=LOGGED_EVENTS,
        redis_url=options.redis_url,
        redis_prefix=options.redis_prefix,
        queue_size=options.queue_size,
        keep_days=options.event_log_days,
    )
    notices, close_client = await open_notices(
        redis_url=options.redis_url, redis_prefix=options.redis_prefix, engine=engine, name="run-commands"
    )
    if close_client is not None:
        event_log.closers.append(close_client)
    alerts = options.alerts(settings, engine, bus) if options.alerts is not None else None
    if alerts is not None:
        alerts.bind(asyncio.get_running_loop())
    # Paper and live sessions of processes whose lease lapsed are taken over here as on any server (and stopped,
    # paused or resumed for the API processes through the command channel).
    sessions = SessionRegistry(settings, store=store, bus=bus, server_id=registry.server_id, alerts=alerts)
    sessions.credentials = CredentialStore(engine, SecretBox.from_settings(settings))
    registry.sessions = sessions
    commands = RunCommands.for_registry(notices, event_log.relay, registry, calls=session_calls(sessions))
    await commands.start()
    await registry.start()
    await sessions.begin()  # after the lease is taken: it decides whose sessions are orphans
    queue = RunQueue(engine, settings, SecretBox.from_settings(settings))
    registry.sweeps = SweepRegistry(runs=registry, store=SweepStore(engine), settings=settings)
    registry.walkforwards = WalkForwardRegistry(runs=registry, store=WalkForwardStore(engine), settings=settings)
    link_jobs(registry, queue, event_log, commands)
    count = options.executors or settings.max_concurrent_backtests
    executors = Executors(queue, registry, count=count, poll_s=settings.executor_poll_s)
    executors.start()
    log.info(
        "Worker started: %d executor(s) claim queued backtests, sweeps and walk-forwards; sessions of lapsed "
        "leases are taken over here",
        count,
    )
    try:
        await stop.wait()
        log.info("Worker stopping: runs under way get %.0f s to finish", settings.executor_drain_s)
        await executors.stop(settings.executor_drain_s)
    finally:
        await sessions.close()  # each saves what it has; released with the lease, another process resumes it
        if alerts is not None:
            await alerts.close()
        await commands.close()
        await registry.sweeps.close()
        await registry.walkforwards.close()
        await registry.close()
        await event_log.close()
        await engine.dispose()
    return executors.done
