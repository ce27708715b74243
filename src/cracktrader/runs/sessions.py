"""Paper sessions of a server: many at once, each a long-lived task driving a `PaperSession` from its feed.

`POST /api/v1/runs` with `mode: "paper"` starts one; they never occupy the runner slot of `/run/backtest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from cracktrader import __version__, failpoints
from cracktrader.brokers.orders import OrderEvent
from cracktrader.brokers.paper import PaperSession, restore_session
from cracktrader.brokers.paper_orders import PaperOrders
from cracktrader.brokers.risk import STALE_AFTER_MS
from cracktrader.clock import Clock, SystemClock
from cracktrader.data.candles import ms_to_iso
from cracktrader.data.feeds.base import BarBatch
from cracktrader.db.credential_store import LOCAL_OWNER, CredentialStore
from cracktrader.db.live_store import LiveOrderStore
from cracktrader.db.secret_box import SecretBox
from cracktrader.db.session_store import FinalStatus, SessionDelta, SessionStore, StaleTokenError, StoredSession
from cracktrader.engine.accounting import B_ENTRY_COST
from cracktrader.engine.fills import BUY, SELL, market_fill_price
from cracktrader.engine.records import O_FEE, O_PNL, O_STATUS, REASON_NAMES, STATUS_FILLED
from cracktrader.engine.window import window_length
from cracktrader.errors import CracktraderError
from cracktrader.exchanges.credentials import ExchangeCredentials
from cracktrader.periodic import Periodic
from cracktrader.runs import events
from cracktrader.runs.alerts import AlertDetails, AlertKind, AlertSink, RunAlerts
from cracktrader.runs.config import LiveConfig, record_fields, redact
from cracktrader.runs.document import now_iso, order_rows_to_dicts
from cracktrader.runs.errors import RunNotFoundError
from cracktrader.runs.live import (
    LiveCheckError,
    LivePlan,
    LiveRequestError,
    LiveRuntime,
    check_live_request,
    load_stored,
    prepare_live,
    stored_credentials_name,
)
from cracktrader.runs.live_accounts import Accounts
from cracktrader.runs.persist import SessionRecorder, finite, restore_strategy, snapshot_of
from cracktrader.runs.results import RunResults, empty_results, from_backtest, json_safe
from cracktrader.runs.session import resumed_feed, run_session
from cracktrader.runs.trade import PaperPlan, prepare_paper
from cracktrader.settings import Settings
from cracktrader.strategies.pinning import pin, pinned_class
from cracktrader.strategies.registry import load_registry

log = logging.getLogger(__name__)
# How long a real-money start waits for its checks (markets, keys, clock, balance, reconciliation) to answer.
REAL_MONEY_ECHO_WAIT_S = 30.0

# No closed candle for a whole timeframe plus this long: the session's data is stale.
STALE_AFTER_S = STALE_AFTER_MS / 1000
# Live bars whose decision lag `/runs/{id}/status` summarises.
LAG_SAMPLES = 1000
# A stop cancels, optionally flattens, saves and ends within this long.
STOP_WAIT_S = 2.0
# Between attempts to write a session's rows while the database is away.
WRITE_RETRY_S = 1.0


class SessionLimitError(CracktraderError):
    """The server runs as many paper and live sessions as it admits."""

    code = "SESSION_LIMIT"
    status_code = 409


class SessionNotActiveError(CracktraderError):
    """The session has ended already."""

    code = "NO_ACTIVE_RUN"
    status_code = 409


@dataclass(slots=True)
class LiveRun:
    """One paper session: its plan, its task and its lifecycle."""

    run_id: str
    user_id: int | None
    config: dict[str, Any]
    plan: PaperPlan
    clock: Clock
    status: str = "running"
    start_time: str = field(default_factory=now_iso)
    started_at: float = field(default_factory=time.monotonic)
    end_time: str | None = None
    ended_at: float | None = None
    error: str | None = None
    error_code: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    flatten: bool = False
    task: asyncio.Task[None] | None = None
    results: RunResults | None = None
    # Milliseconds from each live candle's close to the end of the strategy's decision on it (the clock's time).
    lags_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))
    # Persistence (with a store): the fencing token this server writes under, what each bar changed, the writer.
    token: int | None = None
    recorder: SessionRecorder | None = None
    pending: SessionDelta | None = None  # captured, not written yet (a burst of bars is merged into one write)
    writer: asyncio.Task[None] | None = None
    fenced: bool = False  # another server took the session over: this one stopped driving it
    resumed: bool = False  # taken over from a server that died
    record: Callable[[], None] | None = None  # writes and publishes what a control action (cancel, close) changed
    alerts: RunAlerts | None = None  # the session's alerts, raised to the registry's sink
    halted: bool = False  # the risk gate's halt as last seen: a new halt raises an alert once
    orders: PaperOrders | None = None  # the session's orders in the one order model, for the `orders` channel
    live: LiveRuntime | None = None  # a live session's link to the venue (its orders are the venue's)
    live_stored: Any = None  # a resumed live session's stored orders and fills, restored when it opens
    checked: asyncio.Event = field(default_factory=asyncio.Event)  # a live session's checks ended (either way)
    _trades_published: int = 0  # fills published as trades (numbered from 1, as the results' trades are)
    _rows_published: int = 0  # order rows already looked at for fills to publish
    _rows_summed: int = 0  # order rows already counted in the totals below
    _fills: int = 0
    _realized: float = 0.0
    _fees: float = 0.0

    def _fill_totals(self) -> tuple[int, float, float]:
        """(fills, realized pnl, fees) so far, adding only the order rows recorded since the last call.

        Streams snapshot every session on every bar: summing all of a long session's fills each time grew with it.
        """
        rows = self.plan.session.sim.rows
        new = [r for r in rows[self._rows_summed :] if r[O_STATUS] == STATUS_FILLED]
        if new:
            self._fills += len(new)
            self._realized = math.fsum([self._realized, *(r[O_PNL] for r in new if r[O_PNL] == r[O_PNL])])
            self._fees = math.fsum([self._fees, *(r[O_FEE] for r in new)])
        self._rows_summed = len(rows)
        return self._fills, self._realized, self._fees

    def record_lag(self, batch: BarBatch) -> None:
        """Note how long after its close a live bar was decided on."""
        self.lags_ms.append(float(self.clock.now_ms() - (batch.timestamp + self.plan.timeframe.ms)))

    def lag_summary(self) -> dict[str, float] | None:
        """Decision lag over the last LAG_SAMPLES live bars: last, p50, p99, max (ms)."""
        if not self.lags_ms:
            return None
        ordered = sorted(self.lags_ms)
        n = len(ordered)
        return {
            "last": self.lags_ms[-1],
            "p50": ordered[n // 2],
            "p99": ordered[min(n - 1, math.ceil(0.99 * n) - 1)],
            "max": ordered[-1],
            "samples": float(n),
        }

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def snapshot(self) -> dict[str, Any]:
        """`/runs/{id}/status`: the v1 status fields, and what a session adds."""
        session = self.plan.session
        sim = session.sim
        n = session.bars
        closes = [float(sim.data.close[n - 1, j]) if n else math.nan for j in range(len(session.symbols))]
        value = sim.cash + sum(p * closes[j] for j, p in enumerate(sim.pos) if p)
        fills, realized, fees = self._fill_totals()
        # Against the entry cost with its fee, so that realized + unrealized = pnl (value - initial cash).
        unrealized = math.fsum(
            p * closes[j] - float(sim.book[j, B_ENTRY_COST])
            if p > 0
            else float(sim.book[j, B_ENTRY_COST]) + p * closes[j]
            for j, p in enumerate(sim.pos)
            if p
        )
        lag = None
        reasons: list[str] = []
        # A replay's bars are from the past: lag and staleness are about live candles only.
        if session.last_timestamp is not None and not self.plan.replay:
            # Seconds since the next candle should have closed: the data's lag beyond one timeframe.
            lag = max(0.0, (self.clock.now_ms() - (session.last_timestamp + 2 * self.plan.timeframe.ms)) / 1000)
            if self.active and lag > STALE_AFTER_S:
                reasons.append("STALE_DATA")
        risk = session.risk
        if risk is not None:  # a read reports the gate's reasons; it does not change them
            reasons = sorted(set(reasons) | set(risk.condition.reasons))
        if self.live is not None:
            reasons = sorted(set(reasons) | set(self.live.reasons()))
        condition = "halted" if risk is not None and risk.halted else ("degraded" if reasons else "ok")
        runtime = round((self.ended_at or time.monotonic()) - self.started_at, 3)
        live = self.live
        return {
            "run_id": self.run_id,
            "status": self.status,
            "mode": "paper" if live is None else "live",
            "start_time": self.start_time,
            "end_time": self.end_time,
            "runtime_seconds": runtime,
            "cash": sim.cash,
            "value": value,
            "pnl": value - sim.s.initial_cash,
            "realized_pnl": realized,
            "unrealized_pnl": unrealized,
            "fees_paid": fees,
            "trade_count": fills,
            "error": self.error,
            "error_code": self.error_code,
            "phase": self._phase(n),
            "progress": 0.0,
            "bars_processed": n - session.warmup_bars,
            "bars_total": 0,
            "condition": condition,
            "reasons": reasons,
            "risk": None if risk is None else {**risk.status(), "last_denials": [d.to_dict() for d in session.denials]},
            "last_candle_time": None if session.last_timestamp is None else ms_to_iso(session.last_timestamp),
            "data_lag_seconds": lag,
            "decision_lag_ms": self.lag_summary(),
            "balances": {self.plan.quote: sim.cash},
            "positions": [
                {"symbol": s, "size": sim.pos[j], "entry_price": float(sim.book[j, 1]), "market_price": closes[j]}
                for j, s in enumerate(session.symbols)
                if sim.pos[j]
            ],
            "open_orders": self._open_orders(),
            **({} if live is None else {"live": live.status()}),
        }

    def _phase(self, bars: int) -> str | None:
        if self.status == "starting" and self.live is not None:
            if self.live.awaiting_credentials:
                return "awaiting_credentials"  # resumed after a restart: keys are never stored
            return "checking"  # markets, credentials, the clock and reconciliation, before trading
        return "warming_up" if self.active and bars == self.plan.session.warmup_bars else None

    def _open_orders(self) -> list[dict[str, Any]]:
        session = self.plan.session
        if self.live is not None and self.live.orders is not None:
            ledger = self.live.orders.ledger
            orders = self.live.orders
            return [
                {
                    "order_id": orders.sequence_of(o.client_order_id),
                    "symbol": o.symbol,
                    "side": o.side,
                    "amount": o.amount,
                    "reason": orders.intents[o.client_order_id].intent,
                    "client_order_id": o.client_order_id,
                    "status": str(o.status),
                    "type": o.type,
                    "price": o.price,
                    "filled": o.filled,
                    "exchange_order_id": o.exchange_order_id,
                }
                for o in ledger.open_orders()
            ]
        return [
            {
                "order_id": o.id,
                "symbol": session.symbols[o.symbol],
                "side": "buy" if o.side == BUY else "sell",
                "amount": o.size,
                "reason": REASON_NAMES[o.reason],
            }
            for o in session.sim.open_orders
        ]

    def current_results(self) -> RunResults:
        """The session's results so far, in the backtest's document shape."""
        if self.results is not None:
            return self.results
        return self.results_as(self.status, self.end_time or now_iso())

    def results_as(self, status: str, end_time: str) -> RunResults:
        """The results document of the session's bars so far, with this status and end time."""
        session = self.plan.session
        if session.bars == 0:
            return empty_results(
                run_id=self.run_id,
                config=self.config,
                status=status,
                start_time=self.start_time,
                initial_cash=session.sim.s.initial_cash,
            )
        return from_backtest(
            session.result(),
            run_id=self.run_id,
            config=self.config,
            start_time=self.start_time,
            end_time=end_time,
            status=status,
        )


