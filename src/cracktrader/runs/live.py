"""Live trading on an exchange's sandbox: the request, the checks before trading, reconciliation, the venue loops.

`prepare_live` validates a `mode: "live"` request and builds the session and its (public) candle feed;
`LiveRuntime.open` signs in, checks markets, credentials and the clock, reconciles with the venue, and then
follows the session's orders over the user-data socket (REST while it is down) and every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cracktrader.brokers.live import LiveOrders, OrderIntent
from cracktrader.brokers.live_session import LiveSession
from cracktrader.brokers.orders import ManagedOrder, OrderEvent, OrderStatus, TradeFill
from cracktrader.brokers.risk import RiskGate, RiskLimits, parse_risk_limits
from cracktrader.clock import Clock
from cracktrader.data.feeds.ccxt_feed import CcxtFeed
from cracktrader.data.sources.ccxt_source import make_async_exchange, sandbox_settings
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.db.live_store import LiveOrderStore
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.rules import MarketRules, amount_to_precision
from cracktrader.engine.strategy import Strategy
from cracktrader.engine.window import window_length
from cracktrader.errors import CracktraderError, UserInputError
from cracktrader.exchanges.client_ids import is_own, session_tag
from cracktrader.exchanges.credentials import ExchangeCredentials, required_fields
from cracktrader.exchanges.markets import rules_from_market
from cracktrader.exchanges.order_calls import OrderCalls, RateGate
from cracktrader.exchanges.socket_futures import quiet_rejected_socket_futures
from cracktrader.runs.alerts import AlertDetails, AlertKind, RunAlerts
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.live_accounts import Account, Accounts, account_key
from cracktrader.runs.sanitize import EXCHANGE_CONFIG_ALLOWLIST, exchange_client_config
from cracktrader.runs.strategy_errors import strategy_errors
from cracktrader.runs.trade import PaperPlan, _quote
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.registry import load_registry

log = logging.getLogger(__name__)

# While running: orders not updated for this long are looked up, every RECONCILE_EVERY_MS.
RECONCILE_EVERY_MS = 30_000
STALE_ORDER_MS = 10_000
# The clock offset is measured again this often and given to ccxt.
CLOCK_EVERY_MS = 10 * 60_000
# The dead man's switch (ccxt's cancelAllOrdersAfter): the venue cancels the session's orders this long after the
# last refresh, refreshed three times within it.
DEAD_MAN_TIMEOUT_MS = 60_000
DEAD_MAN_REFRESH_MS = 20_000
# While the user-data socket is down, orders are followed over REST this often.
REST_POLL_MS = 2_000
# Between attempts to reopen the user-data socket.
SOCKET_RETRY_MS = 1_000
# A user-data socket down for longer than this raises an alert (once per outage).
DISCONNECT_ALERT_MS = 60_000


class LiveRequestError(UserInputError):
    """A `mode: "live"` request that cannot run (no sandbox, no keys, no capital)."""

    code = "INVALID_LIVE_REQUEST"
    status_code = 422


class LiveTradingDisabledError(CracktraderError):
    """A real-money live request on a server where the operator has not enabled real money."""

    code = "LIVE_TRADING_DISABLED"
    status_code = 403


# Of `exchange_config.risk`, what a real-money session must set beyond its capital: a cap on its size, a cap on
# its daily loss (either of each pair).
REAL_MONEY_LIMITS = (("max_position_notional", "max_order_notional"), ("daily_loss_limit", "daily_loss_fraction"))


class LiveCheckError(CracktraderError):
    """A check before trading failed; `check` is its code (AUTH_FAILED, CLOCK_SKEW, INVALID_SYMBOL, ...)."""

    status_code = 422

    def __init__(self, check: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"check": check, **(details or {})})
        self.check = check

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.check, "message": self.message, "details": self.details}


@dataclass(slots=True)
class LivePlan(PaperPlan):
    """A live session ready to open: the paper plan's parts, the capital and the keys (held in memory only)."""

    capital: float = 0.0
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    settings: Settings | None = None


def prepare_live(
    config: LiveConfig,
    *,
    clock: Clock,
    settings: Settings | None = None,
    strategy_cls: type[Strategy] | None = None,
    resuming: bool = False,
    stored: ExchangeCredentials | None = None,
) -> LivePlan:
    """Validate a live request and build its session and candle feed; nothing is signed yet.

    `resuming`: a stored session taken over after a restart. Inline keys were never stored, so it waits for them
    (`supply_credentials`) instead of requiring them now. `stored`: the opened credentials the request names
    (`exchange_config.credentials`, see `resolve_stored`); a restart opens them again and waits for nothing.

    Blocking (the warm-up window is read over REST): the server calls it in a thread.
    """
    base = settings or get_settings()
    ec = config.exchange_config
    exchange, limits, capital = check_live_request(config, base)
    credentials = stored_credentials(exchange, ec, stored)
    # The exchange's test network only when asked for: a real-money session talks to the real one.
    run_settings = sandbox_settings(base, exchange) if ec.get("sandbox") is True else base
    tf = parse_timeframe(config.timeframe)
    quote = _quote(config.symbols)
    symbols = tuple(config.symbols)
    feed = CcxtFeed(exchange, symbols, tf, clock, settings=run_settings)  # public: the feed signs nothing
    if credentials is None:
        credentials = {} if resuming else credentials_of(exchange, ec, base)
    cls = strategy_cls or load_registry(base).get(config.strategy_class or config.strategy_name)
    with strategy_errors(cls):
        strategy = cls(config.strategy_params)
    sim = SimSettings(initial_cash=capital, maker_fee=base.default_fee_rate,
                      taker_fee=base.default_fee_rate)  # fmt: skip
    session = LiveSession(
        strategy, symbols, sim, tf.periods_per_year, risk=RiskGate(limits, clock.now_ms), timeframe_ms=tf.ms
    )
    history = [] if resuming else feed.history(window_length(strategy))
    return LivePlan(session, feed, history, tf, quote, replay=False, capital=capital,
                    credentials=credentials, settings=run_settings)  # fmt: skip


