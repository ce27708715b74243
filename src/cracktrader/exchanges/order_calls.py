"""The exchange-facing order calls of a live session: an order is sent once, and an ambiguous answer is never re-sent.

`classify` sorts ccxt's errors from the specific class to the general (many subclass `NetworkError`, and in
ccxt 4.5 `NetworkError` itself subclasses `OperationFailed`): the exchange proved it did not take the order
(REJECTED), its clock check failed (RESYNC: measure the offset, send once more), or anything else (UNKNOWN:
the order may exist; look it up by its client id with `locate`, never send it again). It imports ccxt at once
(~0.5 s): import it from the live path only, not from what offline commands load.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import ccxt

from cracktrader.brokers.orders import ManagedOrder
from cracktrader.clock import Clock
from cracktrader.exchanges.client_ids import client_id_params
from cracktrader.exchanges.rate_gate import RateGate, is_ban

LOCATE_DELAYS_S: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)  # 31.5 s in all, then the open orders are scanned
TRADES_PAGE_LIMIT = 500
# OKX's fill list answers the newest 100 (at most) from `begin` on and pages back by bill id (`after`, exclusive).
OKX_FILLS_PAGE = 100
SENDABLE_TYPES = ("market", "limit")  # stops are held by the session and sent as one of these when triggered


class Outcome(StrEnum):
    """What an order call's answer proves about the order."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # the exchange did not take it: tell the strategy, send nothing by itself
    RESYNC = "resync"  # refused for the request's timestamp: resynchronise the clock, then send once more
    UNKNOWN = "unknown"  # it may or may not exist: look it up, never re-send


# Most specific first: isinstance picks the first row that matches. ChecksumError subclasses InvalidNonce but
# is an order-book checksum, not a clock refusal, so it must not trigger a re-send.
_CLASSES: tuple[tuple[type[BaseException], Outcome, str], ...] = (
    (ccxt.ChecksumError, Outcome.UNKNOWN, "NETWORK_ERROR"),
    (ccxt.RateLimitExceeded, Outcome.REJECTED, "RATE_LIMITED"),
    (ccxt.DDoSProtection, Outcome.REJECTED, "RATE_LIMITED"),  # RATE_BANNED when it was a 418 (see reason_code)
    (ccxt.InvalidNonce, Outcome.RESYNC, "CLOCK_SKEW"),
    (ccxt.RequestTimeout, Outcome.UNKNOWN, "REQUEST_TIMEOUT"),
    (ccxt.ExchangeNotAvailable, Outcome.UNKNOWN, "EXCHANGE_NOT_AVAILABLE"),
    (ccxt.NetworkError, Outcome.UNKNOWN, "NETWORK_ERROR"),
    (ccxt.BadResponse, Outcome.UNKNOWN, "BAD_RESPONSE"),
    (ccxt.OperationFailed, Outcome.UNKNOWN, "OPERATION_FAILED"),
    (ccxt.InsufficientFunds, Outcome.REJECTED, "INSUFFICIENT_FUNDS"),
    (ccxt.InvalidOrder, Outcome.REJECTED, "INVALID_ORDER"),
    (ccxt.BadSymbol, Outcome.REJECTED, "BAD_SYMBOL"),
    (ccxt.BadRequest, Outcome.REJECTED, "BAD_REQUEST"),
    (ccxt.PermissionDenied, Outcome.REJECTED, "PERMISSION_DENIED"),
    (ccxt.AuthenticationError, Outcome.REJECTED, "AUTH_FAILED"),
    (asyncio.CancelledError, Outcome.UNKNOWN, "CANCELLED"),
    (TimeoutError, Outcome.UNKNOWN, "REQUEST_TIMEOUT"),  # asyncio.TimeoutError too (the same class since 3.11)
)


def _row(exc: BaseException) -> tuple[Outcome, str]:
    for cls, outcome, code in _CLASSES:
        if isinstance(exc, cls):
            return outcome, code
    return Outcome.UNKNOWN, "UNKNOWN_OUTCOME"  # any other class, a parse error included: it may have gone through


def classify(exc: BaseException) -> Outcome:
    """What `exc`, raised by an order call, proves about the order."""
    return _row(exc)[0]