class SessionRegistry:
    """The server's paper sessions by run id, at most `max_live_sessions` at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Any = None,
        clock: Clock | None = None,
        bus: events.EventBus | None = None,
        server_id: str | None = None,
        lease_now: Callable[[], datetime] | None = None,
        alerts: AlertSink | None = None,
    ) -> None:
        self.settings = settings
        self.alerts = alerts  # where the sessions' alerts go (the server's AlertService)
        self.store = store
        # Sessions are owned under this server's lease (renewed by the run manager's heartbeat): if it lapses,
        # another server takes them over and resumes them.
        self.server_id = server_id or uuid.uuid4().hex
        self.rows: SessionStore | None = None if store is None else SessionStore(store.engine)
        self.lease_now: Callable[[], datetime] = lease_now or (lambda: datetime.now(UTC))
        self._scanner: Periodic | None = None
        self.bus = bus  # status_update events of sessions (streams filter them by run_id)
        self.clock: Clock = clock or SystemClock()
        self.runs: dict[str, LiveRun] = {}
        self.accounts = Accounts()  # the exchange accounts the live sessions trade, for their balance checks
        self.credentials: CredentialStore | None = None  # stored exchange keys, opened when a session names them
        self._lock = asyncio.Lock()
        self._starting = 0  # sessions past the limit check and still preparing (outside the lock)

    def active_count(self) -> int:
        """Running sessions, and those still starting: both count toward the limit."""
        return self._starting + sum(1 for r in self.runs.values() if r.active)

    async def start(self, config: LiveConfig, *, user_id: int | None = None) -> dict[str, Any]:
        """Validate, prepare and start a paper session; 409 SESSION_LIMIT when the server runs its maximum."""
        async with self._lock:
            limit = self.settings.max_live_sessions
            if self.active_count() >= limit:
                raise SessionLimitError(
                    f"This server already runs {limit} paper/live sessions (CRACKTRADER_MAX_LIVE_SESSIONS); stop "
                    "one first",
                    details={"max_live_sessions": limit},
                )
            self._starting += 1
        try:
            # Outside the lock: a warm-up from an unreachable exchange takes seconds, and other starts go on.
            if config.mode == "live":
                if self.store is None:
                    raise LiveRequestError("Live trading needs the server's database (its orders are stored)")
                try:
                    stored = await self._stored_credentials(config, user_id)
                    live_plan = await asyncio.to_thread(
                        prepare_live, config, clock=self.clock, settings=self.settings, stored=stored
                    )
                except CracktraderError as exc:
                    await self._record_refused(config, exc, user_id)
                    raise
                return await self._launch(config, live_plan, user_id)
            plan = await asyncio.to_thread(prepare_paper, config, clock=self.clock, settings=self.settings)
            return await self._launch(config, plan, user_id)
        finally:
            self._starting -= 1

    async def _stored_credentials(self, config: LiveConfig, user_id: int | None) -> ExchangeCredentials | None:
        """The stored credentials a live request names, opened (their last use noted); None when it names none."""
        name = stored_credentials_name(config.exchange_config)
        if name is None:
            return None
        check_live_request(config, self.settings)  # a request refused anyway is refused before the keys are opened
        if self.credentials is None:
            assert self.store is not None
            self.credentials = CredentialStore(self.store.engine, SecretBox.from_settings(self.settings))
        return await self.credentials.resolve(LOCAL_OWNER if user_id is None else user_id, name)

    async def _record_refused(self, config: LiveConfig, exc: CracktraderError, user_id: int | None) -> None:
        """Keep a refused live request in the run history (every live attempt is), its id in the error's details."""
        assert self.store is not None
        run_id = uuid.uuid4().hex
        code = exc.check if isinstance(exc, LiveCheckError) else exc.code
        await self.store.create(run_id=run_id, mode="live", status="starting", config=redact(config.model_dump()),
                                **record_fields(config), user_id=user_id)  # fmt: skip
        await self.store.update_status(
            run_id, status="failed", ended_at=datetime.now(UTC), error=f"{code}: {exc.message}"
        )
        exc.details = {**exc.details, "run_id": run_id}

    async def _launch(self, config: LiveConfig, plan: PaperPlan, user_id: int | None) -> dict[str, Any]:
        """Record a prepared session and start driving it."""
        run_id = uuid.uuid4().hex
        strategy = type(plan.session.strategy)
        # The session runs the class it loaded now: a copy of its source, kept under its hash, pins what it
        # trades with, across edits of the file and restarts of the server.
        digest = await asyncio.to_thread(pin, strategy, self.settings)
        cfg = {
            **redact(config.model_dump()),
            "inputs": {
                "effective_params": plan.session.strategy.params.model_dump(mode="json"),
                "strategy": {"class": strategy.name, "source_sha256": digest},
                "cracktrader_version": __version__,
            },
        }
        run = LiveRun(run_id, user_id, cfg, plan, self.clock)
        run.alerts = RunAlerts(self.alerts, run_id, user_id, self.clock)
        if self.store is not None:
            await self.store.create(
                run_id=run_id,
                mode=config.mode,
                status="running",
                config=cfg,
                **record_fields(config),
                user_id=user_id,
                server_id=self.server_id,
            )
            await self.store.update_status(run_id, status="running", started_at=datetime.now(UTC))
            assert self.rows is not None
            run.token = await self.rows.create(
                run_id, server_id=self.server_id, start_time=run.start_time, now=self.lease_now()
            )
            run.recorder = SessionRecorder(run_id, plan.session, exchange=config.exchange, quote=plan.quote)
        if isinstance(plan, LivePlan):
            run.live = self._runtime(run, plan)
            run.status = "starting"
        else:
            run.orders = PaperOrders(plan.session.symbols, quote=plan.quote)
        run.record = lambda: self._changed(run)
        self.runs[run_id] = run
        run.task = asyncio.create_task(self._drive(run), name=f"session-{run_id}")
        if run.live is not None:
            if config.exchange_config.get("sandbox") is not True:
                # Real money: answer once the checks have read the account, with what the session will do.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.checked.wait(), REAL_MONEY_ECHO_WAIT_S)
                if run.status == "failed" or run.error_code is not None:
                    raise LiveCheckError(run.error_code or "LIVE_CHECK_FAILED", run.error or "The checks failed",
                                         details={"run_id": run_id})  # fmt: skip
            return {"run_id": run_id, "status": run.status, "live": run.live.echo(),
                    "message": "Live session checking the exchange; watch /runs/{id}/status"
                    if run.status == "starting" else "Live session running; watch /runs/{id}/status"}  # fmt: skip
        return {"run_id": run_id, "status": "running", "message": "Paper session started; watch /runs/{id}/status"}

    def _runtime(self, run: LiveRun, plan: LivePlan) -> LiveRuntime:
        """The venue link of a live session: its orders' rows under the run's fencing token, events on the bus."""
        assert self.store is not None

        def token() -> int:
            assert run.token is not None
            return run.token

        def on_event(event: OrderEvent) -> None:
            if self.bus is not None and self.bus.wants(events.ORDER_UPDATE):
                self.bus.publish(events.Event(events.ORDER_UPDATE, {"run_id": run.run_id, **event.to_dict()}))
            self._changed(run)
            self._publish(run)

        def on_error(exc: BaseException) -> None:
            if isinstance(exc, StaleTokenError):
                self._fence(run)

        return LiveRuntime(plan, run_id=run.run_id, token=token, store=LiveOrderStore(self.store.engine),
                           clock=self.clock, on_event=on_event, on_error=on_error, alerts=run.alerts,
                           accounts=self.accounts)  # fmt: skip

    def get(self, run_id: str, *, owner: int | None = None) -> LiveRun:
        """The session `run_id`; another user's is not found (`owner`: the caller's filter, None for all)."""
        run = self.runs.get(run_id)
        if run is None or (owner is not None and run.user_id != owner):
            raise RunNotFoundError(f"No session with id {run_id!r}", details={"run_id": run_id})
        return run

    async def stop(self, run_id: str, *, owner: int | None = None, flatten: bool = False) -> dict[str, Any]:
        """Cancel the session's open orders (and close its positions with `flatten`), save, end `stopped`."""
        run = self.get(run_id, owner=owner)
        if not run.active and run.task is not None and run.task.done():
            raise SessionNotActiveError(
                f"Session {run_id} has ended ({run.status})", details={"run_id": run_id, "status": run.status}
            )
        run.flatten = run.flatten or flatten
        run.stop.set()
        if run.task is not None:
            await asyncio.wait({run.task}, timeout=STOP_WAIT_S)
        return {"run_id": run_id, "status": run.status, "message": f"Session {run.status}"}

    async def close(self) -> None:
        """Stop every session (server shutdown): each saves what it has."""
        if self._scanner is not None:
            await self._scanner.stop()
        for run in list(self.runs.values()):
            if run.active:
                run.stop.set()
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S * 2)

    async def _drive(self, run: LiveRun) -> None:
        plan = run.plan
        live = run.live
        try:

            def on_bar(_session: PaperSession, batch: BarBatch) -> None:
                if run.fenced:  # taken over: not one more bar, nothing written
                    run.stop.set()
                    return
                if live is not None:
                    live.pump()  # the orders it decided go out now, each stored before it is sent
                if not plan.replay:
                    run.record_lag(batch)
                self._publish_candles(run, batch)
                self._changed(run, equity=True)
                self._check_halt(run)
                self._publish(run)

            self._publish(run)
            if live is not None:
                # Warmed first: fills that reconciliation books land in the bar the session is at.
                for batch in plan.history:
                    plan.session.warm(batch.timestamp, batch.candles)
                plan.history = []
                try:
                    await live.open(run.live_stored)
                except LiveCheckError as exc:  # known before the run ends: a real-money start answers with it
                    run.error, run.error_code = exc.message, exc.check
                    raise
                finally:
                    run.checked.set()
                run.status = "running"
                self._publish(run)
                live.start()
            await run_session(plan.session, plan.feed, history=plan.history, stop=run.stop, on_bar=on_bar)
            outcome = "stopped" if run.stop.is_set() or not plan.replay else "completed"
        except LiveCheckError as exc:
            outcome, run.error, run.error_code = "failed", exc.message, exc.check
        except CracktraderError as exc:
            outcome, run.error, run.error_code = "failed", exc.message, exc.code
        except Exception as exc:
            log.exception("Session %s failed", run.run_id)
            outcome, run.error, run.error_code = "failed", f"Internal error: {type(exc).__name__}", "INTERNAL_ERROR"
        if live is not None:
            if not run.fenced and outcome == "stopped":
                await live.wind_down(flatten=run.flatten)  # cancels (and a flatten) on the venue, answers awaited
            await live.close()
        if run.writer is not None:  # the final write below must come after the bars' writes, not race them
            await asyncio.gather(run.writer, return_exceptions=True)
        if run.fenced:
            self._abandon(run)
            return
        if live is None:
            self._wind_down(run)
        self._publish_changes(run)  # the cancels (and a flatten) of the stop
        end_time = now_iso()
        results = run.results_as(outcome, end_time)
        # Persisted before the outcome is announced, as backtests are: a client that sees it can read the history.
        if run.recorder is not None and not await self._write_final(run, results, outcome, end_time):
            return
        run.results = results
        run.status, run.end_time, run.ended_at = outcome, end_time, time.monotonic()
        if outcome == "failed" and run.alerts is not None:
            run.alerts.raise_(
                AlertKind.SESSION_FAILED,
                f"Session {run.run_id} failed: {run.error}",
                AlertDetails(code=run.error_code, error=run.error),
            )
        self._publish(run)

    def _check_halt(self, run: LiveRun) -> None:
        """Raise an alert when the session's risk gate has just halted it (once per halt)."""
        risk = run.plan.session.risk
        halted = risk is not None and risk.halted
        if halted and not run.halted and risk is not None and run.alerts is not None:
            reasons = sorted(str(r) for r in risk.condition.reasons)
            run.alerts.raise_(
                AlertKind.SESSION_HALTED,
                f"Session {run.run_id} is halted ({', '.join(reasons)}): only orders that reduce a position go out "
                "until it is resumed or the UTC day ends",
                AlertDetails(reason=", ".join(reasons)),
            )
        run.halted = halted

    # Rows, fencing and takeover ----------------------------------------------------------------------------
    def _record(self, run: LiveRun) -> None:
        """Capture what the bar changed and have it written (bars captured meanwhile join the same write)."""
        if run.recorder is None:
            return
        delta = run.recorder.capture(run.plan.session.strategy)
        run.pending = delta if run.pending is None else run.pending.then(delta)
        if run.writer is None or run.writer.done():
            run.writer = asyncio.create_task(self._write(run), name=f"session-rows-{run.run_id}")

    async def _write(self, run: LiveRun) -> None:
        """Write pending rows, one transaction per batch, until none are left; a stale token stops the session."""
        assert self.rows is not None and run.token is not None
        if failpoints.armed("session.rows_unwritten"):  # a crash test: the process dies before any bar is saved
            return
        while run.pending is not None and not run.fenced:
            delta, run.pending = run.pending, None
            try:
                await self.rows.append(run.run_id, run.token, delta, now=self.lease_now())
            except StaleTokenError:
                self._fence(run)
                return
            except Exception:  # the database may be briefly away: keep the rows and try again
                log.warning("Could not write session %s's rows; retrying", run.run_id, exc_info=True)
                run.pending = delta if run.pending is None else delta.then(run.pending)
                if run.stop.is_set():
                    return
                await asyncio.sleep(WRITE_RETRY_S)

    async def _write_final(self, run: LiveRun, results: RunResults, outcome: str, end_time: str) -> bool:
        """The last rows (cancels, a flatten) with the outcome, in one fenced transaction; False when fenced."""
        assert self.rows is not None and run.recorder is not None and run.token is not None
        delta = run.recorder.capture(run.plan.session.strategy)
        if run.pending is not None:
            delta = run.pending.then(delta)
            run.pending = None
        head = results.head
        metrics = json_safe(head.get("performance_metrics") or {})
        final = FinalStatus(
            status=outcome,
            end_time=end_time,
            ended_at=datetime.now(UTC),
            error=run.error,
            final_value=finite(head.get("final_value")),
            total_return=finite(metrics.get("total_return")),
            metrics=metrics or None,
        )
        try:
            await self.rows.append(run.run_id, run.token, delta, now=self.lease_now(), final=final)
        except StaleTokenError:
            self._fence(run)
            self._abandon(run)
            return False
        except Exception:
            log.warning("Could not save session %s's final rows", run.run_id, exc_info=True)
        return True

    def _fence(self, run: LiveRun) -> None:
        run.fenced = True
        run.stop.set()
        log.warning("Session %s was taken over by another server; this one stopped driving it", run.run_id)

    def _abandon(self, run: LiveRun) -> None:
        """Forget a session another server drives now (nothing more of it is written here)."""
        run.status, run.end_time, run.ended_at = "stopped", now_iso(), time.monotonic()
        run.error, run.error_code = "taken over by another server", StaleTokenError.code
        if self.runs.get(run.run_id) is run:
            del self.runs[run.run_id]

    async def begin(self) -> None:
        """Resume sessions of servers whose lease lapsed, now and every `server_heartbeat_s`."""
        if self.rows is None or self._scanner is not None:
            return
        await self.scan()
        self._scanner = Periodic(self._scan, self.settings.server_heartbeat_s, name="cracktrader-session-takeover")
        self._scanner.start()

    async def _scan(self) -> None:
        await self.scan()

    async def scan(self) -> list[str]:
        """Take over and resume the paper sessions whose owner's lease lapsed; returns their run ids."""
        if self.rows is None:
            return []
        try:
            orphans = await self.rows.orphans(
                server_id=self.server_id,
                now=self.lease_now(),
                lease_ttl=timedelta(seconds=self.settings.server_lease_ttl_s),
            )
        except Exception:
            log.warning("Could not look for sessions to take over", exc_info=True)
            return []
        resumed: list[str] = []
        for orphan in orphans:
            async with self._lock:
                if self.active_count() >= self.settings.max_live_sessions:
                    log.warning("Session %s waits for a free session slot to resume", orphan.run_id)
                    break
                token = await self.rows.claim(orphan, server_id=self.server_id, now=self.lease_now())
                if token is None:  # another server was first
                    continue
                try:
                    await self._resume(orphan.run_id, token)
                except Exception as exc:
                    log.exception("Session %s could not be resumed", orphan.run_id)
                    message = exc.message if isinstance(exc, CracktraderError) else type(exc).__name__
                    with contextlib.suppress(Exception):
                        await self.rows.fail(
                            orphan.run_id, token, error=f"resume failed: {message}", now=self.lease_now()
                        )
                    await self._resume_failed(orphan.run_id, exc, message)
                    continue
                resumed.append(orphan.run_id)
                log.info("Resumed session %s (fencing token %d)", orphan.run_id, token)
        return resumed

    async def _resume_failed(self, run_id: str, exc: BaseException, message: str) -> None:
        """Raise SESSION_FAILED for a session that could not be resumed, to its run's owner."""
        if self.alerts is None or self.store is None:
            return
        try:
            summary = await self.store.get(run_id)
        except Exception:
            summary = None
        code = exc.code if isinstance(exc, CracktraderError) else "INTERNAL_ERROR"
        RunAlerts(self.alerts, run_id, None if summary is None else summary.user_id, self.clock).raise_(
            AlertKind.SESSION_FAILED,
            f"Session {run_id} could not be resumed after a restart: {message}",
            AlertDetails(code=code, error=f"resume failed: {message}"),
        )

    async def _resume(self, run_id: str, token: int) -> LiveRun:
        """Rebuild a session from its rows and drive it on: the missed candles first, then live ones."""
        assert self.store is not None and self.rows is not None
        summary = await self.store.get(run_id)
        stored = await self.rows.load(run_id)
        if summary is None or stored is None:
            raise RunNotFoundError(f"No session with id {run_id!r}", details={"run_id": run_id})
        cfg = dict(summary.config)
        # The request as recorded (redacted: paper sessions hold no secrets), without what the server added to it.
        config = LiveConfig.model_validate({k: v for k, v in cfg.items() if k in LiveConfig.model_fields})
        pinned = (cfg.get("inputs") or {}).get("strategy") or {}
        live_stored = await load_stored(LiveOrderStore(self.store.engine), run_id) if config.mode == "live" else None
        decided = [] if live_stored is None else [i.bar_ms for _, i, _ in live_stored.orders if i.bar_ms is not None]
        keys = await self._stored_credentials(config, summary.user_id) if config.mode == "live" else None
        plan = await asyncio.to_thread(self._rebuild, config, stored, pinned, keys, min(decided, default=None))
        run = LiveRun(run_id, summary.user_id, cfg, plan, self.clock, start_time=stored.start_time)
        run.alerts = RunAlerts(self.alerts, run_id, summary.user_id, self.clock)
        risk = plan.session.risk
        run.halted = risk is not None and risk.halted  # a halt it was stored with was told already
        run.token, run.resumed = token, True
        run.recorder = SessionRecorder(run_id, plan.session, exchange=config.exchange, quote=plan.quote)
        run.recorder.resume_from(plan.session.bars)
        sim = plan.session.sim
        if isinstance(plan, LivePlan):
            run.live = self._runtime(run, plan)
            run.live_stored = live_stored
            assert live_stored is not None
            # When its last server last saw it: its last saved bar's close, its last order change or fill.
            seen = [o.updated_at or o.created_at for o, _, _ in live_stored.orders]
            seen += [f.timestamp for f in live_stored.fills]
            if stored.last_bar_ts is not None:
                seen.append(plan.timeframe.next(stored.last_bar_ts))
            run.live.last_alive_ms = max(seen, default=None)
            run.status = "starting"
        else:
            run.orders = PaperOrders(plan.session.symbols, quote=plan.quote)
            run.orders.sync(sim.open_orders, sim.rows, sim.data.timestamp)  # known already: published before
        run._trades_published = sum(1 for r in sim.rows if r[O_STATUS] == STATUS_FILLED)
        run._rows_published = len(sim.rows)
        run.record = lambda: self._changed(run)
        self.runs[run_id] = run
        run.task = asyncio.create_task(self._drive(run), name=f"session-{run_id}")
        return run

    def _rebuild(
        self,
        config: LiveConfig,
        stored: StoredSession,
        pinned: dict[str, Any],
        keys: ExchangeCredentials | None,
        first_decided: int | None = None,
    ) -> PaperPlan:
        """The session's plan with its simulator and strategy restored and its feed from the first missed bar.

        `pinned` is the recorded strategy (class name and source hash): the code it started with runs on. `keys`:
        the stored credentials a live session names, opened again (inline keys it waits for). `first_decided`: the
        earliest bar a live session's stored orders were decided on.
        """
        strategy_cls = None
        if pinned.get("class") and pinned.get("source_sha256"):
            current = load_registry(self.settings).get(config.strategy_class or config.strategy_name)
            strategy_cls = pinned_class(pinned["class"], pinned["source_sha256"], current, self.settings)
        plan: PaperPlan
        if config.mode == "live":
            plan = prepare_live(config, clock=self.clock, settings=self.settings, strategy_cls=strategy_cls,
                                resuming=True, stored=keys)  # fmt: skip
        else:
            plan = prepare_paper(config, clock=self.clock, settings=self.settings, strategy_cls=strategy_cls)
        settings = plan.settings if isinstance(plan, LivePlan) and plan.settings is not None else self.settings
        if stored.sim_state is None or stored.last_bar_ts is None:
            if isinstance(plan, LivePlan):
                if first_decided is not None:
                    # Orders went out before any bar was saved: decide from their first bar again, so that the
                    # strategy meets them as the orders it already sent (LiveOrders follows them, sends nothing).
                    plan.feed = resumed_feed(plan, config, clock=self.clock, settings=settings,
                                             after=plan.timeframe.floor(first_decided - 1))  # fmt: skip
                plan.history = plan.feed.history(window_length(plan.session.strategy))  # type: ignore[attr-defined]
            return plan  # it never stored a bar: it starts again from its warm-up
        session = plan.session
        restore_session(session, snapshot_of(stored, len(session.symbols)))
        # A new instance on the restored window: it sees the session's positions and open orders through its
        # context, and gets back what it kept itself.
        restore_strategy(session.strategy, stored.strategy_state)
        plan.feed = resumed_feed(plan, config, clock=self.clock, settings=settings, after=stored.last_bar_ts)
        plan.history = []
        if session.risk is not None and not plan.replay:
            session.risk.clock = _catch_up_time(session, plan.timeframe.ms, self.clock)
        return plan

    def _changed(self, run: LiveRun, *, equity: bool = False) -> None:
        """A bar or a control action changed the session: write it, and publish its orders, fills (and equity)."""
        self._record(run)
        self._publish_changes(run, equity=equity)

    def _publish_changes(self, run: LiveRun, *, equity: bool = False) -> None:
        """Every order change and every fill since the last call on the bus; with `equity`, the bar's point."""
        session = run.plan.session
        sim = session.sim
        # A live session's order changes are the venue's, published as they happen (LiveRuntime's on_event).
        changes = [] if run.orders is None else run.orders.sync(sim.open_orders, sim.rows, sim.data.timestamp)
        if self.bus is None or not self._anyone_wants(
            events.ORDER_UPDATE, events.TRADE_EXECUTION, events.EQUITY_UPDATE
        ):
            # Nobody listens (no stream, no event log): only the counts move on.
            new_rows = sim.rows[run._rows_published :]
            run._trades_published += sum(1 for r in new_rows if r[O_STATUS] == STATUS_FILLED)
            run._rows_published = len(sim.rows)
            return
        for change in changes:
            self.bus.publish(events.Event(events.ORDER_UPDATE, {"run_id": run.run_id, **change.to_dict()}))
        fills = [r for r in sim.rows[run._rows_published :] if r[O_STATUS] == STATUS_FILLED]
        run._rows_published = len(sim.rows)
        if fills:
            first = run._trades_published + 1
            _, trades = order_rows_to_dicts(
                np.asarray(fills, dtype=np.float64), session.symbols, sim.data.timestamp, first_trade_id=first
            )
            run._trades_published += len(trades)
            for trade in trades:
                self.bus.publish(events.Event(events.TRADE_EXECUTION, {"run_id": run.run_id, **trade}))
        n = session.bars
        if equity and n:
            value, cash = float(sim.equity[n - 1]), float(sim.cash_curve[n - 1])
            point = {
                "run_id": run.run_id,
                "bar": n - session.warmup_bars,
                "timestamp": ms_to_iso(int(sim.data.timestamp[n - 1])),
                "value": value,
                "cash": cash,
                "pnl": value - sim.s.initial_cash,
            }
            self.bus.publish(events.Event(events.EQUITY_UPDATE, point))

    def _publish_candles(self, run: LiveRun, batch: BarBatch) -> None:
        """Each closed candle of the bar, as the strategy received it, for the streams that asked for candles."""
        if self.bus is None or not self.bus.wants(events.CANDLE):
            return
        tf = run.plan.timeframe.name
        for symbol, c in batch.candles.items():
            candle = {"run_id": run.run_id, "symbol": symbol, "timeframe": tf, "t": batch.timestamp}
            for key, value in zip("ohlcv", (c.open, c.high, c.low, c.close, c.volume), strict=True):
                candle[key] = float(value) if math.isfinite(value) else None
            self.bus.publish(events.Event(events.CANDLE, candle))

    def _publish(self, run: LiveRun) -> None:
        """A status_update of the session for the streams that follow it (and the event log, for other processes)."""
        if self.bus is not None and self.bus.wants(events.STATUS_UPDATE):
            self.bus.publish(events.Event(events.STATUS_UPDATE, run.snapshot()))

    def _anyone_wants(self, *types: str) -> bool:
        return self.bus is not None and any(self.bus.wants(t) for t in types)

    def is_session(self, run_id: object) -> bool:
        """Whether `run_id` is one of this server's sessions (not the runner slot's run)."""
        return isinstance(run_id, str) and run_id in self.runs

    def _wind_down(self, run: LiveRun) -> None:
        """Cancel open orders; with `flatten`, close positions at the last close (plus slippage)."""
        session = run.plan.session
        sim = session.sim
        if session.bars == 0:
            return
        t = session.bars - 1
        for order in list(sim.open_orders):
            sim.cancel(t, order.id)
        if not run.flatten:
            return
        for j, p in enumerate(sim.pos):
            if p:
                price = market_fill_price(SELL if p > 0 else BUY, float(sim.data.close[t, j]), sim.s.slippage)
                sim.close_now(t, j, price)
        sim.mark(t)
        sim.flush_marks(t)


