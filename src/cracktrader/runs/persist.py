"""A paper session in rows: what each bar changed (`SessionRecorder`), and the session rebuilt from its rows.

The rows are the session's record: `/results` of a session in the store is computed from them, and a server that
takes a session over after a restart rebuilds its simulator from them before replaying the candles it missed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from cracktrader.brokers.paper import PaperSession, SessionSnapshot, export_state, rebuild_simulator
from cracktrader.db.session_store import SessionDelta, StoredSession, nan_to_none, none_to_nan
from cracktrader.engine.accounting import B_ENTRY_COST, B_ENTRY_PRICE, B_POS
from cracktrader.engine.backtest import simulator_result
from cracktrader.engine.records import (
    O_BAR,
    O_CREATED,
    O_FEE,
    O_ID,
    O_PNL,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_RETURN,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    O_TRIGGER,
    O_TYPE,
    STATUS_FILLED,
    STATUS_OPEN,
)
from cracktrader.engine.strategy import Strategy
from cracktrader.errors import CracktraderError
from cracktrader.runs.results import RunResults, empty_results, from_backtest


class StrategyStateError(CracktraderError):
    """The strategy's `state()` is not JSON, or `restore()` refused what it saved."""

    code = "STRATEGY_STATE_INVALID"
    status_code = 422


def strategy_state(strategy: Strategy) -> str | None:
    """The strategy's `state()` as JSON text (None when it keeps none)."""
    state = strategy.state()
    if state is None:
        return None
    try:
        return json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StrategyStateError(
            f"{type(strategy).__name__}.state() must return JSON (dicts, lists, strings, finite numbers): {exc}"
        ) from None


def restore_strategy(strategy: Strategy, saved: str | None) -> None:
    """Hand a re-made strategy what its `state()` returned before (nothing when it kept none)."""
    if saved is None:
        return
    try:
        strategy.restore(json.loads(saved))
    except CracktraderError:
        raise
    except Exception as exc:
        raise StrategyStateError(f"{type(strategy).__name__}.restore() failed: {type(exc).__name__}: {exc}") from None