def reason_code(exc: BaseException) -> str:
    """A stable UPPER_SNAKE code for `exc` (RATE_BANNED for binance's 418)."""
    return "RATE_BANNED" if is_ban(exc) else _row(exc)[1]


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one `create`: the ccxt unified order when accepted, else the reason."""

    outcome: Outcome
    order: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None


class OrderCalls:
    """Create, look up and cancel orders by client id on one async ccxt client, and read the account."""

    def __init__(self, client: Any, exchange_id: str, clock: Clock, gate: RateGate | None = None) -> None:
        self.client = client
        self.exchange_id = exchange_id
        self.clock = clock
        self.gate = gate
        self.ids = client_id_params(exchange_id)
        self.offset_ms = 0  # exchange clock minus ours, from the last resync_clock
        # Signed requests carry our clock's time plus the measured offset: ccxt's own nonce reads the wall clock,
        # which is the same thing in production and lets an injected clock sign in tests.
        client.nonce = self._nonce

    # ------------------------------------------------------------ orders

    async def create(self, order: ManagedOrder) -> SendResult:
        """Send `order` once (once more only after a clock refusal); never raises but for a cancellation."""
        if order.type not in SENDABLE_TYPES:
            raise ValueError(f"only {' and '.join(SENDABLE_TYPES)} orders are sent; got {order.type!r}")
        resynced = False
        while True:
            if self.gate is not None and self.gate.banned:
                # Waiting out a ban can take minutes: refuse now, the caller decides.
                wait_s = self.gate.blocked_ms() / 1000
                return SendResult(Outcome.REJECTED, None, "RATE_BANNED", f"banned for {wait_s:.0f} s more")
            try:
                placed = await self._send(order)
            except asyncio.CancelledError:
                raise  # the caller treats the order as unknown
            except Exception as exc:  # every answer is classified: none escapes
                outcome = classify(exc)
                if outcome is Outcome.RESYNC and not resynced:
                    resynced = True
                    try:
                        await self.resync_clock()
                    except Exception as resync_exc:  # nothing was sent again: the refusal stands
                        return SendResult(Outcome.REJECTED, None, "CLOCK_SKEW", f"{exc}; resync: {resync_exc}")
                    continue
                if outcome is Outcome.RESYNC:
                    outcome = Outcome.REJECTED  # refused again after the resync: the exchange still did not take it
                return SendResult(outcome, None, reason_code(exc), str(exc) or type(exc).__name__)
            if not isinstance(placed, dict):
                return SendResult(
                    Outcome.UNKNOWN, None, "BAD_RESPONSE", f"create_order returned {type(placed).__name__}"
                )
            return SendResult(Outcome.ACCEPTED, placed)

    async def _send(self, order: ManagedOrder) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        params = self.ids.create_params(order.client_order_id)
        return await self._noting(
            self.client.create_order(order.symbol, order.type, order.side, order.amount, order.price, params)
        )

    async def lookup(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The order with that client id as the exchange shows it now; None when it says there is none."""
        params = self.ids.lookup_params(client_order_id)
        if self.ids.lookup_call == "fetch_open_orders":  # exchanges that find by client id only among open orders
            return self._find(await self._call("fetch_open_orders", symbol, None, None, params), client_order_id)
        try:
            found: dict[str, Any] = await self._call("fetch_order", None, symbol, params)
        except ccxt.OrderNotFound:
            return None
        return found

    async def locate(
        self, symbol: str, client_order_id: str, delays: tuple[float, ...] = LOCATE_DELAYS_S
    ) -> dict[str, Any] | None:
        """Look an unknown order up with backoff, then among the open orders; None: still absent after them all."""
        for delay in delays:
            await self.clock.sleep_until(self.clock.now_ms() + round(delay * 1000))
            try:
                found = await self.lookup(symbol, client_order_id)
            except ccxt.NetworkError:
                continue  # not found yet: the same doubt that made it unknown
            if found is not None:
                return found
        # An error here propagates: without this scan the caller cannot conclude the order is absent.
        return self._find(await self.open_orders(symbol), client_order_id)

    async def cancel(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """Cancel by client id; None when the exchange no longer has it open. Other errors propagate."""
        params = self.ids.lookup_params(client_order_id)
        try:
            cancelled: dict[str, Any] = await self._call("cancel_order", None, symbol, params)
        except ccxt.OrderNotFound:
            return None
        return cancelled

    # ------------------------------------------------------------ the account

    async def open_orders(self, symbol: str | None) -> list[dict[str, Any]]:
        """The account's open orders (on `symbol`, or on every market)."""
        orders: list[dict[str, Any]] = await self._call("fetch_open_orders", symbol)
        return orders

    async def trades(
        self, symbol: str, since_ms: int | None, *, page_limit: int = TRADES_PAGE_LIMIT
    ) -> list[dict[str, Any]]:
        """Every trade on `symbol` from `since_ms` (None: the exchange's default window), page by page, each once."""
        if self.exchange_id == "okx":
            return await self._okx_trades(symbol, since_ms)
        out: dict[str, dict[str, Any]] = {}
        since: int | None = since_ms
        params: dict[str, Any] = {}
        while True:
            page: list[dict[str, Any]] = await self._call("fetch_my_trades", symbol, since, page_limit, params)
            new = [t for t in page if str(t["id"]) not in out]
            out.update((str(t["id"]), t) for t in new)
            if len(page) < page_limit or not new:
                break  # a short page is the last; a full page of trades already seen would repeat forever
            if self.exchange_id == "binance":
                # fromId pages by trade id (inclusive) and cannot be combined with startTime.
                since, params = None, {"fromId": max(int(t["id"]) for t in page) + 1}
            else:
                # Inclusive: the trades at that instant come again, and are skipped.
                since = max(int(t["timestamp"]) for t in page)
        return sorted(out.values(), key=lambda t: (t["timestamp"], str(t["id"])))

    async def _okx_trades(self, symbol: str, since_ms: int | None) -> list[dict[str, Any]]:
        """OKX's fills from `since_ms`, newest page first, each page older than the last one's oldest bill id."""
        out: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {}
        while True:
            # With a `since` ccxt sends `begin` and no limit: OKX's page is then its default, 100.
            page: list[dict[str, Any]] = await self._call("fetch_my_trades", symbol, since_ms, None, params)
            new = [t for t in page if str(t["id"]) not in out]
            out.update((str(t["id"]), t) for t in new)
            bills = [int(t["info"]["billId"]) for t in page if str((t.get("info") or {}).get("billId", "")).isdigit()]
            if len(page) < OKX_FILLS_PAGE or not new or not bills:
                break
            params = {"after": str(min(bills))}
        return sorted(out.values(), key=lambda t: (t["timestamp"], str(t["id"])))

    async def balance(self) -> dict[str, Any]:
        """The account's balances (ccxt's unified structure)."""
        balance: dict[str, Any] = await self._call("fetch_balance")
        return balance

    # ------------------------------------------------------------ the clock

    async def measure_clock_offset(self, samples: int = 5) -> int:
        """The exchange's clock minus ours in ms: the median over `samples` of server time minus our midpoint."""
        if samples < 1:
            raise ValueError(f"samples must be at least 1; got {samples}")
        offsets = []
        for _ in range(samples):
            before = self.clock.now_ms()
            server = int(await self._call("fetch_time"))
            after = self.clock.now_ms()
            offsets.append(server - (before + after) // 2)
        return int(statistics.median_low(offsets))

    def _nonce(self) -> int:
        return self.clock.now_ms() + self.offset_ms

    async def resync_clock(self) -> int:
        """Measure the offset and give it to ccxt (its nonce is our time minus `timeDifference`); returns it."""
        self.offset_ms = await self.measure_clock_offset()
        self.client.options["timeDifference"] = -self.offset_ms
        return self.offset_ms

    # ------------------------------------------------------------ plumbing

    def _find(self, orders: list[dict[str, Any]], client_order_id: str) -> dict[str, Any] | None:
        """The order carrying the client id: ccxt's unified field, or the exchange's own field in `info`."""
        wanted = {client_order_id, self.ids.on_wire(client_order_id)}
        for order in orders:
            info = order.get("info") or {}
            if order.get("clientOrderId") in wanted or info.get(self.ids.wire_field) in wanted:
                return order
        return None

    async def _call(self, method: str, *args: Any) -> Any:
        """Wait through the gate (a ban included), then call `method`: every call but create, which refuses a ban."""
        if self.gate is not None:
            await self.gate.wait()
        return await self._noting(getattr(self.client, method)(*args))

    async def _noting(self, call: Any) -> Any:
        """Await `call`, telling the gate about a 429/418 before the error goes on."""
        try:
            return await call
        except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
            if self.gate is not None:
                # ccxt keeps the last response's headers on the client; Retry-After is read from them.
                self.gate.note(exc, getattr(self.client, "last_response_headers", None))
            raise
