"""Binance spot trading on the fake venue: signed REST orders, an account, the user-data stream, faults.

`TradingVenue` extends `FakeVenue` (market data on a virtual clock) with what a live-trading runtime
talks to: strict HMAC-SHA256 signatures, timestamps checked against the virtual clock, orders matched
against the venue's own book and candles as the clock moves, balances, `myTrades`, executionReport /
outboundAccountPosition events over the WebSocket API (and the legacy listenKey stream), a second
"sandbox" port, and faults on demand. Every state change runs on the server's loop under one lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web

from .account import Account, FakeOrder, FakeTrade, FeeAsset, VenueError
from .binance import DEFAULT_LISTING_MS, DEFAULT_MARKETS, DEFAULT_NOW_MS, FakeMarket, Handler, _binance_error
from .clock import VirtualClock
from .venue import SETTLE_TIMEOUT_S, FakeVenue, interval_floor, interval_next, read_frames

WS_API_PATH = "/ws-api/v3"  # ccxt.pro binance: urls['api']['ws']['ws-api']['spot'] after a rebase
DEFAULT_KEYS: dict[str, str] = {"test-key": "test-secret"}
DEFAULT_BALANCES: dict[str, Decimal | str | float] = {"USDT": "100000", "BTC": "1", "ETH": "10", "SOL": "100"}
MAX_RECV_WINDOW = 60_000
MAX_AHEAD_MS = 1_000  # Binance refuses a timestamp more than 1 s ahead of its clock
MAX_MATCH_BARS = 1_440  # a clock jump longer than a day matches only its last day of 1m bars
OrderRef = int | str  # an exchange order id, or a client order id

_BAD_KEY_MSG = "Invalid API-key, IP, or permissions for action."
_TIMEOUT_1007 = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."


HookWhen = Literal["received", "placed"]


@dataclass(slots=True)
class _RequestHook:
    """A one-shot callback on the next new order or cancel: `received` drops the request after it, `placed` answers."""

    callback: Callable[[], None]
    when: HookWhen


class DroppedRequest(Exception):
    """A request the venue read and then dropped without acting on it (its connection is closed unanswered)."""


@dataclass(slots=True)
class _OrderFault:
    kind: Literal["hang", "error", "refuse"]
    status: int = 503
    body: dict[str, Any] | str | None = None


@dataclass(eq=False, slots=True)
class _UserConn:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    subscription_id: int | None = None  # WebSocket API subscription; None on a raw listenKey stream
    raw: bool = False
    pongs: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)


@dataclass(slots=True)
class _UserFaults:
    duplicate: int = 0  # the next n executionReports are sent twice
    drop: int = 0  # the next n executionReports are not sent at all
    reorder: int = 0  # the next n executionReports are held and sent newest first
    held: list[dict[str, Any]] = field(default_factory=list)


def _dec(value: str | None, name: str) -> Decimal:
    try:
        out = Decimal(value) if value is not None else None
    except InvalidOperation:
        out = None
    if out is None or not out.is_finite():
        raise VenueError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return out


def _without_signature(raw: str) -> tuple[str, str | None]:
    """`raw` with its `signature=` item removed, and the signature (None if absent)."""
    kept, signature = [], None
    for item in raw.split("&") if raw else []:
        if item.startswith("signature="):
            signature = item[len("signature=") :]
        else:
            kept.append(item)
    return "&".join(kept), signature


def sign(secret: str, payload: str) -> str:
    """hex HMAC-SHA256 of `payload` with `secret`: what ccxt's binance sends as `signature`."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class TradingVenue(FakeVenue):
    """FakeVenue plus a Binance spot account that the real ccxt client can trade on."""

    def __init__(
        self,
        *,
        clock: VirtualClock | None = None,
        now_ms: int = DEFAULT_NOW_MS,
        listing_ms: int = DEFAULT_LISTING_MS,
        markets: Iterable[FakeMarket] = DEFAULT_MARKETS,
        balances: dict[str, Decimal | str | float] | None = None,
        api_keys: dict[str, str] | None = None,
        fee_rate: Decimal | str = "0.001",
    ) -> None:
        super().__init__(clock=clock, now_ms=now_ms, listing_ms=listing_ms, markets=markets)
        self.account = Account(dict(DEFAULT_BALANCES if balances is None else balances), Decimal(str(fee_rate)))
        self.api_keys = dict(DEFAULT_KEYS if api_keys is None else api_keys)
        # At most this much of a resting order fills per 1m bar that crosses it (None: all of it): partial fills.
        self.fill_per_bar: Decimal | None = None
        self.user_events: list[dict[str, Any]] = []  # every user-data event the venue wrote, in order
        self.site_log: list[tuple[str, str, str]] = []  # (site "main"|"sandbox", method, path)
        self.listen_keys: set[str] = set()
        self._matched_ms = self.clock.now_ms()
        self._user_conns: set[_UserConn] = set()
        self._user_ids = itertools.count(1)
        self._order_faults: list[_OrderFault] = []
        self._hooks: dict[str, _RequestHook] = {}
        self._hide_next_s: float | None = None
        self._user_faults = _UserFaults()
        self._banned_until_ms = 0
        self._sandbox_port: int | None = None
        self._trade_lock: asyncio.Lock | None = None
        self._held: asyncio.Event | None = None
        self._user_cond: asyncio.Condition | None = None

    # ------------------------------------------------------------ lifecycle and sites

    async def _start_site(self) -> None:
        await super()._start_site()
        assert self._runner is not None
        sandbox = web.TCPSite(self._runner, "127.0.0.1", 0)
        await sandbox.start()
        self._sandbox_port = int(self._runner.addresses[-1][1])

    async def _init_loop_state(self) -> None:
        await super()._init_loop_state()
        self._trade_lock = asyncio.Lock()
        self._held = asyncio.Event()
        self._user_cond = asyncio.Condition()

    def start(self) -> TradingVenue:
        """Serve REST, market data and trading on two ports (main and sandbox); returns self."""
        super().start()
        return self

    def stop(self) -> None:
        """Release held responses, close user streams, then stop serving."""
        if self._loop is not None:
            self._run_on_server_loop(self._shutdown_user())
        super().stop()

    async def _shutdown_user(self) -> None:
        if self._held is not None:
            self._held.set()
        await self._drop_user(None)

    def __enter__(self) -> TradingVenue:
        return self.start()

    @property
    def sandbox_base_url(self) -> str:
        """`http://127.0.0.1:<sandbox port>`: the same venue, reached as ccxt's `urls['test']`."""
        if self._sandbox_port is None:
            raise RuntimeError("trading venue is not running; call start() first")
        return f"http://127.0.0.1:{self._sandbox_port}"

    def sites_used(self) -> set[str]:
        """Which sites ("main", "sandbox") received requests, WebSocket handshakes included."""
        return {site for site, _, _ in self.site_log}

    # ------------------------------------------------------------ faults: orders

    def accept_then_timeout(self) -> None:
        """The next new order is placed, but its response is held until the client times out (it exists)."""
        self._order_faults.append(_OrderFault("hang"))

    def accept_then_503(self) -> None:
        """The next new order is placed, then answered 503 (ccxt: ExchangeNotAvailable; status unknown)."""
        self._order_faults.append(_OrderFault("error", 503, "Service Unavailable"))

    def accept_then_1007(self) -> None:
        """The next new order is placed, then answered -1007 "Send status unknown" (ccxt: RequestTimeout)."""
        self._order_faults.append(_OrderFault("error", 503, {"code": -1007, "msg": _TIMEOUT_1007}))

    def refuse_with_503(self) -> None:
        """The next new order is answered 503 and NOT placed."""
        self._order_faults.append(_OrderFault("refuse", 503, "Service Unavailable"))

    def on_next_order(self, callback: Callable[[], None], when: HookWhen = "placed") -> None:
        """Call `callback` (on the venue's loop) at the next signed new order, once.

        `received`: the request arrived and was checked, then the venue drops it unplaced (sent, never accepted).
        `placed`: the order is placed, then `callback` runs, then the venue answers (accepted; the answer may be lost).
        """
        self._hooks["order"] = _RequestHook(callback, when)

    def on_next_cancel(self, callback: Callable[[], None], when: HookWhen = "placed") -> None:
        """Call `callback` at the next signed cancel, once: `received` drops it, `placed` cancels first then answers."""
        self._hooks["cancel"] = _RequestHook(callback, when)

    def _run_hook(self, kind: str, when: HookWhen) -> None:
        hook = self._hooks.get(kind)
        if hook is None or hook.when != when:
            return
        del self._hooks[kind]
        hook.callback()
        if when == "received":
            raise DroppedRequest(kind)

    def hide_next_order(self, seconds: float = 3.0) -> None:
        """The next new order is invisible to order, openOrders, allOrders and myTrades queries for `seconds`."""
        self._hide_next_s = seconds

    def rate_limit_next(self, n: int = 1, retry_after_s: int = 1, path: str | None = None) -> None:
        """Answer the next `n` REST requests (to `path`) 429 with `Retry-After` (ccxt: RateLimitExceeded/DDoS)."""
        self.fail_next(n, 429, path=path, headers={"Retry-After": str(retry_after_s)})

    def ban(self, seconds: float) -> None:
        """Answer every request 418 with `Retry-After` until the virtual clock has moved `seconds` on."""
        self._banned_until_ms = self.clock.now_ms() + round(seconds * 1000)

    # ------------------------------------------------------------ faults: user-data stream

    def duplicate_user_events(self, n: int = 1) -> None:
        """Send each of the next `n` executionReports twice."""
        self._user_faults.duplicate += n

    def drop_user_events(self, n: int = 1) -> None:
        """Do not send the next `n` executionReports at all (REST still shows the fills)."""
        self._user_faults.drop += n

    def reorder_user_events(self, n: int = 2) -> None:
        """Hold the next `n` executionReports and send them newest first."""
        self._user_faults.reorder += n

    def drop_user_stream(self, code: int | None = None) -> int:
        """Close every user-data socket (abort when `code` is None); returns how many were open."""
        count: int = self._run_on_server_loop(self._drop_user(code))
        return count

    async def wait_user_streams(self, n: int = 1, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until `n` user-data sockets are subscribed (a client's watch_orders is listening)."""

        async def wait() -> None:
            assert self._user_cond is not None
            async with self._user_cond:
                await self._user_cond.wait_for(lambda: self.user_stream_count() >= n)

        await self._on_server_loop(wait(), timeout)

    async def user_settled(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until every user-data client has read all that was sent (a ping/pong round trip each).

        ccxt answers a ping only after handling the frames before it, so afterwards its caches
        (`client.orders`, `client.myTrades`, `client.balance`) hold every event the venue wrote.
        """

        async def ping_all() -> None:
            waits = []
            for conn in list(self._user_conns):
                token = f"user-{next(self._user_ids)}".encode()
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                conn.pongs[token] = future
                try:
                    await conn.ws.ping(token)
                except (ConnectionError, RuntimeError):
                    continue
                waits.append(future)
            await asyncio.gather(*waits)

        await self._on_server_loop(ping_all(), timeout)

    def user_stream_count(self) -> int:
        """Open user-data sockets that are subscribed."""
        return sum(1 for c in self._user_conns if c.raw or c.subscription_id is not None)

    # ------------------------------------------------------------ the account behind the client's back

    def fill_order(self, ref: OrderRef, symbol: str, qty: Decimal | str | None = None) -> None:
        """Fill `qty` (default: all that is left) of an open order at its limit price, as if the book moved."""
        self._run_on_server_loop(self._locked(self._fill_now(ref, symbol, qty)))

    def cancel_order(self, ref: OrderRef, symbol: str) -> None:
        """Cancel an open order, as if from another session or the exchange's web page."""
        self._run_on_server_loop(self._locked(self._cancel_now(ref, symbol)))

    def add_external_order(
        self, symbol: str, side: str, qty: Decimal | str, price: Decimal | str, client_id: str = ""
    ) -> FakeOrder:
        """Place a resting limit order that no client sent (another program on the same account)."""
        coro = self._place(symbol.replace("/", ""), side.upper(), "LIMIT", Decimal(str(qty)), Decimal(str(price)),
                           client_id or f"web_{next(self._user_ids)}", "GTC", external=True)  # fmt: skip
        order: FakeOrder = self._run_on_server_loop(self._locked(coro))
        return order

    def set_balance(self, asset: str, free: Decimal | str) -> None:
        """Set the free amount of `asset` (a deposit or withdrawal)."""
        self.account.balance(asset).free = Decimal(str(free))

    def order(self, ref: OrderRef, symbol: str) -> FakeOrder | None:
        """The venue's own view of an order, hidden or not."""
        return self._find(symbol.replace("/", ""), ref)

    async def _locked(self, coro: Awaitable[Any]) -> Any:
        assert self._trade_lock is not None
        async with self._trade_lock:
            return await coro

    def _find(self, sid: str, ref: OrderRef) -> FakeOrder | None:
        if isinstance(ref, int):
            return self.account.find(sid, ref, None)
        return self.account.find(sid, None, ref)

    async def _fill_now(self, ref: OrderRef, symbol: str, qty: Decimal | str | None) -> None:
        sid = symbol.replace("/", "")
        order = self._find(sid, ref)
        if order is None or not order.is_open:
            raise ValueError(f"no open order {ref!r} on {sid}")
        amount = order.remaining if qty is None else Decimal(str(qty))
        price = order.price if order.price else Decimal(str(round(self._last(sid), 2)))
        trade = self.account.fill(self.markets[sid], order, amount, price, self.clock.now_ms(), maker=True)
        await self._report(order, "TRADE", trade)

    async def _cancel_now(self, ref: OrderRef, symbol: str) -> FakeOrder:
        sid = symbol.replace("/", "")
        order = self._find(sid, ref)
        if order is None or not order.is_open:
            raise VenueError(400, -2011, "Unknown order sent.")
        self.account.end(self.markets[sid], order, "CANCELED", self.clock.now_ms())
        await self._report(order, "CANCELED", None)
        return order

    # ------------------------------------------------------------ HTTP: checks

    def method_routes(self) -> list[tuple[str, str, Handler]]:
        """The signed trading endpoints and the listenKey endpoints."""
        return [
            ("GET", "/api/v3/account", self._route(self._account)),
            ("POST", "/api/v3/order", self._route(self._new_order)),
            ("GET", "/api/v3/order", self._route(self._get_order)),
            ("DELETE", "/api/v3/order", self._route(self._delete_order)),
            ("GET", "/api/v3/openOrders", self._route(self._open_orders)),
            ("GET", "/api/v3/allOrders", self._route(self._all_orders)),
            ("GET", "/api/v3/myTrades", self._route(self._my_trades)),
            ("POST", "/api/v3/userDataStream", self._route(self._listen_key)),
            ("PUT", "/api/v3/userDataStream", self._route(self._listen_key)),
            ("DELETE", "/api/v3/userDataStream", self._route(self._listen_key)),
            ("GET", WS_API_PATH, self._ws_api_route),
        ]

    def _route(self, fn: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                result = await fn(request)
            except VenueError as exc:
                return _binance_error(exc.status, exc.code, exc.msg)
            except DroppedRequest:
                if request.transport is not None:
                    request.transport.abort()  # no answer at all, as a venue whose backend lost the request
                return web.Response(status=503, text="dropped")
            return result if isinstance(result, web.StreamResponse) else web.json_response(result)

        return handler

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        site = "sandbox" if sockname and sockname[1] == self._sandbox_port else "main"
        self.site_log.append((site, request.method, request.path))
        now = self.clock.now_ms()
        if now < self._banned_until_ms:
            retry = str(math.ceil((self._banned_until_ms - now) / 1000))
            msg = f"Way too much request weight used; IP banned until {self._banned_until_ms}."
            return web.json_response({"code": -1003, "msg": msg}, status=418, headers={"Retry-After": retry})
        return await super()._middleware(request, handler)

    def _api_key(self, key: str | None) -> str:
        if not key:
            raise VenueError(401, -2014, "API-key format invalid.")
        secret = self.api_keys.get(key)
        if secret is None:
            raise VenueError(401, -2015, _BAD_KEY_MSG)
        return secret

    def _check_time(self, params: dict[str, str]) -> None:
        if "timestamp" not in params:
            raise VenueError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        try:
            ts, window = int(params["timestamp"]), int(params.get("recvWindow", "5000"))
        except ValueError as exc:
            raise VenueError(400, -1100, "Illegal characters found in parameter 'timestamp'.") from exc
        if window > MAX_RECV_WINDOW:
            raise VenueError(400, -1131, "recvWindow must be less than 60000")
        now = self.clock.now_ms()
        if ts > now + MAX_AHEAD_MS:
            raise VenueError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > window:
            raise VenueError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    async def _signed(self, request: web.Request) -> dict[str, str]:
        """Check key, HMAC over query string + body (as Binance concatenates them) and timestamp."""
        secret = self._api_key(request.headers.get("X-MBX-APIKEY"))
        body = await request.text()  # cached: the logging middleware may have read it already
        query, sig_q = _without_signature(request.query_string)
        form, sig_b = _without_signature(body)
        signature = sig_q or sig_b
        if signature is None:
            raise VenueError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        if not hmac.compare_digest(sign(secret, query + form), signature):
            raise VenueError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(query, keep_blank_values=True)) | dict(parse_qsl(form, keep_blank_values=True))
        self._check_time(params)
        return params

    def _market(self, params: dict[str, str]) -> FakeMarket:
        sid = params.get("symbol", "")
        if not sid:
            raise VenueError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if sid not in self.markets:
            raise VenueError(400, -1121, "Invalid symbol.")
        return self.markets[sid]

    def _visible(self, order: FakeOrder) -> bool:
        return self.clock.now_ms() >= order.visible_from_ms

    # ------------------------------------------------------------ HTTP: endpoints

    async def _account(self, request: web.Request) -> dict[str, Any]:
        await self._signed(request)
        balances = [
            {"asset": a, "free": f"{b.free:.8f}", "locked": f"{b.locked:.8f}"}
            for a, b in sorted(self.account.balances.items())
        ]
        return {
            "makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": True,
            "canDeposit": True, "updateTime": self.account.update_time or self.clock.now_ms(),
            "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"],
        }  # fmt: skip

    async def _new_order(self, request: web.Request) -> web.StreamResponse | dict[str, Any]:
        params = await self._signed(request)
        market = self._market(params)
        side, type_ = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise VenueError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if type_ not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise VenueError(400, -1116, "Invalid orderType.")
        qty = _dec(params.get("quantity"), "quantity")
        price = _dec(params.get("price"), "price") if type_ != "MARKET" else None
        client_id = params.get("newClientOrderId") or f"fake{next(self._user_ids):022d}"
        order = await self._accept_order(
            market.id, side, type_, qty, price, client_id, params.get("timeInForce", "GTC")
        )
        if isinstance(order, web.StreamResponse):
            return order
        if params.get("newOrderRespType") == "ACK":
            return {"symbol": order.symbol, "orderId": order.order_id, "clientOrderId": order.client_id,
                    "transactTime": order.time}  # fmt: skip
        return order.as_json(full=params.get("newOrderRespType", "FULL") == "FULL")

    async def _accept_order(
        self, sid: str, side: str, type_: str, qty: Decimal, price: Decimal | None, client_id: str, tif: str
    ) -> FakeOrder | web.Response:
        """Place a checked new order through the order faults and hooks: the order, or the fault's answer.

        Shared by every protocol the venue speaks, so a fault means the same on each of them.
        """
        fault = self._order_faults.pop(0) if self._order_faults else None
        if fault is not None and fault.kind == "refuse":
            return web.Response(status=fault.status, text=str(fault.body))
        self._run_hook("order", "received")
        order: FakeOrder = await self._locked(self._place(sid, side, type_, qty, price, client_id, tif))
        self._run_hook("order", "placed")
        if fault is not None and fault.kind == "hang":
            assert self._held is not None
            await self._held.wait()
        if fault is not None and fault.kind == "error":
            if isinstance(fault.body, dict):
                return web.json_response(fault.body, status=fault.status)
            return web.Response(status=fault.status, text=str(fault.body))
        return order

    def _order_from(self, params: dict[str, str], market: FakeMarket) -> FakeOrder | None:
        if "orderId" in params:
            try:
                return self.account.find(market.id, int(params["orderId"]), None)
            except ValueError as exc:
                raise VenueError(400, -1100, "Illegal characters found in parameter 'orderId'.") from exc
        if "origClientOrderId" in params:
            return self.account.find(market.id, None, params["origClientOrderId"])
        raise VenueError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")

    async def _get_order(self, request: web.Request) -> dict[str, Any]:
        params = await self._signed(request)
        order = self._order_from(params, self._market(params))
        if order is None or not self._visible(order):
            raise VenueError(400, -2013, "Order does not exist.")
        return order.as_json()

    async def _delete_order(self, request: web.Request) -> dict[str, Any]:
        params = await self._signed(request)
        market = self._market(params)
        order = self._order_from(params, market)
        if order is None or not self._visible(order):
            raise VenueError(400, -2011, "Unknown order sent.")
        self._run_hook("cancel", "received")
        cancelled: FakeOrder = await self._locked(self._cancel_now(order.order_id, market.id))
        self._run_hook("cancel", "placed")
        return cancelled.as_json()

    async def _open_orders(self, request: web.Request) -> list[dict[str, Any]]:
        params = await self._signed(request)
        sid = self._market(params).id if "symbol" in params else None
        return [o.as_json() for o in self.account.open_orders(sid) if self._visible(o)]

    async def _all_orders(self, request: web.Request) -> list[dict[str, Any]]:
        params = await self._signed(request)
        sid = self._market(params).id
        rows = [o for o in self.account.orders.values() if o.symbol == sid and self._visible(o)]
        if "startTime" in params:
            rows = [o for o in rows if o.time >= int(params["startTime"])]
        return [o.as_json() for o in rows[: int(params.get("limit", "500"))]]

    async def _my_trades(self, request: web.Request) -> list[dict[str, Any]]:
        params = await self._signed(request)
        sid = self._market(params).id

        def opt(name: str) -> int | None:
            return int(params[name]) if name in params else None

        hidden = [o.order_id for o in self.account.orders.values() if not self._visible(o)]
        limit = max(1, min(int(params.get("limit", "500")), 1000))
        trades = self.account.my_trades(
            sid, order_id=opt("orderId"), from_id=opt("fromId"), start_ms=opt("startTime"),
            end_ms=opt("endTime"), limit=limit, hidden=hidden,
        )  # fmt: skip
        return [t.as_json() for t in trades]

    async def _listen_key(self, request: web.Request) -> dict[str, Any]:
        self._api_key(request.headers.get("X-MBX-APIKEY"))
        if request.method == "POST":
            key = hashlib.sha256(f"listen-{next(self._user_ids)}".encode()).hexdigest()[:60]
            self.listen_keys.add(key)
            return {"listenKey": key}
        return {}

    # ------------------------------------------------------------ matching

    def _last(self, sid: str) -> float:
        return float(self.book_ticker(sid)["askPrice"]) - float(self.markets[sid].tick_size)

    def _take_plan(self, sid: str, side: str, qty: Decimal, limit: Decimal | None) -> list[tuple[Decimal, Decimal]]:
        """(price, qty) taken from the book by an incoming order, best level first, within `limit`."""
        book = self.order_book(sid, 50)
        levels = book["asks"] if side == "BUY" else book["bids"]
        plan, left = [], qty
        for price_s, size_s in levels:
            price = Decimal(price_s)
            if left <= 0 or (limit is not None and (price > limit if side == "BUY" else price < limit)):
                break
            take = min(left, Decimal(size_s))
            plan.append((price, take))
            left -= take
        return plan

    async def _place(
        self,
        sid: str,
        side: str,
        type_: str,
        qty: Decimal,
        price: Decimal | None,
        client_id: str,
        tif: str,
        *,
        external: bool = False,
    ) -> FakeOrder:
        market = self.markets[sid]
        now = self.clock.now_ms()
        plan = self._take_plan(sid, side, qty, price if type_ != "MARKET" else None)
        if type_ == "LIMIT_MAKER" and plan:
            raise VenueError(400, -2010, "Order would immediately match and take.")
        ref = plan[-1][0] if plan and type_ == "MARKET" else Decimal(str(round(self._last(sid), 2)))
        order = self.account.new_order(
            market, client_id=client_id, side=side, type_=type_, qty=qty, price=price, ref_price=ref,
            now_ms=now, time_in_force=tif,
        )  # fmt: skip
        order.external = external
        if self._hide_next_s is not None:
            order.visible_from_ms = now + round(self._hide_next_s * 1000)
            self._hide_next_s = None
        if tif == "FOK" and sum((q for _, q in plan), Decimal(0)) < qty:
            plan = []
        await self._report(order, "NEW", None)
        for level_price, level_qty in plan:
            trade = self.account.fill(market, order, level_qty, level_price, now, maker=False)
            await self._report(order, "TRADE", trade)
        if order.is_open and (type_ == "MARKET" or tif in ("IOC", "FOK")):
            self.account.end(market, order, "EXPIRED", now)
            await self._report(order, "EXPIRED", None)
        return order

    async def _deliver_due(self) -> None:
        await super()._deliver_due()
        await self._locked(self._match_resting())

    async def _match_resting(self) -> None:
        """At each 1m bar close since the last match, fill the resting limit orders the bar crossed.

        Each bar is matched once, when it closes (a partial forming bar never fills), oldest order first;
        an order rests in a bar if it was placed before the bar closed. The fill is at the limit price.
        """
        now = self.clock.now_ms()
        start, self._matched_ms = self._matched_ms, max(self._matched_ms, now)
        if now <= start:
            return
        open_ms = interval_floor("1m", max(start, now - MAX_MATCH_BARS * 60_000))
        while (close_ms := interval_next("1m", open_ms)) <= now:
            if close_ms > start:
                await self._match_bar(open_ms, close_ms)
            open_ms = close_ms

    async def _match_bar(self, open_ms: int, close_ms: int) -> None:
        for order in sorted(self.account.open_orders(), key=lambda o: o.order_id):
            if order.type == "MARKET" or order.time >= close_ms:
                continue
            _, _, high, low, _, _ = self.bar(order.symbol, "1m", open_ms, close_ms)
            if not (low <= order.price if order.side == "BUY" else high >= order.price):
                continue
            amount = order.remaining if self.fill_per_bar is None else min(order.remaining, self.fill_per_bar)
            market = self.markets[order.symbol]
            trade = self.account.fill(market, order, amount, order.price, close_ms, maker=True)
            await self._report(order, "TRADE", trade)

    # ------------------------------------------------------------ user-data events

    def _execution_report(self, order: FakeOrder, exec_type: str, trade: FakeTrade | None) -> dict[str, Any]:
        now = self.clock.now_ms()
        cancelled = exec_type == "CANCELED"
        return {
            "e": "executionReport", "E": now, "s": order.symbol, "c": order.client_id, "S": order.side,
            "o": order.type, "f": order.time_in_force, "q": f"{order.qty:.8f}", "p": f"{order.price:.8f}",
            "P": "0.00000000", "F": "0.00000000", "g": -1, "C": order.client_id if cancelled else "",
            "x": exec_type, "X": order.status, "r": "NONE", "i": order.order_id,
            "l": f"{trade.qty:.8f}" if trade else "0.00000000", "z": f"{order.executed:.8f}",
            "L": f"{trade.price:.8f}" if trade else "0.00000000",
            "n": f"{trade.commission:.8f}" if trade else "0", "N": trade.commission_asset if trade else None,
            "T": trade.time if trade else order.update_time, "t": trade.id if trade else -1, "I": 0,
            "w": order.is_open, "m": trade.is_maker if trade else False, "M": False, "O": order.time,
            "Z": f"{order.cum_quote:.8f}", "Y": f"{trade.price * trade.qty:.8f}" if trade else "0.00000000",
            "Q": "0.00000000", "W": order.time, "V": "NONE",
        }  # fmt: skip

    async def _report(self, order: FakeOrder, exec_type: str, trade: FakeTrade | None) -> None:
        """Push an executionReport (through the stream faults) and then the account position."""
        faults = self._user_faults
        report = self._execution_report(order, exec_type, trade)
        if faults.drop > 0:
            faults.drop -= 1
        elif faults.reorder > 0:
            faults.held.append(report)
            faults.reorder -= 1
            if faults.reorder == 0:
                for held in reversed(faults.held):
                    await self._push_user(held)
                faults.held.clear()
        else:
            copies = 2 if faults.duplicate > 0 else 1
            faults.duplicate = max(0, faults.duplicate - 1)
            for _ in range(copies):
                await self._push_user(report)
        now = self.clock.now_ms()
        await self._push_user({"e": "outboundAccountPosition", "E": now, "u": now, "B": self.account.positions()})

    def _user_frame(self, conn: _UserConn, event: dict[str, Any]) -> dict[str, Any] | None:
        """What `conn` receives for `event` (None: nothing); another protocol's venue overrides it."""
        if conn.raw:
            return event
        if conn.subscription_id is not None:
            return {"subscriptionId": conn.subscription_id, "event": event}
        return None

    async def _push_user(self, event: dict[str, Any]) -> None:
        for conn in sorted(self._user_conns, key=lambda c: c.id):
            frame = self._user_frame(conn, event)
            if frame is None:
                continue
            try:
                await conn.ws.send_str(json.dumps(frame))
            except (ConnectionError, RuntimeError):
                self._user_conns.discard(conn)
        self.user_events.append(event)

    async def _drop_user(self, code: int | None) -> int:
        conns = list(self._user_conns)
        self._user_conns.clear()
        for conn in conns:
            for future in conn.pongs.values():
                if not future.done():
                    future.set_result(None)
            if code is None and conn.request.transport is not None:
                conn.request.transport.abort()
            elif code is not None:
                asyncio.get_running_loop().create_task(conn.ws.close(code=code, message=b"dropped by test"))
        return len(conns)

    # ------------------------------------------------------------ user-data sockets

    async def _ws_route(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        if tail in self.listen_keys:
            return await self._user_socket(request, raw=True)
        return await super()._ws_route(request)

    async def _ws_api_route(self, request: web.Request) -> web.StreamResponse:
        return await self._user_socket(request, raw=False)

    async def _user_socket(self, request: web.Request, *, raw: bool) -> web.StreamResponse:
        if self.refusing_sockets:
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=False)  # the venue sees pongs: they are the user_settled barrier
        await ws.prepare(request)
        conn = _UserConn(next(self._user_ids), ws, request, raw=raw)
        self._user_conns.add(conn)
        if raw:
            await self._notify_user()
        try:
            await read_frames(ws, conn.pongs, lambda data: self._on_ws_api(conn, data))
        finally:
            self._user_conns.discard(conn)
        return ws

    async def _on_ws_api(self, conn: _UserConn, data: str) -> None:
        try:
            message = json.loads(data)
            request_id, method = message.get("id"), str(message["method"])
            params = {str(k): str(v) for k, v in dict(message.get("params") or {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            await conn.ws.send_json({"id": None, "status": 400, "error": {"code": -1100, "msg": "Malformed request."}})
            return
        if "apiKey" in params:
            self.credentialed.append(("WS", conn.request.path, params))
        if method == "userDataStream.subscribe.signature":
            try:
                self._check_ws_signature(params)
            except VenueError as exc:
                error = {"code": exc.code, "msg": exc.msg}
                await conn.ws.send_json({"id": request_id, "status": exc.status, "error": error})
                return
            conn.subscription_id = conn.id
            await conn.ws.send_json({"id": request_id, "status": 200, "result": {"subscriptionId": conn.id}})
            await self._notify_user()
        elif method in ("userDataStream.unsubscribe", "ping"):
            conn.subscription_id = None if method != "ping" else conn.subscription_id
            await conn.ws.send_json({"id": request_id, "status": 200, "result": {}})
        else:
            error = {"code": -1100, "msg": f"Unknown method {method}"}
            await conn.ws.send_json({"id": request_id, "status": 400, "error": error})

    async def _notify_user(self) -> None:
        assert self._user_cond is not None
        async with self._user_cond:
            self._user_cond.notify_all()

    def _check_ws_signature(self, params: dict[str, str]) -> None:
        """WebSocket API signing: keysorted `k=v` pairs (not URL-encoded) without `signature`, HMAC-SHA256."""
        secret = self._api_key(params.get("apiKey"))
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        if not hmac.compare_digest(sign(secret, payload), params.get("signature", "")):
            raise VenueError(400, -1022, "Signature for this request is not valid.")
        self._check_time(params)


# ---------------------------------------------------------------- ccxt clients that trade on a venue

ClientKind = Literal["sync", "async", "pro"]


class VenueTime:
    """The caller's clock: the venue's virtual clock plus a skew; a sleep records itself and moves the venue on."""

    def __init__(self, venue: TradingVenue, skew_ms: int = 0) -> None:
        self.venue = venue
        self.skew_ms = skew_ms
        self.sleeps: list[int] = []

    def now_ms(self) -> int:
        return self.venue.clock.now_ms() + self.skew_ms

    async def sleep_until(self, when_ms: int) -> None:
        self.sleeps.append(max(0, when_ms - self.now_ms()))
        if when_ms > self.now_ms():
            self.venue.clock.set(when_ms - self.skew_ms)
        await asyncio.sleep(0)


# The venue's order statuses as the order model names them.
VENUE_STATUS = {
    "NEW": "open",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "EXPIRED": "expired",
}


def trading_client(
    venue: TradingVenue,
    kind: ClientKind = "async",
    *,
    api_key: str = "test-key",
    secret: str = "test-secret",
    skew_ms: int = 0,
    sandbox: bool = False,
    **config: Any,
) -> Any:
    """A real ccxt binance client (sync, async REST or ccxt.pro) with keys, pointed at `venue`.

    Its signing clock is the venue's virtual clock plus `skew_ms` (ccxt's `nonce()`), so timestamps
    are deterministic and a skewed client can be simulated. With `sandbox=True` the main URLs point
    at the venue's main port, `urls['test']` at its sandbox port, and `set_sandbox_mode(True)` is on.
    Close async clients with `await client.close()`.
    """
    import ccxt
    import ccxt.async_support
    import ccxt.pro

    from cracktrader.data.sources.ccxt_source import LOCAL_SERVER_OPTIONS, point_exchange_at

    module: Any = {"sync": ccxt, "async": ccxt.async_support, "pro": ccxt.pro}[kind]
    options = {**LOCAL_SERVER_OPTIONS, "fetchOpenOrders": {"warnWithoutSymbol": False}, **config.pop("options", {})}
    client = module.binance(
        {"apiKey": api_key, "secret": secret, "enableRateLimit": False, "timeout": 5_000, **config, "options": options}
    )
    point_exchange_at(client, venue.sandbox_base_url)
    test_urls = client.urls["test"]
    point_exchange_at(client, venue.base_url)
    if sandbox:
        client.urls = {**client.urls, "test": test_urls}
        client.set_sandbox_mode(True)
    # ccxt signs with nonce() = milliseconds() - timeDifference: read the virtual clock instead.
    client.nonce = lambda: venue.clock.now_ms() + skew_ms
    return client


__all__ = [
    "VENUE_STATUS",
    "ClientKind",
    "DroppedRequest",
    "FeeAsset",
    "HookWhen",
    "OrderRef",
    "TradingVenue",
    "VenueTime",
    "sign",
    "trading_client",
]
