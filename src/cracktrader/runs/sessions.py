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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cracktrader import __version__
from cracktrader.brokers.paper import PaperSession
from cracktrader.clock import Clock, SystemClock
from cracktrader.data.candles import ms_to_iso
from cracktrader.data.feeds.base import BarBatch
from cracktrader.engine.accounting import B_ENTRY_COST
from cracktrader.engine.fills import BUY, SELL, market_fill_price
from cracktrader.engine.records import O_FEE, O_PNL, O_STATUS, REASON_NAMES, STATUS_FILLED
from cracktrader.errors import CracktraderError
from cracktrader.runs import events
from cracktrader.runs.config import LiveConfig, record_fields, redact
from cracktrader.runs.document import now_iso
from cracktrader.runs.errors import RunNotFoundError
from cracktrader.runs.inputs import strategy_source_sha256
from cracktrader.runs.results import RunResults, empty_results, from_backtest
from cracktrader.runs.session import run_session
from cracktrader.runs.trade import PaperPlan, prepare_paper
from cracktrader.settings import Settings

log = logging.getLogger(__name__)

# No closed candle for a whole timeframe plus this long: the session's data is stale.
STALE_AFTER_S = 30.0
# Live bars whose decision lag `/runs/{id}/status` summarises.
LAG_SAMPLES = 1000
# A stop cancels, optionally flattens, saves and ends within this long.
STOP_WAIT_S = 2.0


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
    checkpoint: asyncio.Task[None] | None = None  # a save of the results so far, in progress
    checkpointed_at: int | None = None  # clock ms of the last one
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
        condition = "halted" if risk is not None and risk.halted else ("degraded" if reasons else "ok")
        runtime = round((self.ended_at or time.monotonic()) - self.started_at, 3)
        return {
            "run_id": self.run_id,
            "status": self.status,
            "mode": "paper",
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
            "phase": "warming_up" if self.active and n == session.warmup_bars else None,
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
            "open_orders": [
                {
                    "order_id": o.id,
                    "symbol": session.symbols[o.symbol],
                    "side": "buy" if o.side == BUY else "sell",
                    "amount": o.size,
                    "reason": REASON_NAMES[o.reason],
                }
                for o in sim.open_orders
            ],
        }

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
    ) -> None:
        self.settings = settings
        self.store = store
        # Sessions are recorded under this server's lease: if it dies, the lease sweep marks them interrupted.
        self.server_id = server_id
        self.bus = bus  # status_update events of sessions (streams filter them by run_id)
        self.clock: Clock = clock or SystemClock()
        self.runs: dict[str, LiveRun] = {}
        self._lock = asyncio.Lock()

    def active_count(self) -> int:
        return sum(1 for r in self.runs.values() if r.active)

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
            plan = await asyncio.to_thread(prepare_paper, config, clock=self.clock, settings=self.settings)
            run_id = uuid.uuid4().hex
            strategy = type(plan.session.strategy)
            # The session runs the class it loaded now: recording its source's hash pins what it trades with.
            cfg = {
                **redact(config.model_dump()),
                "inputs": {
                    "effective_params": plan.session.strategy.params.model_dump(mode="json"),
                    "strategy": {"class": strategy.name, "source_sha256": strategy_source_sha256(strategy)},
                    "cracktrader_version": __version__,
                },
            }
            run = LiveRun(run_id, user_id, cfg, plan, self.clock)
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
            self.runs[run_id] = run
            run.task = asyncio.create_task(self._drive(run), name=f"session-{run_id}")
        return {"run_id": run_id, "status": "running", "message": "Paper session started; watch /runs/{id}/status"}

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
        for run in list(self.runs.values()):
            if run.active:
                run.stop.set()
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S * 2)

    async def _drive(self, run: LiveRun) -> None:
        plan = run.plan
        try:

            def on_bar(_session: PaperSession, batch: BarBatch) -> None:
                if not plan.replay:
                    run.record_lag(batch)
                self._publish(run)
                self._maybe_checkpoint(run)

            self._publish(run)
            await run_session(plan.session, plan.feed, history=plan.history, stop=run.stop, on_bar=on_bar)
            outcome = "stopped" if run.stop.is_set() or not plan.replay else "completed"
        except CracktraderError as exc:
            outcome, run.error, run.error_code = "failed", exc.message, exc.code
        except Exception as exc:
            log.exception("Session %s failed", run.run_id)
            outcome, run.error, run.error_code = "failed", f"Internal error: {type(exc).__name__}", "INTERNAL_ERROR"
        if run.checkpoint is not None:  # the final save below must come after it, not race it
            await asyncio.gather(run.checkpoint, return_exceptions=True)
        self._wind_down(run)
        end_time = now_iso()
        results = run.results_as(outcome, end_time)
        # Persisted before the outcome is announced, as backtests are: a client that sees it can read the history.
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.save_results(
                    run.run_id, results=results, status=outcome, ended_at=datetime.now(UTC), error=run.error
                )
        run.results = results
        run.status, run.end_time, run.ended_at = outcome, end_time, time.monotonic()
        self._publish(run)

    def _maybe_checkpoint(self, run: LiveRun) -> None:
        """Save the results so far every `session_checkpoint_s` of clock time, so a crash keeps them."""
        interval = self.settings.session_checkpoint_s
        if self.store is None or not interval or (run.checkpoint is not None and not run.checkpoint.done()):
            return
        now = self.clock.now_ms()
        if run.checkpointed_at is None:
            run.checkpointed_at = now
            return
        if now - run.checkpointed_at < interval * 1000:
            return
        run.checkpointed_at = now
        results = run.current_results()
        run.checkpoint = asyncio.create_task(
            self._save_checkpoint(run.run_id, results), name=f"checkpoint-{run.run_id}"
        )

    async def _save_checkpoint(self, run_id: str, results: RunResults) -> None:
        try:
            await self.store.save_results(run_id, results=results, status="running", ended_at=None)
        except Exception:  # the next checkpoint tries again; the final save does not depend on it
            log.warning("Could not checkpoint session %s", run_id, exc_info=True)

    def _publish(self, run: LiveRun) -> None:
        """A status_update of the session for the streams that follow it."""
        if self.bus is not None and self.bus.subscriber_count:
            self.bus.publish(events.Event(events.STATUS_UPDATE, run.snapshot()))

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


