"""OKX's protocol on the fake venue: REST v5 and the v5 WebSocket, over the same book, account and faults.

`OkxVenue` is a `TradingVenue` (one order book, one account, one virtual clock, the same fault switches) that
also speaks what ccxt 4.5.90's `okx` / `ccxt.pro.okx` clients send, read from their source: `/api/v5/...` REST with
OK-ACCESS-KEY/SIGN/TIMESTAMP/PASSPHRASE headers (base64 HMAC-SHA256 of timestamp + method + path?query + body,
checked strictly), `{"code": "0", "data": [...]}` answers, and `/ws/v5/{public,business,private}` sockets with
`login`, `candle<bar>` and `orders` channels. Only the protocol layer lives here: placing, matching, fills, the
order faults (accept then time out, 503, hidden orders) and the push faults (duplicate, drop, reorder) are the
shared core's, so a scenario means the same on both venues.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .account import FakeOrder, FakeTrade, VenueError
from .binance import DEFAULT_LISTING_MS, DEFAULT_MARKETS, DEFAULT_NOW_MS, FakeMarket, Handler, _Failure
from .clock import VirtualClock
from .trading import DroppedRequest, TradingVenue, _OrderFault, _UserConn
from .venue import _Conn, read_frames

API = "/api/v5"
WS_BASE = "/ws/v5"  # ccxt.pro okx: urls['api']['ws'] (+ /public, /business, /private) after a rebase
DEFAULT_PASSPHRASES: dict[str, str] = {"test-key": "test-passphrase"}
MAX_SKEW_MS = 30_000  # OKX refuses a request timestamp more than 30 s from its clock (50102)
FILLS_LIMIT = 100  # /trade/fills(-history): default and maximum page
CANDLES_LIMIT = 300
CL_ORD_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")  # OKX: letters and digits, at most 32
# OKX bar names <-> the core's (binance-style) intervals.
BARS: dict[str, str] = {
    "1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1H": "1h", "2H": "2h", "4H": "4h",
    "6Hutc": "6h", "12Hutc": "12h", "1Dutc": "1d", "1Wutc": "1w", "1Mutc": "1M",
    "6H": "6h", "12H": "12h", "1D": "1d", "1W": "1w", "1M": "1M",
}  # fmt: skip
BAR_OF: dict[str, str] = {"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "2h": "2H",
                          "4h": "4H", "6h": "6H", "12h": "12H", "1d": "1D", "1w": "1W", "1M": "1M"}  # fmt: skip
# The core's order states as OKX names them (a market order's unfilled rest is cancelled on OKX).
STATES: dict[str, str] = {
    "NEW": "live", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled", "CANCELED": "canceled",
    "EXPIRED": "canceled",
}  # fmt: skip
ORD_TYPES: dict[str, tuple[str, str]] = {  # OKX ordType -> (core type, time in force)
    "market": ("MARKET", "GTC"), "limit": ("LIMIT", "GTC"), "post_only": ("LIMIT_MAKER", "GTC"),
    "ioc": ("LIMIT", "IOC"), "fok": ("LIMIT", "FOK"),
}  # fmt: skip
# The core's order states as the order model names them when OKX reports them (for tests' comparisons).
VENUE_STATUS: dict[str, str] = {
    "NEW": "open", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled", "CANCELED": "canceled",
    "EXPIRED": "canceled",
}  # fmt: skip
OKX_TYPE: dict[str, str] = {"MARKET": "market", "LIMIT": "limit", "LIMIT_MAKER": "post_only"}
# The core's (binance) codes as OKX answers them: (code, message).
_CODES: dict[int, tuple[str, str]] = {
    -1013: ("51000", "Parameter sz error"),
    -2011: ("51400", "Order cancellation failed as the order has been filled, canceled or does not exist"),
    -2013: ("51603", "Order does not exist"),
}
_INSUFFICIENT = ("51008", "Order failed. Insufficient USDT balance in account.")


class OkxError(Exception):
    """An OKX error answer: HTTP status, code (a string on OKX) and message."""

    def __init__(self, code: str, msg: str, status: int = 200) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.status = code, msg, status


def okx_sign(secret: str, payload: str) -> str:
    """base64 HMAC-SHA256 of `payload`: what ccxt's okx sends as OK-ACCESS-SIGN (and `sign` at login)."""
    return base64.b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()


def inst_id(market: FakeMarket) -> str:
    """OKX's instrument id (`BTC-USDT`) of a market."""
    return f"{market.base}-{market.quote}"