def _catch_up_time(session: PaperSession, timeframe_ms: int, clock: Clock) -> Callable[[], int]:
    """The risk gate's time of a resumed session: a missed candle's close while they are replayed, then the clock.

    Replayed at once, a day of missed candles would otherwise all fall in the same second of the order rate limit.
    """

    def now() -> int:
        current = clock.now_ms()
        if session.last_timestamp is None:
            return current
        close = session.last_timestamp + timeframe_ms
        return close if current - close > timeframe_ms else current

    return now


class OrderNotOpenError(CracktraderError):
    """No working order with this id in the session."""

    code = "ORDER_NOT_FOUND"
    status_code = 404


class CredentialsRequiredError(CracktraderError):
    """A resumed live session cannot sign in: its keys were never stored."""

    code = "CREDENTIALS_REQUIRED"
    status_code = 409


class NoPositionError(CracktraderError):
    """The session holds no position in this symbol."""

    code = "NO_POSITION"
    status_code = 409


def _active(run: LiveRun) -> PaperSession:
    """The session of a run that is still trading; 409 NO_ACTIVE_RUN once it ended."""
    if not run.active:
        raise SessionNotActiveError(
            f"Session {run.run_id} has ended ({run.status})", details={"run_id": run.run_id, "status": run.status}
        )
    return run.plan.session