class OrderNotOpenError(CracktraderError):
    """No working order with this id in the session."""

    code = "ORDER_NOT_FOUND"
    status_code = 404


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
    """Cancel one working order of a session."""
    session = _active(run)
    t = max(0, session.bars - 1)
    if not session.sim.cancel(t, order_id):
        open_ids = [o.id for o in session.sim.open_orders]
        raise OrderNotOpenError(
            f"Session {run.run_id} has no open order {order_id}; open orders: {open_ids or 'none'}",
            details={"order_id": order_id, "open_orders": open_ids},
        )
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
    t = session.bars - 1
    for order in [o for o in sim.open_orders if o.symbol == j]:
        sim.cancel(t, order.id)  # its brackets and pending orders go with it
    sim.close_now(t, j, market_fill_price(SELL if p > 0 else BUY, float(sim.data.close[t, j]), sim.s.slippage))
    sim.mark(t)
    sim.flush_marks(t)
    return {"run_id": run.run_id, "status": run.status, "message": f"{symbol} position closed"}


def pause(run: LiveRun) -> dict[str, Any]:
    """Stop new entries (orders that reduce a position still go out)."""
    session = _active(run)
    if session.risk is not None:
        session.risk.pause()
    return {"run_id": run.run_id, "status": run.status, "message": "New entries paused"}


def resume(run: LiveRun) -> dict[str, Any]:
    """Allow new entries again; also lifts a daily-loss halt (the day's loss then counts afresh)."""
    session = _active(run)
    if session.risk is not None:
        session.risk.resume()
    return {"run_id": run.run_id, "status": run.status, "message": "Entries resumed"}