def check_live_request(config: LiveConfig, settings: Settings | None = None) -> tuple[str, RiskLimits, float]:
    """What a live request must say before anything is opened or built: its exchange id, risk limits, capital."""
    ec = config.exchange_config
    exchange = config.exchange.strip().lower()
    if exchange == "synthetic":
        raise LiveRequestError(
            "The synthetic exchange has no orders: live trading needs a ccxt exchange's sandbox "
            "(use mode paper with synthetic)",
            details={"field": "exchange"},
        )
    sandbox = ec.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise LiveRequestError(
            "exchange_config.sandbox is true (the exchange's test environment) or false (real money)",
            details={"field": "exchange_config.sandbox", "accepted": [True, False]},
        )
    if not sandbox:
        _check_real_money(ec, settings or get_settings())
    derivatives = [s for s in config.symbols if ":" in s]
    if derivatives:
        raise LiveCheckError(
            "UNSUPPORTED_MARKET",
            f"Live trading supports spot markets only; {', '.join(derivatives)} is a derivative (swap, future or "
            "option) symbol",
            details={"symbols": derivatives},
        )
    if stored_credentials_name(ec) is not None:
        refuse_endpoint_overrides(ec)
    limits = parse_risk_limits(ec)
    if limits.capital is None:
        raise LiveRequestError(
            "Live trading needs exchange_config.risk.capital: the quote currency this session may trade with "
            "(a session never trades the whole account)",
            details={"field": "exchange_config.risk.capital"},
        )
    return exchange, limits, float(limits.capital)


def _check_real_money(ec: dict[str, Any], settings: Settings) -> None:
    """A real-money request: enabled on this server, on stored credentials, with size and loss limits set."""
    if settings.live_trading != "enabled":
        raise LiveTradingDisabledError(
            "Real-money trading is disabled on this server: its operator enables it with "
            "CRACKTRADER_LIVE_TRADING=enabled (use exchange_config.sandbox: true for the exchange's test environment)",
            details={"setting": "CRACKTRADER_LIVE_TRADING", "accepted": ["enabled"]},
        )
    if stored_credentials_name(ec) is None:
        raise LiveRequestError(
            "Real-money sessions use stored credentials only (so that a restart can resume them): store them with "
            'POST /api/v1/credentials or `cracktrader credentials add`, then name them: "credentials": "NAME"',
            details={"field": "exchange_config.credentials"},
        )
    raw = ec.get("risk")
    risk: dict[str, Any] = raw if isinstance(raw, dict) else {}
    missing = [" or ".join(pair) for pair in REAL_MONEY_LIMITS if all(risk.get(k) is None for k in pair)]
    if missing:
        raise LiveRequestError(
            "A real-money session needs its risk limits set in exchange_config.risk beyond its capital: "
            + "; ".join(missing),
            details={"field": "exchange_config.risk", "missing": missing},
        )


def stored_credentials_name(exchange_config: dict[str, Any]) -> str | None:
    """The name of the stored credentials a request uses (`"credentials": "NAME"` or `{"name": "NAME"}`), if any."""
    ref = exchange_config.get("credentials")
    if ref is None:
        return None
    name = ref.get("name") if isinstance(ref, dict) else ref
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise LiveRequestError(
            'exchange_config.credentials names stored credentials: "NAME" or {"name": "NAME"} (see GET '
            "/api/v1/credentials)",
            details={"field": "exchange_config.credentials"},
        )
    return name


def refuse_endpoint_overrides(exchange_config: dict[str, Any]) -> None:
    """Beside stored credentials, exchange_config holds only the keys known to be harmless.

    Nothing in a request may change where stored keys are sent: an allowlist, as a list of URL, host and proxy
    names to refuse always misses one. Inline keys are refused too (one source of keys per session).
    """
    refused = sorted(str(k) for k in exchange_config if k not in EXCHANGE_CONFIG_ALLOWLIST)
    if refused:
        raise LiveRequestError(
            f"With stored credentials, exchange_config may hold only {', '.join(EXCHANGE_CONFIG_ALLOWLIST)}; "
            f"refused: {', '.join(refused)} (endpoints come from the server's configuration, keys from the store)",
            details={"field": "exchange_config", "refused": refused, "accepted": list(EXCHANGE_CONFIG_ALLOWLIST)},
        )