def cancel_order(run: LiveRun, order_id: int) -> dict[str, Any]:
    """Cancel one working order of a session (a live one: the cancel goes to the venue, its answer follows)."""
    session = _active(run)
    if run.live is not None and run.live.orders is not None:
        orders = run.live.orders
        working = {o.client_order_id: o for o in orders.ledger.open_orders() if o.is_working}
        for cid in working:
            if orders.sequence_of(cid) == order_id:
                run.live.cancel(cid)
                return {"run_id": run.run_id, "status": run.status, "message": f"Order {order_id} cancel sent"}
        raise OrderNotOpenError(
            f"Session {run.run_id} has no open order {order_id}; open orders: "
            f"{[orders.sequence_of(c) for c in working] or 'none'}",
            details={"order_id": order_id, "open_orders": [orders.sequence_of(c) for c in working]},
        )
    t = max(0, session.bars - 1)
    if not session.sim.cancel(t, order_id):
        open_ids = [o.id for o in session.sim.open_orders]
        raise OrderNotOpenError(
            f"Session {run.run_id} has no open order {order_id}; open orders: {open_ids or 'none'}",
            details={"order_id": order_id, "open_orders": open_ids},
        )
    if run.record is not None:
        run.record()
    return {"run_id": run.run_id, "status": run.status, "message": f"Order {order_id} cancelled"}