class SessionRecorder:
    """Turns what a session's bars changed into rows: call `capture()` after each bar (or control action)."""

    def __init__(self, run_id: str, session: PaperSession, *, exchange: str, quote: str) -> None:
        self.run_id = run_id
        self.session = session
        self.exchange = exchange
        self.quote = quote
        self._bars = 0  # bars whose candles are written
        self._rows = 0  # finished order rows written
        self._open: dict[int, tuple[Any, ...]] = {}  # open orders as last written

    def resume_from(self, bars: int) -> None:
        """The session was restored with `bars` bars and its orders already stored."""
        sim = self.session.sim
        self._bars, self._rows = bars, len(sim.rows)
        self._open = {o.id: _open_key(o) for o in sim.open_orders}

    def capture(self, strategy: Strategy) -> SessionDelta:
        """The rows changed since the last capture, and the state after them."""
        session, sim = self.session, self.session.sim
        n = session.bars
        ts = sim.data.timestamp
        delta = SessionDelta(
            bars=n,
            warmup_bars=session.warmup_bars,
            last_bar_ts=session.last_timestamp,
            sim_state=json.dumps(export_state(session)),  # NaN allowed: stored as text, read back by Python
            strategy_state=strategy_state(strategy),
        )
        data = sim.data
        for t in range(self._bars, n):
            for j in range(len(session.symbols)):
                delta.candles.append(
                    {
                        "run_id": self.run_id,
                        "ts": int(ts[t]),
                        "symbol": j,
                        "open": float(data.open[t, j]),
                        "high": float(data.high[t, j]),
                        "low": float(data.low[t, j]),
                        "close": float(data.close[t, j]),
                        "volume": float(data.volume[t, j]),
                        "tradable": bool(data.tradable[t, j]),
                    }
                )
        # The last written point again too: a control action (close, flatten) re-marks the bar it happens in.
        for t in range(max(0, self._bars - 1), n):
            delta.equity[int(ts[t])] = {
                "run_id": self.run_id,
                "ts": int(ts[t]),
                "value": float(sim.equity[t]),
                "cash": float(sim.cash_curve[t]),
                "in_market": bool(sim.in_market[t]),
            }
        self._bars = n
        for index in range(self._rows, len(sim.rows)):
            row = sim.rows[index]
            record = self._order_row(row, ts)
            delta.orders[record["order_id"]] = record
            if int(row[O_STATUS]) == STATUS_FILLED:
                delta.fills.append(self._fill(row, ts, index))
        self._rows = len(sim.rows)
        now_open = {}
        for o in sim.open_orders:
            key = _open_key(o)
            now_open[o.id] = key
            if self._open.get(o.id) != key:
                delta.orders[o.id] = self._open_row(o, ts)
        self._open = now_open
        last = n - 1
        for j, symbol in enumerate(session.symbols):
            delta.positions[symbol] = {
                "run_id": self.run_id,
                "symbol": symbol,
                "size": float(sim.book[j, B_POS]),
                "entry_price": float(sim.book[j, B_ENTRY_PRICE]),
                "entry_cost": float(sim.book[j, B_ENTRY_COST]),
                "market_price": nan_to_none(float(data.close[last, j])) if n else None,
                "ts": int(ts[last]) if n else 0,
            }
        # With exchange rules, open buy orders hold cash as an exchange would; without them nothing is held.
        held = sim.locked_quote() if sim.s.rules is not None else 0.0
        delta.balances[self.quote] = {
            "run_id": self.run_id,
            "currency": self.quote,
            "free": sim.cash - held,
            "used": held,
            "total": sim.cash,
            "ts": int(ts[last]) if n else 0,
        }
        return delta

    def _order_row(self, row: list[float], ts: np.ndarray) -> dict[str, Any]:
        bar = int(row[O_BAR])
        return {
            "run_id": self.run_id,
            "order_id": int(row[O_ID]),
            "created_bar": int(row[O_CREATED]),
            "bar": bar,
            "created_ts": int(ts[int(row[O_CREATED])]),
            "ts": int(ts[bar]) if bar >= 0 else -1,
            "symbol": int(row[O_SYMBOL]),
            "side": int(row[O_SIDE]),
            "type": int(row[O_TYPE]),
            "status": int(row[O_STATUS]),
            "reason": int(row[O_REASON]),
            "size": nan_to_none(row[O_QTY]),
            "price": nan_to_none(row[O_PRICE]),
            "trigger": nan_to_none(row[O_TRIGGER]),
            "fee": nan_to_none(row[O_FEE]),
            "pnl": nan_to_none(row[O_PNL]),
            "ret": nan_to_none(row[O_RETURN]),
        }

    def _open_row(self, o: Any, ts: np.ndarray) -> dict[str, Any]:
        trigger = o.trigger
        return {
            "run_id": self.run_id,
            "order_id": o.id,
            "created_bar": o.created,
            "bar": -1,
            "created_ts": int(ts[o.created]),
            "ts": -1,
            "symbol": o.symbol,
            "side": o.side,
            "type": o.type,
            "status": STATUS_OPEN,
            "reason": o.reason,
            "size": None if o.size is None else nan_to_none(o.size),
            "price": None,
            "trigger": nan_to_none(trigger),
            "fee": 0.0,
            "pnl": None,
            "ret": None,
        }

    def _fill(self, row: list[float], ts: np.ndarray, index: int) -> dict[str, Any]:
        symbol = self.session.symbols[int(row[O_SYMBOL])]
        # A live session's fills are keyed by the venue's trade id (an order may fill in parts); a paper order fills
        # once, so its id is the trade's.
        venue_ids: dict[int, str] = getattr(self.session, "venue_trade_ids", {})
        return {
            "run_id": self.run_id,
            "exchange": self.exchange,
            "symbol": symbol,
            "trade_id": venue_ids.get(index, str(int(row[O_ID]))),
            "order_id": int(row[O_ID]),
            "ts": int(ts[int(row[O_BAR])]),
            "side": "buy" if row[O_SIDE] > 0 else "sell",
            "amount": float(row[O_QTY]),
            "price": float(row[O_PRICE]),
            "fee": float(row[O_FEE]),
        }