def stored_credentials(
    exchange: str, exchange_config: dict[str, Any], stored: ExchangeCredentials | None
) -> dict[str, str] | None:
    """The keys of the stored credentials a request names (None: it names none and brings its own)."""
    name = stored_credentials_name(exchange_config)
    if name is None:
        return None
    refuse_endpoint_overrides(exchange_config)
    if stored is None or stored.name not in (None, name):
        raise LiveRequestError(f"Stored credentials {name!r} were not opened for this request", details={"name": name})
    if stored.exchange != exchange:
        raise LiveRequestError(
            f"Stored credentials {name!r} are for {stored.exchange}, not {exchange}",
            details={"name": name, "exchange": stored.exchange},
        )
    return stored.as_ccxt()


def credentials_of(exchange: str, exchange_config: dict[str, Any], settings: Settings | None = None) -> dict[str, str]:
    """The keys `exchange` needs (ccxt's requiredCredentials) from a request; held in memory only."""
    names = required_fields(exchange, settings)
    creds = {k: v for k, v in exchange_client_config(exchange_config, names).items() if k in names}
    missing = [n for n in names if not creds.get(n)]
    if missing:
        raise LiveRequestError(
            f"Live trading on {exchange} needs {', '.join(missing)} in exchange_config (used for this session only, "
            "never stored)",
            details={"missing": missing},
        )
    return {k: str(v) for k, v in creds.items()}


@dataclass(frozen=True, slots=True)
class StoredLive:
    """A resumed live session's rows: its orders (with their intents and watch ends) and its fills in order."""

    orders: list[tuple[ManagedOrder, OrderIntent, int | None]]
    fills: list[TradeFill]


async def load_stored(store: LiveOrderStore, run_id: str) -> StoredLive:
    """The stored orders and fills of a live session."""
    rows = await store.load(run_id)
    orders = [
        (r.order, OrderIntent(r.order.symbol, r.order.side, r.order.type, r.order.amount, r.order.price,
                              intent=r.intent, stop_loss=r.stop_loss, take_profit=r.take_profit, bar_ms=r.bar_ms),
         r.watch_until)
        for r in rows
    ]  # fmt: skip
    return StoredLive(orders, await store.fills(run_id))


@dataclass(slots=True)
class ReconcileReport:
    """What a reconciliation found, by kind (shown in `/status/detailed`)."""

    looked_up: int = 0
    updated: int = 0
    missed_fills: int = 0
    adopted: int = 0
    external_orders: int = 0
    unconfirmed: int = 0
    at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "looked_up": self.looked_up,
            "updated": self.updated,
            "missed_fills": self.missed_fills,
            "adopted": self.adopted,
            "external_orders": self.external_orders,
            "unconfirmed": self.unconfirmed,
            "at": self.at,
        }