def _s(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _iso_ms(text: str) -> int:
    try:
        return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError as exc:
        raise OkxError("50112", "Invalid OK-ACCESS-TIMESTAMP", 401) from exc


def _dec(value: Any, name: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        out = Decimal("NaN")
    if value in (None, "") or not out.is_finite() or out <= 0:
        raise OkxError("51000", f"Parameter {name} error")
    return out


@dataclass(frozen=True, slots=True)
class Subscription:
    """One private channel a socket subscribed to, as OKX echoes it in each push's `arg`."""

    arg: tuple[tuple[str, str], ...]

    @property
    def as_dict(self) -> dict[str, str]:
        return dict(self.arg)


class OkxVenue(TradingVenue):
    """The trading venue reached as OKX: REST v5 and the v5 WebSocket on the same two ports (main and sandbox)."""

    def __init__(
        self,
        *,
        clock: VirtualClock | None = None,
        now_ms: int = DEFAULT_NOW_MS,
        listing_ms: int = DEFAULT_LISTING_MS,
        markets: Iterable[FakeMarket] = DEFAULT_MARKETS,
        balances: dict[str, Decimal | str | float] | None = None,
        api_keys: dict[str, str] | None = None,
        passphrases: dict[str, str] | None = None,
        fee_rate: Decimal | str = "0.001",
    ) -> None:
        # OKX spot has a minimum size (minSz) but no minimum notional: the core's notional check is off here.
        markets = tuple(replace(m, min_notional="0") for m in markets)
        super().__init__(clock=clock, now_ms=now_ms, listing_ms=listing_ms, markets=markets, balances=balances,
                         api_keys=api_keys, fee_rate=fee_rate)  # fmt: skip
        self.passphrases = dict(DEFAULT_PASSPHRASES if passphrases is None else passphrases)
        self._okx_public: set[int] = set()  # ids of the market-data sockets that speak OKX
        self._okx_private: set[int] = set()  # ids of the user-data sockets that speak OKX
        self._private: dict[int, list[Subscription]] = {}  # private socket id -> its `orders` subscriptions
        self._logged_in: set[int] = set()
        self._bill_ids: dict[int, int] = {}  # trade id -> OKX bill id
        # The dead man's switch (`trade/cancel-all-after`): every timeOut it was given, and when it fires (ms).
        self.dead_man_calls: list[int] = []
        self.dead_man_deadline: int | None = None

    # ------------------------------------------------------------ faults OKX names its own way

    def accept_then_50004(self) -> None:
        """The next new order is placed, then answered 50004 "endpoint request timeout" (ccxt: RequestTimeout)."""
        body = {"code": "50004", "msg": "API endpoint request timeout (does not mean that the request was successful "
                "or failed, please check the request result).", "data": []}  # fmt: skip
        self._order_faults.append(_OrderFault("error", 200, body))

    def expire_dead_man(self) -> int:
        """What OKX does when the timer of `cancel-all-after` runs out: cancel every open order; how many it did."""
        if self.dead_man_deadline is None or self.clock.now_ms() < self.dead_man_deadline:
            return 0
        self.dead_man_deadline = None
        open_orders = [o for o in self.account.open_orders() if not o.external]
        for o in open_orders:
            self.cancel_order(o.order_id, o.symbol)  # the venue's own symbol id: `cancel_order` takes it as it is
        return len(open_orders)

    # ------------------------------------------------------------ markets and ids

    def market_of(self, inst: str | None) -> FakeMarket:
        """The market of OKX instrument `inst`; 51001 when there is none."""
        for market in self.markets.values():
            if inst_id(market) == inst:
                return market
        raise OkxError("51001", f"Instrument ID, Instrument ID code, or Spread ID doesn't exist. ({inst})")

    def order(self, ref: int | str, symbol: str) -> FakeOrder | None:
        """The venue's own view of an order by exchange id (int or digits) or client id, hidden or not."""
        sid = symbol.replace("/", "").replace("-", "")
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        return self._find(sid, ref)

    # ------------------------------------------------------------ HTTP layer

    def routes(self) -> dict[str, Handler]:
        """OKX's GET routes and sockets first (the core's `/ws/{tail}` would otherwise take `/ws/v5/...`)."""
        okx: dict[str, Handler] = {
            f"{API}/public/time": self._okx(self._time_v5, signed=False),
            f"{API}/public/instruments": self._okx(self._instruments, signed=False),
            f"{API}/market/candles": self._okx(self._candles, signed=False),
            f"{API}/market/history-candles": self._okx(self._candles, signed=False),
            f"{API}/market/ticker": self._okx(self._ticker_v5, signed=False),
            f"{API}/account/balance": self._okx(self._balance),
            f"{API}/asset/currencies": self._okx(self._currencies),
            f"{API}/trade/order": self._okx(self._get_order_v5),
            f"{API}/trade/orders-pending": self._okx(self._orders_pending),
            f"{API}/trade/fills": self._okx(self._fills),
            f"{API}/trade/fills-history": self._okx(self._fills),
            f"{WS_BASE}/public": self._okx_ws,
            f"{WS_BASE}/business": self._okx_ws,
            f"{WS_BASE}/private": self._okx_ws,
        }
        return {**okx, **super().routes()}

    def method_routes(self) -> list[tuple[str, str, Handler]]:
        """OKX's POST routes, then the core's."""
        return [
            ("POST", f"{API}/trade/order", self._okx(self._place_v5)),
            ("POST", f"{API}/trade/batch-orders", self._okx(self._place_v5)),
            ("POST", f"{API}/trade/cancel-order", self._okx(self._cancel_v5)),
            ("POST", f"{API}/trade/cancel-all-after", self._okx(self._cancel_all_after)),
            *super().method_routes(),
        ]

    def _okx(self, fn: Callable[[web.Request, dict[str, Any]], Awaitable[Any]], *, signed: bool = True) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                params = await self._okx_signed(request) if signed else dict(request.query)
                result = await fn(request, params)
            except OkxError as exc:
                return web.json_response({"code": exc.code, "msg": exc.msg, "data": []}, status=exc.status)
            except VenueError as exc:
                code, msg = _CODES.get(exc.code, ("51000", exc.msg))
                return web.json_response({"code": code, "msg": msg, "data": []})
            except DroppedRequest:
                if request.transport is not None:
                    request.transport.abort()  # read, then dropped unanswered (the shared hook's `received`)
                return web.Response(status=503, text="dropped")
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response({"code": "0", "msg": "", "data": result})

        return handler

    @staticmethod
    def _failure_response(failure: _Failure) -> web.Response:
        # A 429 from OKX carries code 50011 (ccxt: RateLimitExceeded); other statuses as the core answers them.
        if failure.body is None and failure.status == 429:
            body = {"code": "50011", "msg": "Too Many Requests", "data": []}
            return web.json_response(body, status=429, headers=failure.headers)
        if failure.body is None:
            return web.Response(status=failure.status, text=HTTPStatus(failure.status).phrase, headers=failure.headers)
        return TradingVenue._failure_response(failure)

    async def _okx_signed(self, request: web.Request) -> dict[str, Any]:
        """Check key, passphrase, timestamp (on the virtual clock), the demo header on the sandbox, and the HMAC."""
        headers = request.headers
        key = headers.get("OK-ACCESS-KEY")
        if not key:
            raise OkxError("50103", 'Request header "OK-ACCESS-KEY" cannot be empty.', 401)
        secret = self.api_keys.get(key)
        if secret is None:
            raise OkxError("50111", "Invalid OK-ACCESS-KEY.", 401)
        passphrase = headers.get("OK-ACCESS-PASSPHRASE")
        if not passphrase:
            raise OkxError("50104", 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.', 401)
        if passphrase != self.passphrases.get(key):
            raise OkxError("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.', 401)
        stamp = headers.get("OK-ACCESS-TIMESTAMP", "")
        ts = _iso_ms(stamp)
        if abs(ts - self.clock.now_ms()) > MAX_SKEW_MS:
            raise OkxError("50102", "Timestamp request expired.", 401)
        sandbox = self._site(request) == "sandbox"
        if (headers.get("x-simulated-trading") == "1") != sandbox:
            # Demo keys work only on the demo service, and only with this header; live keys never with it.
            raise OkxError("50101", "APIKey does not match current environment.", 401)
        body = await request.text() if request.method != "GET" else ""
        if not hmac.compare_digest(okx_sign(secret, stamp + request.method + request.path_qs + body),
                                   headers.get("OK-ACCESS-SIGN", "")):  # fmt: skip
            raise OkxError("50113", "Invalid Sign.", 401)
        self.credentialed.append((request.method, request.path, dict(request.query)))
        if request.method == "GET":
            return dict(request.query)
        try:
            parsed = json.loads(body) if body else {}
        except ValueError as exc:
            raise OkxError("50000", "Body cannot be empty.") from exc
        return {"_body": parsed} if isinstance(parsed, list) else dict(parsed)

    def _site(self, request: web.Request) -> str:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return "sandbox" if sockname and sockname[1] == self._sandbox_port else "main"

    # ------------------------------------------------------------ public REST

    async def _time_v5(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, str]]:
        return [{"ts": str(self.clock.now_ms())}]

    async def _instruments(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, str]]:
        if params.get("instType") != "SPOT":
            return []  # this venue lists spot markets only
        return [
            {
                "instType": "SPOT", "instId": inst_id(m), "baseCcy": m.base, "quoteCcy": m.quote, "settleCcy": "",
                "ctVal": "", "ctMult": "", "ctValCcy": "", "optType": "", "stk": "", "listTime": str(self.listing_ms),
                "expTime": "", "lever": "", "tickSz": _s(Decimal(m.tick_size)), "lotSz": _s(Decimal(m.step_size)),
                "minSz": _s(Decimal(m.min_qty)), "ctType": "", "alias": "", "uly": "", "instFamily": "",
                "maxLmtSz": "9000", "maxMktSz": "1000000", "maxLmtAmt": "20000000", "maxMktAmt": "1000000",
                "state": "live" if m.status == "TRADING" else "suspend", "ruleType": "normal",
            }
            for m in self.markets.values()
        ]  # fmt: skip

    async def _currencies(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Each asset of the venue's markets on one chain (ccxt's okx asks for them, signed, on the main site only)."""
        assets = sorted({a for m in self.markets.values() for a in (m.base, m.quote)})
        return [
            {"ccy": a, "name": a, "chain": f"{a}-{a}", "canDep": True, "canWd": True, "canInternal": True,
             "minWd": "0.0001", "maxWd": "1000000", "wdTickSz": "8", "minFee": "0", "maxFee": "0", "mainNet": True}
            for a in assets
        ]  # fmt: skip

    async def _candles(self, request: web.Request, params: dict[str, Any]) -> list[list[str]]:
        """Candles newest first; `after`: older than that ts, `before`: newer than it (OKX's names)."""
        market = self.market_of(params.get("instId"))
        interval = BARS.get(str(params.get("bar", "1m")))
        if interval is None:
            raise OkxError("51000", "Parameter bar error")
        try:
            limit = max(1, min(int(params.get("limit", 100)), CANDLES_LIMIT))
            after = int(params["after"]) if params.get("after") else None
            before = int(params["before"]) if params.get("before") else None
        except ValueError as exc:
            raise OkxError("51000", "Parameter limit error") from exc
        end = after - 1 if after is not None else None
        if before is None:
            bars = self.klines(market.id, interval, None, end, limit)
        else:
            bars = self.klines(market.id, interval, before + 1, end, CANDLES_LIMIT * 4)[-limit:]
        now = self.clock.now_ms()
        rows = []
        for open_ms, o, h, low, c, v in reversed(bars):
            closed = "1" if self._bar_closed(interval, open_ms, now) else "0"
            quote = f"{v * (o + c) / 2:.8f}"
            rows.append([str(open_ms), f"{o:.8f}", f"{h:.8f}", f"{low:.8f}", f"{c:.8f}", f"{v:.8f}", quote, quote,
                         closed])  # fmt: skip
        return rows

    @staticmethod
    def _bar_closed(interval: str, open_ms: int, now: int) -> bool:
        from .venue import interval_next

        return now >= interval_next(interval, open_ms)

    async def _ticker_v5(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, str]]:
        market = self.market_of(params.get("instId"))
        t = self.ticker(market.id)
        return [{
            "instType": "SPOT", "instId": inst_id(market), "last": t["lastPrice"], "lastSz": t["lastQty"],
            "askPx": t["askPrice"], "askSz": t["askQty"], "bidPx": t["bidPrice"], "bidSz": t["bidQty"],
            "open24h": t["openPrice"], "high24h": t["highPrice"], "low24h": t["lowPrice"],
            "volCcy24h": t["quoteVolume"], "vol24h": t["volume"], "ts": str(self.clock.now_ms()),
            "sodUtc0": t["openPrice"], "sodUtc8": t["openPrice"],
        }]  # fmt: skip

    # ------------------------------------------------------------ private REST

    async def _balance(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, Any]]:
        details = [
            {"ccy": a, "availBal": _s(b.free), "frozenBal": _s(b.locked), "cashBal": _s(b.free + b.locked),
             "eq": _s(b.free + b.locked), "uTime": str(self.account.update_time or self.clock.now_ms())}
            for a, b in sorted(self.account.balances.items())
        ]  # fmt: skip
        return [{"uTime": str(self.account.update_time or self.clock.now_ms()), "totalEq": "0", "details": details}]

    async def _place_v5(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse | list[Any]:
        """POST /trade/order (one object) or /trade/batch-orders (a list; ccxt's default): place each."""
        entries = params.get("_body", [params])
        if not entries or not all(isinstance(e, dict) for e in entries):
            raise OkxError("50000", "Body cannot be empty.")
        results: list[dict[str, str]] = []
        for entry in entries:
            placed = await self._place_one(entry)
            if isinstance(placed, web.StreamResponse):
                return placed  # a fault's answer (the order may exist)
            results.append(placed)
        if all(r["sCode"] != "0" for r in results):
            return web.json_response({"code": "1", "msg": "All operations failed", "data": results})
        return results

    async def _place_one(self, entry: dict[str, Any]) -> dict[str, str] | web.StreamResponse:
        cl_ord_id = str(entry.get("clOrdId") or "")
        try:
            market = self.market_of(entry.get("instId"))
            if entry.get("tdMode") != "cash":
                raise OkxError("51000", "Parameter tdMode error")
            side = str(entry.get("side", ""))
            if side not in ("buy", "sell"):
                raise OkxError("51000", "Parameter side error")
            kind = ORD_TYPES.get(str(entry.get("ordType", "")))
            if kind is None:
                raise OkxError("51000", "Parameter ordType error")
            if cl_ord_id and not CL_ORD_ID.match(cl_ord_id):
                raise OkxError("51000", "Parameter clOrdId error")
            if entry.get("tgtCcy", "base_ccy") != "base_ccy":
                raise OkxError("51000", "Parameter tgtCcy error")  # quote-sized market buys are not modelled
            qty = _dec(entry.get("sz"), "sz")
            type_, tif = kind
            price = _dec(entry.get("px"), "px") if type_ != "MARKET" else None
            if cl_ord_id and any(o.client_id == cl_ord_id for o in self.account.orders.values()):
                # OKX keeps a clOrdId unique among all of an account's orders, not only the open ones.
                raise OkxError("51016", "Duplicated clOrdId")
            client_id = cl_ord_id or f"okx{next(self._user_ids):020d}"
            order = await self._accept_order(market.id, side.upper(), type_, qty, price, client_id, tif)
        except OkxError as exc:
            return {"clOrdId": cl_ord_id, "ordId": "", "tag": "", "ts": "", "sCode": exc.code, "sMsg": exc.msg}
        except VenueError as exc:
            insufficient = "insufficient" in exc.msg.lower()
            code, msg = _INSUFFICIENT if insufficient else _CODES.get(exc.code, ("51000", exc.msg))
            return {"clOrdId": cl_ord_id, "ordId": "", "tag": "", "ts": "", "sCode": code, "sMsg": msg}
        if isinstance(order, web.StreamResponse):
            return order
        return {"clOrdId": order.client_id if cl_ord_id else "", "ordId": str(order.order_id), "tag": "",
                "ts": str(self.clock.now_ms()), "sCode": "0", "sMsg": "Order placed"}  # fmt: skip

    def _order_by(self, params: dict[str, Any]) -> tuple[FakeMarket, FakeOrder | None]:
        market = self.market_of(params.get("instId"))
        if params.get("ordId"):
            try:
                return market, self.account.find(market.id, int(str(params["ordId"])), None)
            except ValueError as exc:
                raise OkxError("51000", "Parameter ordId error") from exc
        if params.get("clOrdId"):
            return market, self.account.find(market.id, None, str(params["clOrdId"]))
        raise OkxError("51000", "Either parameter ordId or clOrdId is required.")

    async def _get_order_v5(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, Any]]:
        _, order = self._order_by(params)
        if order is None or not self._visible(order):
            raise OkxError("51603", "Order does not exist")
        return [self.order_json(order)]

    async def _cancel_v5(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse | list[Any]:
        market, order = self._order_by(params)
        cl_ord_id = str(params.get("clOrdId") or "")
        if order is None or not self._visible(order) or not order.is_open:
            code, msg = ("51400", _CODES[-2011][1]) if order is None or not self._visible(order) else (
                ("51401", "Order has been canceled") if order.status in ("CANCELED", "EXPIRED")
                else ("51402", "Order has been completed"))  # fmt: skip
            data = [{"clOrdId": cl_ord_id, "ordId": str(params.get("ordId") or ""), "sCode": code, "sMsg": msg}]
            return web.json_response({"code": "1", "msg": "All operations failed", "data": data})
        self._run_hook("cancel", "received")
        await self._locked(self._cancel_now(order.order_id, market.id))
        self._run_hook("cancel", "placed")
        return [{"clOrdId": order.client_id, "ordId": str(order.order_id), "ts": str(self.clock.now_ms()),
                 "sCode": "0", "sMsg": ""}]  # fmt: skip

    async def _cancel_all_after(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, str]]:
        """Arm (timeOut 10-120 s), refresh, or with 0 disarm the dead man's switch."""
        try:
            seconds = int(params.get("timeOut"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise OkxError("51000", "Parameter timeOut error") from None
        if seconds != 0 and not 10 <= seconds <= 120:
            raise OkxError("51000", "Parameter timeOut error")
        now = self.clock.now_ms()
        self.dead_man_calls.append(seconds)
        self.dead_man_deadline = now + seconds * 1000 if seconds else None
        return [{"triggerTime": str(self.dead_man_deadline or 0), "ts": str(now)}]

    async def _orders_pending(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, Any]]:
        sid = self.market_of(params["instId"]).id if params.get("instId") else None
        rows = [o for o in self.account.open_orders(sid) if self._visible(o)]
        return [self.order_json(o) for o in sorted(rows, key=lambda o: -o.order_id)][: int(params.get("limit", 100))]

    async def _fills(self, request: web.Request, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Fills newest first, at most 100; `begin`/`end` bound ts (inclusive), `after`/`before` bound the bill id."""
        if not params.get("instType"):
            raise OkxError("51000", "Parameter instType error")
        sid = self.market_of(params["instId"]).id if params.get("instId") else None
        hidden = {o.order_id for o in self.account.orders.values() if not self._visible(o)}
        try:
            limit = max(1, min(int(params.get("limit", FILLS_LIMIT)), FILLS_LIMIT))
            bounds = {k: int(params[k]) for k in ("begin", "end", "after", "before", "ordId") if params.get(k)}
        except ValueError as exc:
            raise OkxError("51000", "Parameter error") from exc
        rows = []
        for trade in reversed(self.account.trades):
            bill = self._bill(trade)
            if (sid is not None and trade.symbol != sid) or trade.order_id in hidden:
                continue
            if (
                ("ordId" in bounds and trade.order_id != bounds["ordId"])
                or ("begin" in bounds and trade.time < bounds["begin"])
                or ("end" in bounds and trade.time > bounds["end"])
                or ("after" in bounds and bill >= bounds["after"])
                or ("before" in bounds and bill <= bounds["before"])
            ):
                continue  # fmt: skip
            rows.append(self.fill_json(trade))
            if len(rows) == limit:
                break
        return rows

    def _bill(self, trade: FakeTrade) -> int:
        return self._bill_ids.setdefault(trade.id, 700_000 + trade.id)

    # ------------------------------------------------------------ OKX documents

    def order_json(self, order: FakeOrder) -> dict[str, Any]:
        """An order as /trade/order and /trade/orders-pending list it."""
        market = self.markets[order.symbol]
        last = order.trades[-1] if order.trades else None
        fee = sum((t.commission for t in order.trades), Decimal(0))
        fee_ccy = last.commission_asset if last else (market.base if order.side == "BUY" else market.quote)
        return {
            "instType": "SPOT", "instId": inst_id(market), "ordId": str(order.order_id), "clOrdId": order.client_id,
            "tag": "", "px": _s(order.price) if order.type != "MARKET" else "", "sz": _s(order.qty),
            "ordType": OKX_TYPE.get(order.type, "limit") if order.time_in_force == "GTC"
            else order.time_in_force.lower(), "side": order.side.lower(), "posSide": "net", "tdMode": "cash",
            "tgtCcy": "", "accFillSz": _s(order.executed),
            "avgPx": _s(order.cum_quote / order.executed) if order.executed else "",
            "fillPx": _s(last.price) if last else "", "fillSz": _s(last.qty) if last else "0",
            "tradeId": str(last.id) if last else "", "fillTime": str(last.time) if last else "",
            "state": STATES[order.status], "lever": "", "fee": _s(-fee), "feeCcy": fee_ccy, "rebate": "0",
            "rebateCcy": market.quote, "category": "normal", "reduceOnly": "false", "cancelSource": "",
            "source": "", "cTime": str(order.time), "uTime": str(order.update_time or order.time),
        }  # fmt: skip

    def fill_json(self, trade: FakeTrade) -> dict[str, Any]:
        """A fill as /trade/fills(-history) lists it: the fee negative (charged), OKX's sign."""
        market = self.markets[trade.symbol]
        order = self.account.orders[trade.order_id]
        return {
            "instType": "SPOT", "instId": inst_id(market), "tradeId": str(trade.id), "ordId": str(trade.order_id),
            "clOrdId": order.client_id, "billId": str(self._bill(trade)), "tag": "", "fillPx": _s(trade.price),
            "fillSz": _s(trade.qty), "side": "buy" if trade.is_buyer else "sell", "posSide": "net",
            "execType": "M" if trade.is_maker else "T", "feeCcy": trade.commission_asset,
            "fee": _s(-trade.commission), "ts": str(trade.time), "fillTime": str(trade.time),
        }  # fmt: skip

    def _push_data(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The `orders` channel item for one core executionReport (its state then, faults applied by the core)."""
        if event.get("e") != "executionReport":
            return None
        market = self.markets[event["s"]]
        order = self.account.orders.get(int(event["i"]))
        trade = event["x"] == "TRADE"
        executed, cum_quote = Decimal(event["z"]), Decimal(event["Z"])
        # The order's fee so far: its trades up to this one (the event may be sent late, reordered by a fault).
        fees = [t.commission for t in (order.trades if order else []) if not trade or t.id <= int(event["t"])]
        last_fee = Decimal(event["n"]) if trade else Decimal(0)
        fee_ccy = event["N"] or (market.base if event["S"] == "BUY" else market.quote)
        return {
            "instType": "SPOT", "instId": inst_id(market), "ordId": str(event["i"]), "clOrdId": event["c"],
            "tag": "", "px": _s(Decimal(event["p"])) if event["o"] != "MARKET" else "", "sz": _s(Decimal(event["q"])),
            "ordType": OKX_TYPE.get(event["o"], "limit") if event["f"] == "GTC" else event["f"].lower(),
            "side": event["S"].lower(), "posSide": "net", "tdMode": "cash", "tgtCcy": "",
            "accFillSz": _s(executed), "avgPx": _s(cum_quote / executed) if executed else "",
            "fillSz": _s(Decimal(event["l"])) if trade else "0", "fillPx": _s(Decimal(event["L"])) if trade else "",
            "tradeId": str(event["t"]) if trade else "", "fillTime": str(event["T"]) if trade else "",
            "fillFee": _s(-last_fee), "fillFeeCcy": fee_ccy if trade else "",
            "execType": ("M" if event["m"] else "T") if trade else "", "state": STATES[event["X"]],
            "fee": _s(-sum(fees, Decimal(0))), "feeCcy": fee_ccy, "rebate": "0", "rebateCcy": market.quote,
            "category": "normal", "reduceOnly": "false", "cancelSource": "", "amendResult": "", "code": "0",
            "msg": "", "reqId": "", "lever": "", "pnl": "0", "cTime": str(event["O"]), "uTime": str(event["E"]),
        }  # fmt: skip

    # ------------------------------------------------------------ WebSocket

    def _user_frame(self, conn: _UserConn, event: dict[str, Any]) -> dict[str, Any] | None:
        if conn.id not in self._okx_private:
            return super()._user_frame(conn, event)
        subs = self._private.get(conn.id) or []
        data = self._push_data(event)
        if not subs or data is None:
            return None
        return {"arg": subs[0].as_dict, "data": [data]}

    def user_stream_count(self) -> int:
        """Open user-data sockets that listen: the core's, plus OKX sockets logged in and subscribed to `orders`."""
        okx = sum(1 for c in self._user_conns if c.id in self._okx_private and self._private.get(c.id))
        return super().user_stream_count() + okx

    async def _okx_ws(self, request: web.Request) -> web.StreamResponse:
        self.site_log.append((self._site(request), "GET", request.path))
        if self.refusing_sockets:
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=False)  # the venue's pings are the settle barriers
        await ws.prepare(request)
        private = request.path.endswith("/private")
        if private:
            user = _UserConn(next(self._user_ids), ws, request)
            self._okx_private.add(user.id)
            self._user_conns.add(user)
            try:
                await read_frames(ws, user.pongs, lambda data: self._on_private(user, data))
            finally:
                self._user_conns.discard(user)
                self._private.pop(user.id, None)
                self._logged_in.discard(user.id)
            return ws
        conn = _Conn(next(self._conn_ids), ws, request)
        self._okx_public.add(conn.id)
        self._conns.add(conn)
        self.connections_opened += 1
        try:
            await read_frames(ws, conn.pongs, lambda data: self._on_public(conn, data))
        finally:
            self._conns.discard(conn)
        return ws

    async def _on_public(self, conn: _Conn, data: str) -> None:
        if data == "ping":
            await conn.ws.send_str("pong")
            return
        try:
            message = json.loads(data)
            op, args = message["op"], list(message.get("args") or [])
        except (ValueError, KeyError, TypeError):
            await conn.ws.send_json({"event": "error", "code": "60012", "msg": f"Invalid request: {data}"})
            return
        for arg in args:
            channel, inst = str(arg.get("channel", "")), str(arg.get("instId", ""))
            interval = BARS.get(channel[len("candle") :]) if channel.startswith("candle") else None
            market = next((m for m in self.markets.values() if inst_id(m) == inst), None)
            if interval is None or market is None:
                msg = f"Wrong URL or channel:{channel},instId:{inst} doesn't exist."
                await conn.ws.send_json({"event": "error", "code": "60018", "msg": msg, "connId": str(conn.id)})
                continue
            name = f"{market.id.lower()}@kline_{interval}"  # the core's stream name
            if op == "subscribe":
                await conn.ws.send_json({"event": "subscribe", "arg": arg, "connId": str(conn.id)})
                await self._subscribe(conn, [name], None)
            elif op == "unsubscribe":
                conn.seen_ms.pop(name, None)
                await conn.ws.send_json({"event": "unsubscribe", "arg": arg, "connId": str(conn.id)})

    async def _send(self, conn: _Conn, name: str, at_ms: int, message: dict[str, Any]) -> None:
        if conn.id not in self._okx_public:
            await super()._send(conn, name, at_ms, message)
            return
        k = message.get("k")
        if k is None:
            return  # only candles are served over OKX's sockets
        market = self.markets[k["s"]]
        quote = k["q"]
        okx = {
            "arg": {"channel": f"candle{BAR_OF[k['i']]}", "instId": inst_id(market)},
            "data": [[str(k["t"]), k["o"], k["h"], k["l"], k["c"], k["v"], quote, quote, "1" if k["x"] else "0"]],
        }
        if conn not in self._conns:
            return
        text = json.dumps(okx)
        from .venue import Delivered

        for _ in range(2 if self._take_duplicate(name) else 1):
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self._conns.discard(conn)
                return
            self.delivered.append(Delivered(conn.id, name, at_ms, message))

    async def _on_private(self, conn: _UserConn, data: str) -> None:
        if data == "ping":
            await conn.ws.send_str("pong")
            return
        try:
            message = json.loads(data)
            op, args = str(message["op"]), list(message.get("args") or [])
        except (ValueError, KeyError, TypeError):
            await conn.ws.send_json({"event": "error", "code": "60012", "msg": f"Invalid request: {data}"})
            return
        if op == "login":
            await self._login(conn, args[0] if args else {})
        elif op == "subscribe":
            for arg in args:
                if conn.id not in self._logged_in:
                    await conn.ws.send_json({"event": "error", "code": "60011", "msg": "Please log in"})
                    continue
                if arg.get("channel") != "orders":
                    msg = f"Wrong URL or channel:{arg.get('channel')} doesn't exist."
                    await conn.ws.send_json({"event": "error", "code": "60018", "msg": msg})
                    continue
                sub = Subscription(tuple(sorted((str(k), str(v)) for k, v in arg.items())))
                subs = self._private.setdefault(conn.id, [])
                if sub not in subs:
                    subs.append(sub)  # watch_orders and watch_my_trades both ask for `orders`: one push serves both
                await conn.ws.send_json({"event": "subscribe", "arg": arg, "connId": str(conn.id)})
            await self._notify_user()
        else:
            await conn.ws.send_json({"event": "error", "code": "60012", "msg": f"Invalid request: {data}"})

    async def _login(self, conn: _UserConn, arg: dict[str, Any]) -> None:
        """Check a login's key, passphrase and sign; its timestamp is ccxt's wall clock (`seconds()`), not checked."""
        key, stamp = str(arg.get("apiKey", "")), str(arg.get("timestamp", ""))
        self.credentialed.append(("WS", conn.request.path, {k: str(v) for k, v in arg.items()}))
        secret = self.api_keys.get(key)
        if secret is None:
            await conn.ws.send_json({"event": "error", "code": "60005", "msg": "Invalid apiKey"})
            return
        if arg.get("passphrase") != self.passphrases.get(key):
            await conn.ws.send_json({"event": "error", "code": "60024", "msg": "Wrong passphrase"})
            return
        expected = okx_sign(secret, stamp + "GET" + "/users/self/verify")
        if not stamp.isdigit() or not hmac.compare_digest(expected, str(arg.get("sign", ""))):
            await conn.ws.send_json({"event": "error", "code": "60007", "msg": "Invalid sign"})
            return
        self._logged_in.add(conn.id)
        await conn.ws.send_json({"event": "login", "code": "0", "msg": "", "connId": str(conn.id)})


# ---------------------------------------------------------------- a ccxt client that trades on the venue as OKX


def okx_client(
    venue: OkxVenue,
    kind: str = "pro",
    *,
    api_key: str = "test-key",
    secret: str = "test-secret",
    password: str = "test-passphrase",
    sandbox: bool = True,
    **config: Any,
) -> Any:
    """A real ccxt okx client (async REST or ccxt.pro) pointed at `venue`, signing on the venue's clock.

    With `sandbox=True` (OKX's demo trading) its REST and WebSocket go to the venue's sandbox port and carry
    `x-simulated-trading: 1`. Close it with `await client.close()`.
    """
    import ccxt.async_support
    import ccxt.pro

    from cracktrader.data.sources.ccxt_source import LOCAL_SERVER_OPTIONS, point_exchange_at

    module: Any = {"async": ccxt.async_support, "pro": ccxt.pro}[kind]
    options = {**LOCAL_SERVER_OPTIONS, **config.pop("options", {})}
    client = module.okx({"apiKey": api_key, "secret": secret, "password": password, "enableRateLimit": False,
                         "timeout": 5_000, **config, "options": options})  # fmt: skip
    point_exchange_at(client, venue.sandbox_base_url)
    test_urls = client.urls["test"]
    point_exchange_at(client, venue.base_url)
    if sandbox:
        client.urls = {**client.urls, "test": test_urls}
        client.set_sandbox_mode(True)
    client.nonce = lambda: venue.clock.now_ms()
    return client


__all__ = ["VENUE_STATUS", "OkxError", "OkxVenue", "inst_id", "okx_client", "okx_sign"]