def close_position(run: LiveRun, symbol: str) -> dict[str, Any]:
    """Close one position of a session at the last close (plus slippage), at the taker rate."""
    session = _active(run)
    sim = session.sim
    if symbol not in session.symbols:
        raise NoPositionError(
            f"Session {run.run_id} does not trade {symbol!r}; it trades {list(session.symbols)}",
            details={"symbol": symbol, "symbols": list(session.symbols)},
        )
    j = session.symbols.index(symbol)
    p = sim.pos[j]
    if p == 0.0 or session.bars == 0:
        raise NoPositionError(f"Session {run.run_id} holds no {symbol} position", details={"symbol": symbol})
    if run.live is not None:
        run.live.close_position(symbol)
        return {"run_id": run.run_id, "status": run.status, "message": f"{symbol} position close sent"}
    t = session.bars - 1
    for order in [o for o in sim.open_orders if o.symbol == j]:
        sim.cancel(t, order.id)  # its brackets and pending orders go with it
    sim.close_now(t, j, market_fill_price(SELL if p > 0 else BUY, float(sim.data.close[t, j]), sim.s.slippage))
    sim.mark(t)
    sim.flush_marks(t)
    if run.record is not None:
        run.record()
    return {"run_id": run.run_id, "status": run.status, "message": f"{symbol} position closed"}


