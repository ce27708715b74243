"""`AsyncCrackTraderAPI`: the asyncio client of the v1 API (same methods as `CrackTraderAPI`, awaited)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar, overload

import httpx

from cracktrader.client import _common as api
from cracktrader.client import _dashboard as dash
from cracktrader.client._common import Call, ClientConfig
from cracktrader.client._dashboard import TimeArg
from cracktrader.client.dashboard import (
    Breakdowns,
    CandleSetList,
    DownloadJob,
    LogTail,
    MarketList,
    RoundTripList,
    RunCandles,
    SessionCandles,
    StoredCandles,
)
from cracktrader.client.errors import NotFoundError, RunAlreadyActiveError
from cracktrader.client.models import (
    AlertList,
    ApiKeyCreated,
    ApiKeyList,
    BacktestRequest,
    CheckResult,
    CredentialCheck,
    CredentialInfo,
    CredentialList,
    DetailedStatus,
    ExchangeList,
    Health,
    LiveRequest,
    LogoutResult,
    Me,
    Meta,
    Results,
    RunList,
    RunResponse,
    RunSummary,
    SessionStatus,
    Status,
    StrategyInfo,
    StrategyList,
    Sweep,
    SweepList,
    SweepRequest,
    SweepResults,
    Tokens,
    WalkForward,
    WalkForwardList,
    WalkForwardRequest,
)
from cracktrader.client.ws import AsyncChannelStream, AsyncEventStream

__all__ = ["AsyncCrackTraderAPI"]

T = TypeVar("T")


class AsyncCrackTraderAPI:
    """Asyncio client of a Cracktrader server: run control, status, results, history and streams.

    `base_url` defaults to `$CRACKTRADER_BASE_URL`, else `http://127.0.0.1:8000`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = ClientConfig.make(api.resolve_base_url(base_url), api_key, token, timeout)
        self._http = httpx.AsyncClient(
            base_url=self._config.base_url, headers=self._config.headers(), timeout=timeout, transport=transport
        )
        # Sessions this client started that may still be active, oldest first: get_balance() reads the newest.
        self._sessions: list[str] = []
        self._last_session: str | None = None

    @property
    def base_url(self) -> str:
        """The server's root URL."""
        return self._config.base_url

    def __repr__(self) -> str:
        return f"AsyncCrackTraderAPI({self.base_url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def close(self) -> None:
        """Close the connection pool (alias of `aclose`)."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCrackTraderAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.json, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise api.transport_error(exc, call.method, f"{self.base_url}{call.path}") from exc
        return api.handle(call, response)

    # Health and status -------------------------------------------------------------------------------

    async def get_health(self) -> Health:
        """Server health with checks and metrics (an unhealthy server's report is returned, not raised)."""
        return await self._call(api.health())

    async def get_status(self) -> Status:
        """Lifecycle, progress, cash, value and pnl of the current run."""
        return await self._call(api.status())

    async def get_detailed_status(self) -> DetailedStatus:
        """Status plus recent orders and trades, positions, equity curve, metrics and health."""
        return await self._call(api.detailed_status())

    async def get_meta(self) -> Meta:
        """API and app versions and announced deprecations."""
        return await self._call(api.meta())

    async def get_metrics(self) -> str:
        """The server's Prometheus metrics, as exposition text."""
        return await self._call(api.metrics())

    # Accounts ------------------------------------------------------------------------------------------

    def _use_token(self, token: str | None) -> None:
        """Send `token` as the bearer credential from now on (requests and streams)."""
        self._config = self._config.with_token(token)
        self._http.headers = self._config.headers()

    async def login(self, username: str, password: str) -> Tokens:
        """Sign in; the access token is used for this client's later requests and streams."""
        tokens = await self._call(api.login(username, password))
        self._use_token(tokens.access_token)
        return tokens

    async def refresh(self, refresh_token: str) -> Tokens:
        """Rotate a refresh token (the old one stops working); the new access token is used from now on."""
        tokens = await self._call(api.refresh(refresh_token))
        self._use_token(tokens.access_token)
        return tokens

    async def logout(self, refresh_token: str | None = None) -> LogoutResult:
        """End this login (with its refresh token) or every login of the user (without); drops the token."""
        result = await self._call(api.logout(refresh_token))
        self._use_token(None)
        return result

    async def get_me(self) -> Me:
        """Who the credentials belong to, with role and scopes."""
        return await self._call(api.me())

    async def list_api_keys(self) -> ApiKeyList:
        """Your API keys (every key for an admin), without secrets."""
        return await self._call(api.api_keys())

    async def create_api_key(
        self, name: str, *, scopes: Sequence[str] | None = None, expires_at: str | datetime | None = None
    ) -> ApiKeyCreated:
        """Create an API key (scopes default to read only); its `key` is in this answer only."""
        return await self._call(api.create_api_key(name, scopes, expires_at))

    async def revoke_api_key(self, key_id: int) -> None:
        """Revoke an API key; it stops working at once."""
        await self._call(api.revoke_api_key(key_id))

    # Credentials ---------------------------------------------------------------------------------------

    async def list_credentials(self) -> CredentialList:
        """Your stored exchange credentials: names, exchanges and dates (never a secret)."""
        return await self._call(api.credentials())

    async def create_credentials(self, name: str, exchange: str, **secrets: str) -> CredentialInfo:
        """Store an exchange's keys (`apiKey=`, `secret=`, `password=`, ... as it needs) encrypted under `name`."""
        return await self._call(api.create_credentials(name, exchange, secrets))

    async def rotate_credentials(self, name: str, **secrets: str) -> CredentialInfo:
        """Replace the secrets stored under `name` (the exchange stays)."""
        return await self._call(api.rotate_credentials(name, secrets))

    async def test_credentials(self, name: str, *, sandbox: bool = False) -> CredentialCheck:
        """Read the balance through stored credentials: `ok`, or the exchange's error `code`."""
        return await self._call(api.test_credentials(name, sandbox))

    async def delete_credentials(self, name: str) -> None:
        """Delete stored credentials."""
        await self._call(api.delete_credentials(name))

    # Catalog -----------------------------------------------------------------------------------------

    async def get_strategies(
        self, *, skip: int = 0, limit: int = 100, active_only: bool = False, kind: str | None = None
    ) -> StrategyList:
        """Strategy classes (with parameter schemas) then your stored strategies, one page."""
        return await self._call(api.strategies(skip, limit, active_only, kind))

    async def get_strategy(self, ref: int | str) -> StrategyInfo:
        """A stored strategy by id, or a strategy class by name."""
        return await self._call(api.get_strategy(ref))

    async def create_strategy(
        self,
        name: str,
        *,
        base_strategy: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        description: str = "",
        is_active: bool = True,
    ) -> StrategyInfo:
        """Store a named preset of `base_strategy` with `parameters`; run it with `strategy_name=name`."""
        return await self._call(api.create_strategy(name, description, base_strategy, parameters, is_active))

    async def update_strategy(
        self,
        strategy_id: int,
        *,
        name: str | None = None,
        base_strategy: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        description: str | None = None,
        is_active: bool | None = None,
    ) -> StrategyInfo:
        """Change a stored strategy; arguments left as None keep their value."""
        changes = {
            "name": name,
            "base_strategy": base_strategy,
            "parameters": parameters,
            "description": description,
            "is_active": is_active,
        }
        return await self._call(api.update_strategy(strategy_id, changes))

    async def delete_strategy(self, strategy_id: int) -> None:
        """Delete a stored strategy."""
        await self._call(api.delete_strategy(strategy_id))

    async def check_strategy(
        self,
        name: int | str,
        *,
        strategy_params: Mapping[str, Any] | None = None,
        symbols: str | Sequence[str] | None = None,
        timeframe: str | None = None,
        start_date: str | datetime | None = None,
        end_date: str | datetime | None = None,
        exchange: str | None = None,
    ) -> CheckResult:
        """Check a strategy (class name, stored name or id) for look-ahead and window dependence; `passed` says.

        Arguments left None take the server's defaults (BTC/USDT, 1h, the last 1000 bars, its default exchange).
        More bars per symbol than the server admits raise `CheckTooLargeError` (`details["max_bars"]`).
        """
        body = api.check_body(strategy_params, symbols, timeframe, start_date, end_date, exchange)
        return await self._call(api.check_strategy(name, body))

    async def get_exchanges(self) -> ExchangeList:
        """Exchanges a run can use, with sandbox support and timeframes."""
        return await self._call(api.exchanges())

    # Run control -------------------------------------------------------------------------------------

    async def start_backtest(
        self, config: BacktestRequest | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> RunResponse:
        """Start a backtest from a `BacktestRequest`, a mapping or keyword fields; the run continues on the server."""
        return await self._call(api.start_backtest(api.request_body(config, fields)))

    async def start_live(self, config: LiveRequest | Mapping[str, Any] | None = None, /, **fields: Any) -> RunResponse:
        """Start paper or live trading (the server answers 501 until live trading ships)."""
        return await self._call(api.start_live(api.request_body(config, fields)))

    async def stop(self, *, flatten: bool = False) -> RunResponse:
        """Stop the slot's run (a backtest within a second; a session within 2 s, `flatten` closing positions)."""
        return await self._call(api.stop(flatten))

    async def reset(self) -> RunResponse:
        """Return a finished runner to idle so another run can start."""
        return await self._call(api.reset())

    async def wait_for_completion(
        self, run_id: str | None = None, *, timeout: float | None = 300.0, poll_interval: float = 0.25
    ) -> Status:
        """Poll `/status` until the run (the current one, or `run_id`) completed, failed or stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.get_status()
            if api.check_waiting(status, run_id):
                return status
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise api.wait_timeout(status, timeout or 0.0)
            await asyncio.sleep(poll_interval if left is None else min(poll_interval, left))

    async def backtest(
        self,
        config: BacktestRequest | Mapping[str, Any] | None = None,
        /,
        *,
        reset: bool = True,
        timeout: float | None = 600.0,
        poll_interval: float = 0.25,
        max_points: int | None = None,
        limit: int | None = None,
        **fields: Any,
    ) -> Results:
        """Start a backtest, wait for it and return its results; RunFailedError if it failed.

        With `reset` (the default) a runner still holding a finished run is reset first; an active run is never
        touched (RunAlreadyActiveError).
        """
        body = api.request_body(config, fields)
        try:
            started = await self._call(api.start_backtest(body))
        except RunAlreadyActiveError as exc:
            if not (reset and api.resettable(exc)):
                raise
            await self.reset()
            started = await self._call(api.start_backtest(body))
        run_id = api.started_run_id(started)
        status = await self.wait_for_completion(run_id, timeout=timeout, poll_interval=poll_interval)
        api.check_run_succeeded(status)
        return await self.get_run_results(run_id, max_points=max_points, limit=limit)

    # Runs by id (several at once, outside the runner slot) ------------------------------------------

    async def start_run(
        self,
        config: BacktestRequest | LiveRequest | Mapping[str, Any] | None = None,
        /,
        *,
        mode: str = "backtest",
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> RunResponse:
        """Start a run by id (`POST /runs`, 201): a backtest by default (it waits its turn in the worker pool,
        `starting` with phase `queued`), or `mode="paper"` for a session. It never occupies the runner slot.

        `idempotency_key` (yours, e.g. a UUID): a retry with it after a timeout answers the same run, not a second.
        """
        return await self._call(api.start_run(api.run_body(config, fields, mode), idempotency_key))

    async def run_status(self, run_id: str) -> SessionStatus:
        """A run's status by id: a backtest's v1 fields, a session's with pnl parts, condition and book."""
        return await self._call(api.session_status(run_id))

    async def run_detailed_status(self, run_id: str) -> DetailedStatus:
        """A run's status plus recent orders and trades, positions, equity curve, metrics and health."""
        return await self._call(api.run_detailed_status(run_id))

    async def stop_run(self, run_id: str, *, flatten: bool = False) -> RunResponse:
        """Stop a run by id; `NoActiveRunError` once it has ended."""
        return await self._call(api.stop_session(run_id, flatten))

    async def wait_for_run(
        self, run_id: str, *, timeout: float | None = 300.0, poll_interval: float = 0.25
    ) -> SessionStatus:
        """Poll `/runs/{id}/status` until the run completed, failed or stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.run_status(run_id)
            if status.is_finished:
                return status
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise api.wait_timeout(status, timeout or 0.0)
            await asyncio.sleep(poll_interval if left is None else min(poll_interval, left))

    # Paper sessions (several at once, beside the runner) ----------------------------------------------

    async def start_session(
        self,
        strategy_name: str,
        *,
        symbols: str | Sequence[str],
        timeframe: str,
        exchange: str,
        strategy_params: Mapping[str, Any] | None = None,
        exchange_config: Mapping[str, Any] | None = None,
        mode: str = "paper",
    ) -> RunResponse:
        """Start a paper session (`POST /runs`, 201); it runs on the server until stopped or its replay ends.

        `exchange_config={"paper": {...}}` sets balances, slippage and a replay of stored candles. Over the
        server's limit raises `SessionLimitError`; what the server cannot do yet, `NotImplementedByServerError`.
        """
        body = api.session_body(strategy_name, symbols, timeframe, exchange, strategy_params, exchange_config, mode)
        started = await self._call(api.start_session(body))
        run_id = api.started_run_id(started)
        self._sessions.append(run_id)
        self._last_session = run_id
        return started

    async def session_status(self, run_id: str) -> SessionStatus:
        """A session's status: cash, value, pnl (realized, unrealized, fees), balances, positions, open orders."""
        return await self._call(api.session_status(run_id))

    async def stop_session(self, run_id: str, *, flatten: bool = False) -> RunResponse:
        """Cancel the session's open orders (and close its positions with `flatten`); it ends `stopped`.

        A session that has ended already raises `NoActiveRunError`.
        """
        return await self._call(api.stop_session(run_id, flatten))

    async def pause_session(self, run_id: str) -> RunResponse:
        """Refuse the session's new entries (`ENTRIES_PAUSED`); orders that reduce a position still go out."""
        return await self._call(api.session_control(run_id, "pause"))

    async def resume_session(
        self, run_id: str, *, api_key: str | None = None, secret: str | None = None, password: str | None = None
    ) -> RunResponse:
        """Allow new entries again; also lifts a daily-loss halt.

        A live session taken over after a server restart waits for its exchange keys (they are never stored): pass
        `api_key` and `secret` (and `password` where the exchange needs one); without them `ConflictError`
        (`CREDENTIALS_REQUIRED`).
        """
        keys = {k: v for k, v in (("apiKey", api_key), ("secret", secret), ("password", password)) if v}
        return await self._call(api.session_control(run_id, "resume", keys))

    async def cancel_order(self, run_id: str, order_id: int) -> RunResponse:
        """Cancel one working order of a session; `NotFoundError` (`ORDER_NOT_FOUND`) when it is not open."""
        return await self._call(api.cancel_order(run_id, order_id))

    async def close_position(self, run_id: str, symbol: str) -> RunResponse:
        """Close a session's position in `symbol` at the last close; `ConflictError` (`NO_POSITION`) if none."""
        return await self._call(api.close_position(run_id, symbol))

    async def session_results(
        self, run_id: str, *, max_points: int | None = None, limit: int | None = None, offset: int = 0
    ) -> Results:
        """A session's results so far (or final), in a backtest's document shape, sliced like `get_results`."""
        return await self._call(api.run_results(run_id, max_points, limit, offset))

    async def get_balance(self, run_id: str | None = None) -> dict[str, float]:
        """Balances by currency of a session: `run_id`, else the newest active session this client started.

        Without `run_id` and with no such session, raises `NoActiveRunError` (pass `run_id`).
        """
        if run_id is not None:
            return dict((await self.session_status(run_id)).balances)
        for candidate in reversed(list(self._sessions)):
            try:
                status = await self.session_status(candidate)
            except NotFoundError:
                continue  # deleted, or a server that does not know it (yet)
            if status.is_active:
                return dict(status.balances)
            if status.is_finished and candidate in self._sessions:
                self._sessions.remove(candidate)  # an ended session never runs again
        raise api.no_current_session(self._last_session)

    async def watch_session(
        self, run_id: str, *, interval: float = 1.0, timeout: float | None = None
    ) -> AsyncIterator[SessionStatus]:
        """Poll a session's status every `interval` seconds and yield each one, the final (ended) one last.

        With `timeout`, raises `TimeoutError` if the session is still active that many seconds later.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.session_status(run_id)
            yield status
            if api.session_finished(status, deadline, timeout):
                return
            await asyncio.sleep(interval)

    # Results and history -----------------------------------------------------------------------------

    async def get_results(self, *, max_points: int | None = None, limit: int | None = None, offset: int = 0) -> Results:
        """Results of the current or last run: equity thinned to `max_points`, trades and orders paged."""
        return await self._call(api.results(max_points, limit, offset))

    async def list_runs(
        self,
        *,
        status: str | None = None,
        mode: str | None = None,
        strategy: str | None = None,
        symbol: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> RunList:
        """Run history, newest first, filtered by status, mode, strategy and symbol."""
        return await self._call(api.list_runs(status, mode, strategy, symbol, limit, offset))

    async def alerts(
        self, *, run_id: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> AlertList:
        """Alerts of your runs, newest first, filtered by run and kind (`GET /alerts`)."""
        return await self._call(api.alerts(run_id, kind, limit, offset))

    async def start_sweep(self, config: SweepRequest | Mapping[str, Any] | None = None, /, **fields: Any) -> Sweep:
        """Start a parameter sweep on the server (202); it runs in the server's backtest workers."""
        return await self._call(api.start_sweep(api.request_body(config, fields)))

    async def get_sweep(self, sweep_id: str) -> Sweep:
        """A sweep's status and progress (done, total, ETA)."""
        return await self._call(api.get_sweep(sweep_id))

    async def list_sweeps(self, *, limit: int = 50, offset: int = 0) -> SweepList:
        """Your sweeps, newest first."""
        return await self._call(api.list_sweeps(limit, offset))

    async def sweep_results(
        self, sweep_id: str, *, sort: str | None = None, limit: int = 100, offset: int = 0
    ) -> SweepResults:
        """A page of an ended sweep's rows, best first by `sort` (default: the sweep's)."""
        return await self._call(api.sweep_results(sweep_id, sort, limit, offset))

    async def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancel a sweep (within 2 s), keeping the rows evaluated so far."""
        return await self._call(api.cancel_sweep(sweep_id))

    async def backtest_sweep_row(self, sweep_id: str, rank: int = 1) -> RunResponse:
        """Run the row of `rank` (by the sweep's sort) as an ordinary backtest in your runner slot."""
        return await self._call(api.backtest_sweep_row(sweep_id, rank))

    async def wait_for_sweep(
        self, sweep_id: str, *, timeout: float | None = 600.0, poll_interval: float = 0.25
    ) -> Sweep:
        """Poll a sweep until it completed, was cancelled or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = await self.get_sweep(sweep_id)
            if sweep.finished:
                return sweep
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise api.sweep_wait_timeout(sweep, timeout or 0.0)
            await asyncio.sleep(poll_interval if left is None else min(poll_interval, left))

    async def start_walkforward(
        self, config: WalkForwardRequest | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> WalkForward:
        """Start a walk-forward (or, with `cpcv`, a combinatorial purged CV) on the server (202)."""
        return await self._call(api.start_walkforward(api.request_body(config, fields)))

    async def get_walkforward(self, walkforward_id: str) -> WalkForward:
        """A walk-forward's status, progress (windows done) and, once completed, its report."""
        return await self._call(api.get_walkforward(walkforward_id))

    async def list_walkforwards(self, *, limit: int = 50, offset: int = 0) -> WalkForwardList:
        """Your walk-forwards, newest first (without their reports)."""
        return await self._call(api.list_walkforwards(limit, offset))

    async def cancel_walkforward(self, walkforward_id: str) -> WalkForward:
        """Cancel a walk-forward: it stops after the sweep chunk (or test backtest) in hand, without a report."""
        return await self._call(api.cancel_walkforward(walkforward_id))

    async def wait_for_walkforward(
        self, walkforward_id: str, *, timeout: float | None = 600.0, poll_interval: float = 0.25
    ) -> WalkForward:
        """Poll a walk-forward until it completed, was cancelled or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wf = await self.get_walkforward(walkforward_id)
            if wf.finished:
                return wf
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise api.walkforward_wait_timeout(wf, timeout or 0.0)
            await asyncio.sleep(poll_interval if left is None else min(poll_interval, left))

    async def get_run(self, run_id: str) -> RunSummary:
        """One run's record."""
        return await self._call(api.get_run(run_id))

    async def get_run_results(
        self, run_id: str, *, max_points: int | None = None, limit: int | None = None, offset: int = 0
    ) -> Results:
        """A run's results, sliced like `get_results`."""
        return await self._call(api.run_results(run_id, max_points, limit, offset))

    async def rerun(self, run_id: str) -> RunResponse:
        """Run a stored backtest again with the same inputs; when done, `get_run_results(new_id).rerun` compares."""
        return await self._call(api.rerun(run_id))

    async def delete_run(self, run_id: str) -> None:
        """Delete a finished run and its results."""
        await self._call(api.delete_run(run_id))

    # Dashboard: a run's chart, round trips and breakdowns; data and logs ------------------------------

    async def run_candles(
        self,
        run_id: str,
        *,
        symbol: str | None = None,
        start: TimeArg = None,
        end: TimeArg = None,
        max_points: int | None = None,
        max_markers: int | None = None,
    ) -> RunCandles:
        """A run's candles of one symbol (OHLC buckets beyond `max_points`), its round trips and plotted indicators."""
        return await self._call(dash.run_candles(run_id, symbol, start, end, max_points, max_markers))

    async def recent_candles(
        self, run_id: str, *, symbol: str | None = None, limit: int | None = None
    ) -> SessionCandles:
        """A session's latest closed candles of one symbol: a live chart's history before its candle stream."""
        return await self._call(dash.recent_candles(run_id, symbol, limit))

    async def round_trips(
        self, run_id: str, *, sort: str = "exit_time", order: str = "asc", limit: int = 100, offset: int = 0
    ) -> RoundTripList:
        """A run's round-trip trades, sorted by a column (`pnl`, `duration`, ...) and paged."""
        return await self._call(dash.round_trips(run_id, sort, order, limit, offset))

    async def breakdowns(self, run_id: str) -> Breakdowns:
        """A run's per-symbol figures and monthly returns."""
        return await self._call(dash.breakdowns(run_id))

    async def get_candles(
        self,
        symbol: str,
        *,
        exchange: str | None = None,
        timeframe: str = "1h",
        start: TimeArg = None,
        end: TimeArg = None,
        limit: int = 1000,
    ) -> StoredCandles:
        """Stored candles (generated for `synthetic`); nothing is downloaded."""
        return await self._call(dash.candles(symbol, exchange, timeframe, start, end, limit))

    async def get_markets(self, exchange: str, *, q: str | None = None, limit: int = 50) -> MarketList:
        """An exchange's markets whose symbol contains `q` (any case)."""
        return await self._call(dash.markets(exchange, q, limit))

    async def list_candle_sets(self, *, limit: int = 200, offset: int = 0) -> CandleSetList:
        """The stored candle sets with their ranges and gaps."""
        return await self._call(dash.candle_sets(limit, offset))

    async def start_download(
        self, exchange: str, symbol: str, *, timeframe: str = "1h", start: TimeArg, end: TimeArg = None
    ) -> DownloadJob:
        """Start a download job for what the store lacks of [start, end); poll it with `get_download`."""
        return await self._call(dash.start_download(exchange, symbol, timeframe, start, end))

    async def get_download(self, job_id: str) -> DownloadJob:
        """A download job's status and progress."""
        return await self._call(dash.download(job_id))

    async def cancel_download(self, job_id: str) -> DownloadJob:
        """Cancel a download job (it stops after its current chunk)."""
        return await self._call(dash.cancel_download(job_id))

    async def get_logs(self, *, level: str = "INFO", run_id: str | None = None, limit: int = 200) -> LogTail:
        """The server's recent log lines (admins only when auth is on)."""
        return await self._call(dash.logs(level, run_id, limit))

    @overload
    async def trades_csv(self, run_id: str, *, as_text: Literal[False] = False) -> bytes: ...
    @overload
    async def trades_csv(self, run_id: str, *, as_text: Literal[True]) -> str: ...
    async def trades_csv(self, run_id: str, *, as_text: bool = False) -> bytes | str:
        """Every fill of a run as CSV (bytes, or text with `as_text=True`)."""
        data = await self._call(api.csv_file(run_id, "trades.csv"))
        return data.decode("utf-8") if as_text else data

    @overload
    async def equity_csv(self, run_id: str, *, as_text: Literal[False] = False) -> bytes: ...
    @overload
    async def equity_csv(self, run_id: str, *, as_text: Literal[True]) -> str: ...
    async def equity_csv(self, run_id: str, *, as_text: bool = False) -> bytes | str:
        """The full equity curve of a run as CSV (bytes, or text with `as_text=True`)."""
        data = await self._call(api.csv_file(run_id, "equity.csv"))
        return data.decode("utf-8") if as_text else data

    # Streams -----------------------------------------------------------------------------------------

    def stream_status(
        self, *, heartbeats: bool = False, run_id: str | None = None, candles: bool = False, since: int | None = None
    ) -> AsyncEventStream:
        """`async for` over `/ws/status` events (`snapshot` first); use `async with` to close the socket."""
        # `candles`: each closed candle of the followed sessions too (`Event.candle()`). `since`: with `run_id`,
        # resume after that event number (each event of one run carries its `seq`), missing nothing.
        return AsyncEventStream(
            self._config,
            heartbeats=heartbeats,
            open_timeout=self._config.timeout,
            run_id=run_id,
            candles=candles,
            since=since,
        )

    def subscribe(
        self,
        channels: Iterable[str] = ("status",),
        symbol: str | None = None,
        *,
        heartbeats: bool = False,
    ) -> AsyncChannelStream:
        """`async for` over `(channel, data)` messages of `/ws` channels (status, orders, trades, equity, alerts)."""
        return AsyncChannelStream(
            self._config, channels, symbol, heartbeats=heartbeats, open_timeout=self._config.timeout
        )

    def stream_alerts(self, *, heartbeats: bool = False) -> AsyncChannelStream:
        """Alerts as they are raised: the `alerts` channel of `/ws` (each message's `data` is an `Alert`'s fields)."""
        return self.subscribe(("alerts",), heartbeats=heartbeats)