def _open_key(o: Any) -> tuple[Any, ...]:
    return (o.size, o.limit, o.stop, o.triggered, o.reason)


def snapshot_of(stored: StoredSession, n_symbols: int) -> SessionSnapshot:
    """The simulator snapshot in a stored session's rows."""
    if stored.sim_state is None:
        raise ValueError(f"session {stored.run_id} has no stored state yet")
    n = len(stored.candles) // n_symbols if n_symbols else 0
    if n * n_symbols != len(stored.candles) or n != len(stored.equity) or n != stored.bars:
        raise ValueError(
            f"session {stored.run_id}: {len(stored.candles)} candle rows, {len(stored.equity)} equity points and "
            f"{stored.bars} bars do not agree"
        )
    candles = np.array([tuple(r[2:7]) for r in stored.candles], dtype=np.float64).reshape(n, n_symbols, 5)
    tradable = np.array([bool(r[7]) for r in stored.candles], dtype=np.bool_).reshape(n, n_symbols)
    timestamp = np.array([int(r[0]) for r in stored.candles[::n_symbols]], dtype=np.int64) if n else np.empty(0, "i8")
    equity = np.array([(float(r[1]), float(r[2])) for r in stored.equity], dtype=np.float64).reshape(n, 2)
    rows = [
        [
            float(r.order_id), float(r.created_bar), float(r.bar), float(r.symbol), float(r.side), float(r.type),
            float(r.status), none_to_nan(r.size), none_to_nan(r.price), none_to_nan(r.fee), none_to_nan(r.pnl),
            none_to_nan(r.ret), float(r.reason), none_to_nan(r.trigger),
        ]
        for r in stored.orders
        if int(r.status) != STATUS_OPEN
    ]  # fmt: skip
    return SessionSnapshot(
        timestamp=timestamp,
        ohlcv=np.ascontiguousarray(np.moveaxis(candles, 2, 0)),
        tradable=tradable,
        equity=equity[:, 0].copy(),
        cash=equity[:, 1].copy(),
        in_market=np.array([bool(r[3]) for r in stored.equity], dtype=np.bool_),
        rows=rows,
        state=json.loads(stored.sim_state),
    )


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What `/results` needs of the run's own row."""

    run_id: str
    config: dict[str, Any]
    symbols: tuple[str, ...]
    status: str
    error: str | None
    updated_at: datetime


def results_from_rows(stored: StoredSession, run: RunInfo) -> RunResults:
    """The session's results document computed from its rows, in a backtest's shape."""
    initial = float((run.config.get("exchange_config") or {}).get("initial_cash") or 0.0)
    if stored.sim_state is None or stored.bars == 0:
        state = json.loads(stored.sim_state) if stored.sim_state else None
        cash = float(state["settings"]["initial_cash"]) if state else initial
        return empty_results(
            run_id=run.run_id, config=run.config, status=run.status, start_time=stored.start_time, initial_cash=cash
        )
    snapshot = snapshot_of(stored, len(run.symbols))
    sim = rebuild_simulator(run.symbols, snapshot, events=False)
    end = stored.end_time or stored.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    results = from_backtest(
        simulator_result(sim, sim.data.n_bars),
        run_id=run.run_id,
        config=run.config,
        start_time=stored.start_time,
        end_time=end,
        status=run.status,
    )
    results.head["error"] = run.error
    return results


def finite(value: Any) -> float | None:
    """A finite float or None."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