class LiveRuntime:
    """A live session's link to the venue: the checks, reconciliation, the user-data loops and the order pump."""

    def __init__(
        self,
        plan: LivePlan,
        *,
        run_id: str,
        token: Callable[[], int],
        store: LiveOrderStore,
        clock: Clock,
        on_event: Callable[[OrderEvent], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        accounts: Accounts | None = None,
        alerts: RunAlerts | None = None,
    ) -> None:
        self.plan = plan
        self.accounts = accounts if accounts is not None else Accounts()
        self.account: Account | None = None
        self._account_key = ""
        self.session: LiveSession = plan.session  # type: ignore[assignment]
        self.run_id = run_id
        self.clock = clock
        self.store = store
        self._token = token
        self._on_event = on_event
        self._on_error = on_error
        self.client: Any = None
        self.calls: OrderCalls | None = None
        self.orders: LiveOrders | None = None
        self.report = ReconcileReport()
        self.reconciliations = 0
        self.socket_up = False
        self.balances: dict[str, float] = {}
        self.drift: dict[str, float] = {}
        self.free: dict[str, float] = {}  # the account's free balances at the last read
        self.last_alive_ms: int | None = None  # a resumed session: when its last server last saw it (session clock)
        self.dead_man = "off"  # armed | unsupported | failed
        self.offline_cancels = 0  # resting orders cancelled at a resume that came too late for them
        self.clock_offset_ms: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.credentials_ready = asyncio.Event()
        self.alerts = alerts or RunAlerts(None, run_id, None, clock)
        self._unconfirmed: set[str] = set()  # orders last seen rejected_unconfirmed: any later state revives them
        self._external_seen: set[str] = set()  # external orders already alerted on
        self._reconcile_failing = False  # the last running reconciliation failed (alerted once per streak)
        self._disconnect_alerted = False  # this outage of the user-data socket was alerted on

    # --- opening ------------------------------------------------------------------------------------------------

    async def open(self, stored: StoredLive | None) -> None:
        """Sign in, check, restore the stored orders, reconcile; raises LiveCheckError with the failing check."""
        import ccxt

        plan = self.plan
        if not plan.credentials:
            await self.credentials_ready.wait()  # a resumed session: its keys come with POST /runs/{id}/resume
        exchange = plan_exchange(plan)
        assert plan.settings is not None
        self.client = make_async_exchange(exchange, plan.settings)
        for k, v in plan.credentials.items():
            setattr(self.client, k, v)
        gate = RateGate(self.clock, on_ban=self._banned)
        self.calls = OrderCalls(self.client, exchange, clock=self.clock, gate=gate)
        try:
            markets = await self.client.load_markets()
        except ccxt.BaseError as exc:
            raise LiveCheckError("EXCHANGE_UNAVAILABLE", f"Could not load {exchange}'s markets: {exc}") from exc
        rules = {s: self._market_rules(markets, s) for s in self.session.symbols}
        await self._check_clock()  # before the first signed request: a skew gets its own clear error
        try:
            balance = await self.client.fetch_balance()
        except ccxt.AuthenticationError as exc:
            raise LiveCheckError("AUTH_FAILED", f"The exchange refused the credentials: {_short(exc)}") from exc
        except ccxt.PermissionDenied as exc:
            raise LiveCheckError("AUTH_FAILED", f"The credentials may not trade: {_short(exc)}") from exc
        except ccxt.InvalidNonce as exc:
            raise LiveCheckError("CLOCK_SKEW", f"The exchange refused our timestamps: {_short(exc)}") from exc
        except ccxt.BaseError as exc:
            raise LiveCheckError("EXCHANGE_UNAVAILABLE", f"Could not read the balance: {_short(exc)}") from exc
        self.orders = LiveOrders(
            run_id=self.run_id,
            token=self._token,
            exchange=exchange,
            tag=session_tag(self.run_id),
            calls=self.calls,
            store=self.store,
            clock=self.clock,
            portfolio=self.session,
            rules=rules,
            on_event=self._event,
        )
        self.session.orders = self.orders
        await self.store.hold()
        self.session.sim.reserve_ids(0)
        if stored is not None:
            self.orders.restore(stored.orders, stored.fills)
            self._unconfirmed = {o.client_order_id for o in self.orders.ledger
                                 if o.status is OrderStatus.REJECTED_UNCONFIRMED}  # fmt: skip
            self.session.sim.reserve_ids(self.orders.last_sequence)
            self._book_unbooked(stored)
        try:
            await self.reconcile(start=True)
        except ccxt.BaseError as exc:
            self.alerts.raise_(
                AlertKind.RECONCILIATION_FAILED,
                f"Reconciliation with {exchange} before trading failed: {_short(exc)}; the session does not start",
                AlertDetails(code=type(exc).__name__, error=_short(exc)),
            )
            raise LiveCheckError("RECONCILIATION_FAILED", f"Reconciliation with {exchange} failed: {exc}") from exc
        self._balances(balance)
        entry = plan.settings.exchange_options.get(exchange, {})
        where = entry.get("sandbox_base_url", "sandbox") if entry.get("sandbox") else "live"
        self._account_key = account_key(exchange, plan.credentials, str(where))
        self.account = self.accounts.join(self._account_key, self, self.balances, self.held())
        await self._arm_dead_man()
        if self.dead_man != "armed":
            await self._cancel_if_offline_too_long(plan.settings.max_offline_s)

    async def _arm_dead_man(self) -> None:
        """Arm the venue's dead man's switch where ccxt has one: if this server goes silent, the venue cancels."""
        if not self.client.has.get("cancelAllOrdersAfter"):
            self.dead_man = "unsupported"
            return
        try:
            await self.client.cancel_all_orders_after(DEAD_MAN_TIMEOUT_MS)
        except Exception as exc:
            log.warning("live %s: the dead man's switch could not be armed: %s", self.run_id, _short(exc))
            self.dead_man = "failed"
            return
        self.dead_man = "armed"

    async def _cancel_if_offline_too_long(self, max_offline_s: float) -> None:
        """A resumed session down longer than `max_offline_s` on a venue without a dead man's switch: its resting
        orders were decided on a market that has moved; cancel them before the strategy runs again."""
        assert self.orders is not None
        if self.last_alive_ms is None:
            return
        offline_ms = self.clock.now_ms() - self.last_alive_ms
        if offline_ms <= max_offline_s * 1000:
            return
        working = [o.client_order_id for o in self.orders.ledger.open_orders() if o.is_working]
        log.warning("live %s: down %.0f s (over %.0f s, no dead man's switch): cancelling %d resting orders",
                    self.run_id, offline_ms / 1000, max_offline_s, len(working))  # fmt: skip
        for cid in working:
            await self.orders.cancel(cid)
        self.offline_cancels = len(working)

    def _book_unbooked(self, stored: StoredLive) -> None:
        """Book into the restored simulator the fills stored after its last saved bar (they are in order)."""
        assert self.orders is not None
        for fill in stored.fills[self.session.fills_booked :]:
            cid = fill.client_order_id
            if cid is not None and cid in self.orders.ledger:
                self.session.book(self.orders.ledger.get(cid), fill, self.orders.intents.get(cid))

    def supply_credentials(self, credentials: dict[str, str]) -> None:
        """Give a resumed session its keys (used in memory only); it then signs in, reconciles and trades."""
        self.plan.credentials = dict(credentials)
        self.credentials_ready.set()

    @property
    def awaiting_credentials(self) -> bool:
        """A resumed session waiting for its keys."""
        return not self.plan.credentials

    def _market_rules(self, markets: dict[str, Any], symbol: str) -> MarketRules:
        market = markets.get(symbol)
        if market is None:
            raise LiveCheckError(
                "INVALID_SYMBOL", f"{symbol} is not a market on {plan_exchange(self.plan)}", details={"symbol": symbol}
            )
        if not market.get("spot") or market.get("type") not in (None, "spot"):
            raise LiveCheckError(
                "UNSUPPORTED_MARKET",
                f"{symbol} is a {market.get('type')} market; live trading supports spot markets only",
                details={"symbol": symbol, "type": market.get("type")},
            )
        if market.get("active") is False:
            raise LiveCheckError("INVALID_SYMBOL", f"{symbol} is not trading now", details={"symbol": symbol})
        return rules_from_market(market, int(self.client.precisionMode), default_fee=0.001)

    async def _check_clock(self) -> None:
        assert self.calls is not None
        import ccxt

        try:
            offset = await self.calls.measure_clock_offset()
        except ccxt.BaseError as exc:
            raise LiveCheckError("EXCHANGE_UNAVAILABLE", f"Could not read the exchange's time: {_short(exc)}") from exc
        self.clock_offset_ms = offset
        limit = (self.plan.settings or get_settings()).max_clock_skew_ms
        if abs(offset) > limit:
            raise LiveCheckError(
                "CLOCK_SKEW",
                f"The exchange's clock is {offset:+d} ms from ours, more than CRACKTRADER_MAX_CLOCK_SKEW_MS "
                f"({limit} ms): synchronise this machine's clock (NTP)",
                details={"offset_ms": offset, "max_clock_skew_ms": limit},
            )
        await self.calls.resync_clock()

    # --- reconciliation -----------------------------------------------------------------------------------------

    async def reconcile(self, *, start: bool = False, stale_ms: int = 0) -> ReconcileReport:
        """Look up the session's orders not final (all at start; else those not updated for `stale_ms`), adopt its
        own orders found open, count the rest of the account as external, and fill in missed trades.
        """
        assert self.orders is not None and self.calls is not None
        orders, calls = self.orders, self.calls
        report = ReconcileReport(at=self.clock.now_ms())
        now = self.clock.now_ms()
        for order in list(orders.ledger):
            watched = (
                order.status is OrderStatus.REJECTED_UNCONFIRMED
                and orders.watch_until.get(order.client_order_id, 0) > now
            )
            if order.status.is_final or (order.status is OrderStatus.REJECTED_UNCONFIRMED and not watched):
                continue
            if orders.busy(order.client_order_id):
                continue  # its send or cancel is on its way here: that task settles it
            if not start and now - (order.updated_at or 0) < stale_ms and not watched:
                continue
            report.looked_up += 1
            before = (order.status, order.filled_qty)
            if order.status in (OrderStatus.PENDING_NEW, OrderStatus.SUBMITTED, OrderStatus.UNKNOWN):
                # Stored before its send and never confirmed: it may or may not have gone out. Found, it takes the
                # venue's state; after the backoff, unconfirmed.
                if order.status is not OrderStatus.UNKNOWN:
                    await orders.mark_unknown(order, "RESTARTED")
                await orders.resolve_unknown(order.client_order_id)
            else:
                snap = await calls.lookup(order.symbol, order.client_order_id)
                if snap is not None:
                    await orders.apply_snapshot(order, snap)
            if order.status is OrderStatus.REJECTED_UNCONFIRMED and before[0] is not OrderStatus.REJECTED_UNCONFIRMED:
                report.unconfirmed += 1
            if (order.status, order.filled_qty) != before:
                report.updated += 1
        external: list[dict[str, Any]] = []
        for symbol in self.session.symbols:
            for snap in await calls.open_orders(symbol):
                cid = snap.get("clientOrderId")
                if cid in orders.ledger:
                    continue
                if is_own(cid, orders.tag):
                    await orders.adopt(snap)
                    report.adopted += 1
                else:
                    report.external_orders += 1
                    external.append(snap)
            since = orders.last_fill_ms(symbol)
            if since is None:
                since = min((o.created_at for o in orders.ledger if o.symbol == symbol), default=None)
            if since is not None:
                report.missed_fills += await orders.apply_trades(await calls.trades(symbol, since))
        self.report = report
        self.reconciliations += 1
        self._alert_external(external)
        return report

    def _alert_external(self, found: list[dict[str, Any]]) -> None:
        """One alert for the orders on the account that are not the session's and were not alerted on before."""
        new = [s for s in found if str(s.get("id")) not in self._external_seen]
        if not new:
            return
        ids = [str(s.get("id")) for s in new]
        self._external_seen.update(ids)
        symbols = sorted({str(s.get("symbol")) for s in new})
        self.alerts.raise_(
            AlertKind.EXTERNAL_ORDER,
            f"{len(ids)} order(s) on the account that this session did not place ({', '.join(symbols)}): left "
            "untouched, but they share its balance",
            AlertDetails(symbol=symbols[0] if len(symbols) == 1 else None, external_orders=ids),
        )

    # --- balances -----------------------------------------------------------------------------------------------

    def _balances(self, balance: dict[str, Any]) -> None:
        total = balance.get("total") or {}
        self.balances = {k: float(v) for k, v in total.items() if isinstance(v, int | float)}
        free = balance.get("free") or {}
        self.free = {k: float(v) for k, v in free.items() if isinstance(v, int | float)}

    def held(self) -> dict[str, float]:
        """What the session holds of each base asset (the sum over its symbols of that base)."""
        out: dict[str, float] = {}
        for symbol in self.session.symbols:
            base = symbol.split("/")[0]
            out[base] = out.get(base, 0.0) + self.session.position(symbol)
        return out

    async def check_balances(self) -> dict[str, float]:
        """Compare the account's base assets with the baseline plus the session's positions; beyond one lot, drift."""
        drift = await self._drift()
        if drift:
            # A fill the venue already counts may not be booked here yet (a send in flight, a push on its way):
            # let the sends settle, catch up on the venue's orders and trades, and read again. Only a difference
            # that stays is drift. A socket's fill the reconcile skips as applied may still be being stored and
            # booked: wait for that too.
            assert self.orders is not None
            await self.settle(5.0)
            await self.reconcile(stale_ms=0)
            await self.orders.fills_stored(5.0)
            drift = await self._drift()
        if drift and set(drift) != set(self.drift):
            self.alerts.raise_(
                AlertKind.BALANCE_DRIFT,
                "The account's balance differs from what the session expects by more than a lot ("
                + ", ".join(f"{k} {v:+g}" for k, v in sorted(drift.items()))
                + "): no new entries until it is back",
                AlertDetails(drift=dict(drift)),
            )
        self.drift = drift
        gate = self.session.risk
        if drift:
            if gate is not None:
                gate.condition.add("BALANCE_DRIFT")
            self.session.no_entries_reason = "BALANCE_DRIFT"
        else:
            if gate is not None:
                gate.condition.discard("BALANCE_DRIFT")
            if self.session.no_entries_reason == "BALANCE_DRIFT":
                self.session.no_entries_reason = None
        return drift

    async def _drift(self) -> dict[str, float]:
        """Each base asset on the account now less what is expected (the baseline and every session's holding
        on it), where over one lot."""
        assert self.calls is not None and self.orders is not None and self.account is not None
        self._balances(await self.calls.balance())
        drift: dict[str, float] = {}
        for base in self.held():
            diff = self.balances.get(base, 0.0) - self.account.expected(base)
            if abs(diff) > max(self._lot(base), 1e-12):
                drift[base] = diff
        return drift

    def _lot(self, base: str) -> float:
        """The smallest minimum amount among the session's markets of `base` (0 where none is known)."""
        assert self.orders is not None
        lots = []
        for symbol in self.session.symbols:
            rules = self.orders.rules.get(symbol)
            if symbol.split("/")[0] == base and rules is not None and rules.min_amount:
                lots.append(amount_to_precision(rules, rules.min_amount))
        return min(lots, default=0.0)

    # --- running ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start following the venue: the user-data socket, and the periodic check."""
        quiet_rejected_socket_futures(asyncio.get_running_loop())
        self._loops = [
            asyncio.create_task(self._watch_orders(), name=f"live-orders-{self.run_id}"),
            asyncio.create_task(self._watch_trades(), name=f"live-trades-{self.run_id}"),
            asyncio.create_task(self._periodic(), name=f"live-check-{self.run_id}"),
        ]
        if self.dead_man == "armed":
            self._loops.append(asyncio.create_task(self._refresh_dead_man(), name=f"live-dms-{self.run_id}"))

    async def _refresh_dead_man(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now_ms() + DEAD_MAN_REFRESH_MS)
            try:
                await self.client.cancel_all_orders_after(DEAD_MAN_TIMEOUT_MS)
                self.dead_man = "armed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next refresh tries again; the venue's timer still runs meanwhile
                log.warning("live %s: the dead man's switch refresh failed: %s", self.run_id, _short(exc))
                self.dead_man = "failed"

    def pump(self) -> None:
        """Send what the strategy decided in the bar just processed (each send waits its own turn)."""
        if self.orders is None:
            return
        intents, cancels = self.session.take_outbox()
        for intent in intents:
            self._spawn(self.orders.place(intent))
        for cid in cancels:
            self._spawn(self.orders.cancel(cid))

    def place(self, intent: OrderIntent) -> asyncio.Task[Any]:
        """Send one order outside the bar loop (a control's: the risk gate is the strategy's context's)."""
        assert self.orders is not None
        return self._spawn(self.orders.place(intent))

    def cancel(self, client_order_id: str) -> asyncio.Task[Any]:
        """Cancel one order (a control's) outside the bar loop."""
        assert self.orders is not None
        return self._spawn(self.orders.cancel(client_order_id))

    def close_position(self, symbol: str) -> None:
        """Cancel the symbol's working orders and sell its position at market (a control)."""
        assert self.orders is not None
        orders = self.orders

        async def close() -> None:
            for o in orders.ledger.open_orders(symbol):
                if o.is_working:
                    await orders.cancel(o.client_order_id)
            amount = orders.available_position(symbol)
            if amount > 0:
                await orders.place(OrderIntent(symbol, "sell", "market", amount, intent="control"))

        self._spawn(close())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("live %s: order task failed: %r", self.run_id, exc)
            if self._on_error is not None:
                self._on_error(exc)

    async def settle(self, timeout_s: float) -> None:
        """Wait for the sends in flight (each ends in a known, unknown-but-stored, or looked-up state)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _watch_orders(self) -> None:
        await self._watch("watchOrders", self._on_orders)

    async def _watch_trades(self) -> None:
        await self._watch("watchMyTrades", self._on_trades)

    async def _watch(self, capability: str, handle: Callable[[list[dict[str, Any]]], Any]) -> None:
        """One user-data stream: events in; on a drop, REST follows the orders until it is back, then a check."""
        client = self.client
        method = {"watchOrders": "watch_orders", "watchMyTrades": "watch_my_trades"}[capability]
        if not client.has.get(capability):
            await self._poll_forever()
            return
        down = False
        down_since = 0
        while True:
            try:
                events = await getattr(client, method)()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not down:
                    log.warning("live %s: %s dropped (%s); following orders over REST", self.run_id, method, exc)
                    down_since = self.clock.now_ms()
                down = True
                self.socket_up = False
                self._alert_disconnect(method, self.clock.now_ms() - down_since)
                await self._rest_round()
                await self.clock.sleep_until(self.clock.now_ms() + SOCKET_RETRY_MS)
                continue
            if down:
                down = False
                self.socket_up = True
                self._disconnect_alerted = False
                await self._reconcile_round(stale_ms=0)
            self.socket_up = True
            await self._guarded(handle(events))

    async def _poll_forever(self) -> None:
        while True:
            await self._rest_round()
            await self.clock.sleep_until(self.clock.now_ms() + REST_POLL_MS)

    async def _rest_round(self) -> None:
        await self._reconcile_round(stale_ms=0)

    async def _reconcile_round(self, *, stale_ms: int) -> None:
        """A running reconciliation; the first failure of a streak raises an alert, the next round tries again."""
        try:
            await self.reconcile(stale_ms=stale_ms)
        except asyncio.CancelledError:
            raise
        except CracktraderError:
            raise
        except Exception as exc:
            log.warning("live %s: reconciliation failed: %s", self.run_id, _short(exc))
            if not self._reconcile_failing:
                self.alerts.raise_(
                    AlertKind.RECONCILIATION_FAILED,
                    f"Reconciliation with {plan_exchange(self.plan)} failed: {_short(exc)}; it is tried again",
                    AlertDetails(code=type(exc).__name__, error=_short(exc)),
                )
            self._reconcile_failing = True
            return
        self._reconcile_failing = False

    def _alert_disconnect(self, method: str, down_ms: int) -> None:
        """Alert once per outage when the user-data socket has been down for more than DISCONNECT_ALERT_MS."""
        if down_ms <= DISCONNECT_ALERT_MS or self._disconnect_alerted:
            return
        self._disconnect_alerted = True
        self.alerts.raise_(
            AlertKind.STREAM_DISCONNECTED,
            f"The user-data stream ({method}) has been down for {down_ms // 1000} s; orders are followed over REST",
            AlertDetails(stream=method, down_ms=down_ms),
        )

    def _banned(self, until_ms: int) -> None:
        self.alerts.raise_(
            AlertKind.RATE_BANNED,
            f"{plan_exchange(self.plan)} banned this client (418) for {(until_ms - self.clock.now_ms()) // 1000} s: "
            "nothing is sent until it ends",
            AlertDetails(banned_until_ms=until_ms),
        )

    async def _on_orders(self, events: list[dict[str, Any]]) -> None:
        assert self.orders is not None
        for snap in events:
            order = self.orders.owner_of(snap)
            if order is not None:
                await self.orders.apply_snapshot(order, snap)

    async def _on_trades(self, events: list[dict[str, Any]]) -> None:
        assert self.orders is not None
        await self.orders.apply_trades(events)

    async def _periodic(self) -> None:
        last_clock = self.clock.now_ms()
        while True:
            await self.clock.sleep_until(self.clock.now_ms() + RECONCILE_EVERY_MS)
            await self._reconcile_round(stale_ms=STALE_ORDER_MS)
            await self._guarded(self.check_balances())
            if self.clock.now_ms() - last_clock >= CLOCK_EVERY_MS and self.calls is not None:
                last_clock = self.clock.now_ms()
                await self._guarded(self.calls.resync_clock())

    async def _guarded(self, coro: Any) -> Any:
        """Run a venue check; a network failure is logged and the next round tries again."""
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except CracktraderError:
            raise
        except Exception as exc:
            log.warning("live %s: venue check failed: %s", self.run_id, _short(exc))
            return None

    # --- stopping -----------------------------------------------------------------------------------------------

    async def wind_down(self, *, flatten: bool) -> None:
        """Cancel the session's working orders (and sell its positions with `flatten`), waiting for the answers."""
        if self.orders is None:
            return
        await self.settle(5.0)
        for order in list(self.orders.ledger.open_orders()):
            if order.is_working:
                await self._guarded(self.orders.cancel(order.client_order_id))
        if flatten:
            for symbol in self.session.symbols:
                amount = self.orders.available_position(symbol)
                if amount > 0:
                    await self._guarded(self.orders.place(OrderIntent(symbol, "sell", "market", amount,
                                                                      intent="control")))  # fmt: skip
        # The answers may say filled before their trades are booked (a push still on its way, a fetch that came
        # early): one last look, so the session's final results hold every fill of its stop.
        await self._guarded(self.reconcile(stale_ms=0))
        await self.orders.fills_stored(5.0)  # and a fill a socket brought first is stored before the streams close
        # The venue's timer is the account's: it ends with the last of this server's sessions on that account.
        last_on_account = self.account is None or self.account.members == [self]
        if self.dead_man == "armed" and last_on_account:
            with contextlib.suppress(Exception):
                await self.client.cancel_all_orders_after(0)
            self.dead_man = "off"

    async def close(self) -> None:
        """Stop the loops and close the client."""
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        if self.account is not None:
            self.accounts.leave(self._account_key, self)
            self.account = None

    def _event(self, event: OrderEvent) -> None:
        self._alert_order(event)
        self.session.order_changed(event)
        if self._on_event is not None:
            self._on_event(event)

    def _alert_order(self, event: OrderEvent) -> None:
        """An order that became `rejected_unconfirmed`, or that the venue showed after it had (off the watch list)."""
        cid = event.order_id
        if event.status is OrderStatus.REJECTED_UNCONFIRMED:
            if cid not in self._unconfirmed:
                self._unconfirmed.add(cid)
                self.alerts.raise_(
                    AlertKind.ORDER_REJECTED_UNCONFIRMED,
                    f"{event.side} {event.amount:g} {event.symbol} ({cid}) got no answer and was not found on the "
                    "exchange after 30 s: treated as not placed, and watched for 24 h",
                    AlertDetails(symbol=event.symbol, client_order_id=cid, status=str(event.status),
                                 reason=event.reason),
                )  # fmt: skip
        elif cid in self._unconfirmed:
            self._unconfirmed.discard(cid)
            self.alerts.raise_(
                AlertKind.ORDER_REVIVED,
                f"{event.side} {event.amount:g} {event.symbol} ({cid}), given up as rejected_unconfirmed, is on the "
                f"exchange after all: it is {event.status} (filled {event.filled:g})",
                AlertDetails(symbol=event.symbol, client_order_id=cid, exchange_order_id=event.exchange_order_id,
                             status=str(event.status)),
            )  # fmt: skip

    def echo(self) -> dict[str, Any]:
        """What the session will do: where, with how much of the account, under which limits (the start's answer)."""
        session = self.session
        quote = self.plan.quote
        return {
            "exchange": plan_exchange(self.plan),
            "sandbox": bool((self.plan.settings.exchange_options.get(plan_exchange(self.plan)) or {}).get("sandbox"))
            if self.plan.settings is not None
            else False,
            "capital": self.plan.capital,
            "quote": quote,
            "tradable_balance": self.free.get(quote) if self.free else None,
            "risk": None if session.risk is None else session.risk.limits.model_dump(),
        }

    def reasons(self) -> list[str]:
        """Why the venue link degrades the session: a rate ban (nothing is sent until it ends)."""
        gate = None if self.calls is None else self.calls.gate
        return ["RATE_BANNED"] if gate is not None and gate.banned else []

    def status(self) -> dict[str, Any]:
        """What `/status/detailed` shows of the venue link."""
        orders = self.orders
        return {
            "reconciliation": self.report.to_dict(),
            "reconciliations": self.reconciliations,
            "user_stream": "up" if self.socket_up else "down",
            "clock_offset_ms": self.clock_offset_ms,
            "balance_drift": self.drift,
            "orders_sent": 0 if orders is None else orders.sent,
            "unknown_orders": [] if orders is None else [o.client_order_id for o in orders.unknown_orders()],
            "watch_list": [] if orders is None else sorted(orders.watch_until),
            "awaiting_credentials": self.awaiting_credentials,
            "dead_man_switch": self.dead_man,
            "offline_cancels": self.offline_cancels,
        }


def plan_exchange(plan: LivePlan) -> str:
    """The exchange id of a live plan (its feed's)."""
    feed = plan.feed
    assert isinstance(feed, CcxtFeed)
    return feed.exchange_id


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


__all__ = ["LiveCheckError", "LivePlan", "LiveRequestError", "LiveRuntime", "ReconcileReport", "prepare_live"]