def pause(run: LiveRun) -> dict[str, Any]:
    """Stop new entries (orders that reduce a position still go out)."""
    session = _active(run)
    if session.risk is not None:
        session.risk.pause()
    return {"run_id": run.run_id, "status": run.status, "message": "New entries paused"}


def resume(run: LiveRun, credentials: dict[str, str] | None = None) -> dict[str, Any]:
    """Allow new entries again; also lifts a daily-loss halt (the day's loss then counts afresh).

    A live session resumed after a restart waits for its keys: `credentials` gives them (held in memory only).
    """
    session = _active(run)
    if run.live is not None and run.live.awaiting_credentials:
        if not credentials:
            raise CredentialsRequiredError(
                f"Session {run.run_id} was resumed after a restart and needs its exchange keys again (they are "
                'never stored): POST them to /runs/{id}/resume as {"apiKey": ..., "secret": ...}',
                details={"run_id": run.run_id, "needs": ["apiKey", "secret"]},
            )
        run.live.supply_credentials(credentials)
        return {"run_id": run.run_id, "status": run.status, "message": "Keys received; reconciling, then trading"}
    if session.risk is not None:
        session.risk.resume()
    return {"run_id": run.run_id, "status": run.status, "message": "Entries resumed"}


def session_calls(sessions: SessionRegistry) -> dict[str, Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]]:
    """The session controls this process answers for other processes (RunCommands), by name."""

    async def cancel(run_id: str, args: dict[str, Any]) -> dict[str, Any]:
        return cancel_order(sessions.get(run_id), int(args["order_id"]))

    async def close(run_id: str, args: dict[str, Any]) -> dict[str, Any]:
        return close_position(sessions.get(run_id), str(args["symbol"]))

    async def pause_it(run_id: str, args: dict[str, Any]) -> dict[str, Any]:
        return pause(sessions.get(run_id))

    async def resume_it(run_id: str, args: dict[str, Any]) -> dict[str, Any]:
        return resume(sessions.get(run_id))  # keys never come this way

    return {"cancel_order": cancel, "close_position": close, "pause": pause_it, "resume": resume_it}
