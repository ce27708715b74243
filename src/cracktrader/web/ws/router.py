"""WebSocket streams: `/ws/status` (typed events) and `/ws` (channel subscriptions in seed 001's shape)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Protocol

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cracktrader.data.candles import to_ms
from cracktrader.errors import CracktraderError
from cracktrader.runs import events
from cracktrader.runs.document import now_iso
from cracktrader.runs.state import lifecycle_only
from cracktrader.web.auth.deps import WS_POLICY_VIOLATION, watch_credentials
from cracktrader.web.deps import sees_run
from cracktrader.web.input_guard import json_body_problem
from cracktrader.web.runs.service import status_anywhere

log = logging.getLogger(__name__)
router = APIRouter()

SEND_TIMEOUT_S = 5.0
MAX_SUBSCRIPTIONS = 10
MAX_MESSAGE_BYTES = 4096
CHANNELS = {
    events.STATUS_UPDATE: "status",
    events.TRADE_EXECUTION: "trades",
    events.ORDER_UPDATE: "orders",
    events.EQUITY_UPDATE: "equity",
    events.ALERT: "alerts",
}
CHANNEL_NAMES = "status, orders, trades, equity or alerts"
STATUS_STREAM_TYPES = events.STATUS_STREAM_TYPES
# Events about the caller's own things rather than a run: sent without a run filter and with `*`.
OWNED_EVENTS = frozenset({events.SWEEP_PROGRESS, events.DOWNLOAD_PROGRESS, events.WALKFORWARD_PROGRESS})
LOGGED_EVENTS = events.LOGGED_EVENTS
# The largest `since` accepted (event numbers are 64-bit in the database).
MAX_SINCE = 2**62


class Source(Protocol):
    """What a stream reads: the bus's or the event log's subscription; `get` gives None once it was dropped."""

    queue: asyncio.Queue[Any]

    async def get(self) -> Any: ...

    def close(self) -> None: ...


def _flag(value: str | None) -> bool:
    """A boolean query parameter: true, 1, yes or on."""
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


def owns_alert(principal: Any, event: events.Event) -> bool:
    """Whether a connection may receive an alert: auth off, admins, and the owner of the alert's run."""
    return principal is None or principal.is_admin or event.user_id == principal.user_id


class SendGuard:
    """When a served stream's current send began (None: not sending); its watchdog ends a send stuck too long."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None


async def _send(ws: WebSocket, message: dict[str, Any] | str) -> bool:
    """Send a message (or pre-encoded JSON text); False once the client is gone.

    A client that stops reading is dropped by the bus when its bounded queue overflows, and a send blocked on
    its full socket gives up after SEND_TIMEOUT_S: on a served stream its watchdog sees to that (a timer per
    message was a sixth of a busy stream's CPU), elsewhere a timeout around the send.
    """
    text = message if isinstance(message, str) else json.dumps(message, allow_nan=False)
    guard: SendGuard | None = getattr(ws.state, "send_guard", None)
    try:
        if guard is None:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await ws.send_text(text)
        else:
            guard.since = time.monotonic()
            await ws.send_text(text)
            guard.since = None
        return True
    except (TimeoutError, WebSocketDisconnect, RuntimeError, ConnectionError):
        return False


async def _watch_sends(guard: SendGuard) -> None:
    """Return once a send has been blocked for SEND_TIMEOUT_S (a client that never reads): the stream then ends."""
    while True:
        await asyncio.sleep(SEND_TIMEOUT_S / 10)
        since = guard.since
        if since is not None and time.monotonic() - since > SEND_TIMEOUT_S:
            return


async def _drain_incoming(ws: WebSocket, handler: Any = None) -> None:
    """Read client messages until it disconnects (and hand them to `handler`)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if handler is not None:
            await handler(message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace"))


async def _pump(ws: WebSocket, sub: Source, heartbeat_s: float, forward: Any, dropped: Any) -> None:
    """Forward events through `forward(event)`; heartbeat when idle; stop when dropped or the send fails."""
    while True:
        if sub.queue.empty():  # only an idle stream arms a timer; a busy one reads on
            try:
                async with asyncio.timeout(heartbeat_s):
                    event = await sub.get()
            except TimeoutError:
                if not await forward(None):
                    return
                continue
        else:
            event = await sub.get()
        if event is None:  # dropped for being too slow
            with contextlib.suppress(Exception):
                await ws.close(code=1013, reason=dropped())
            return
        if not await forward(event):
            return


def _reconnect() -> str:
    return "client too slow; reconnect"


GOING_AWAY = 1001


async def close_streams(app: Any, *, timeout_s: float = 2.0) -> int:
    """Close every open stream with 1001 (going away: the server stops, reconnect elsewhere); how many there were."""
    streams = list(app.state.open_streams)

    async def close(ws: WebSocket) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=GOING_AWAY, reason="server shutting down; reconnect")

    if streams:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(close(ws) for ws in streams))
    return len(streams)


async def _serve(
    ws: WebSocket, stream: str, sub: Source, forward: Any, handler: Any = None, dropped: Any = _reconnect
) -> None:
    app = ws.app
    gauge = app.state.request_metrics.ws_clients.labels(stream)
    gauge.inc()
    app.state.open_streams.add(ws)
    guard = ws.state.send_guard = SendGuard()
    reader = asyncio.create_task(_drain_incoming(ws, handler))
    pump = asyncio.create_task(_pump(ws, sub, app.state.web_settings.ws_heartbeat_s, forward, dropped))
    # Closes the stream (1008) when its token's login ends or its key is revoked.
    watcher = asyncio.create_task(watch_credentials(ws))
    stuck = asyncio.create_task(_watch_sends(guard))
    try:
        await asyncio.wait({reader, pump, watcher, stuck}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, pump, watcher, stuck):
            task.cancel()
        sub.close()
        gauge.dec()
        app.state.open_streams.discard(ws)
        with contextlib.suppress(Exception):
            await ws.close()


@router.websocket("/ws/status")
async def status_stream(ws: WebSocket) -> None:
    """A snapshot on connect, then status_update, trade_execution, error, alert, sweep_progress,
    download_progress and walkforward_progress events, plus heartbeats; with `candles=true` also each closed candle
    of the followed sessions (`candle`).

    Without `run_id`: the caller's runner slot. `?run_id=ID`: one run (backtest or session), wherever it runs, from
    the event log: each message carries the run's event number `seq` (the snapshot: the last one logged), and
    `&since=N` resumes after number N with exactly what was missed. `?run_id=*`: all of the caller's runs on this
    server. Alerts of all the caller's runs come without a filter and with `*`.
    """
    if not await ws.app.state.authorize_websocket(ws):
        return
    registry = ws.app.state.manager
    view = RunView(ws)
    follow = ws.query_params.get("run_id")
    principal = view.principal
    owner = principal.owner_filter if principal is not None else None
    slot = registry.slot(principal.user_id if principal is not None else None)
    if registry.shared_slots is not None:
        await registry.shared_slots.ensure(slot)
    # Candles are asked for: a chart wants them, a monitor of every run would drown in them.
    types = STATUS_STREAM_TYPES | {events.CANDLE} if _flag(ws.query_params.get("candles")) else STATUS_STREAM_TYPES
    if follow is not None and follow != "*" and ws.app.state.event_log is not None:
        await _follow_logged(ws, view, follow, types, owner)
        return
    sub = registry.bus.subscribe(types)
    if follow is not None and follow != "*":
        try:
            first = registry.run_status(follow, owner=owner)
        except CracktraderError as exc:
            sub.close()
            await ws.close(code=WS_POLICY_VIOLATION, reason=exc.message[:120])
            return
    elif follow == "*":
        sessions = registry.sessions
        first = {
            "run_id": None,
            "sessions": sorted(r.run_id for r in sessions.runs.values() if owner is None or r.user_id == owner),
            "runs": sorted(r.run_id for r in registry.backtests.values() if owner is None or r.user_id == owner),
        }
    else:
        first = slot.status()
    if not await _send(ws, {"type": "snapshot", "payload": first, "timestamp": now_iso()}):
        sub.close()
        return

    def wanted(event: events.Event) -> bool:
        """The slot's run without a filter; one run, or all of the caller's, with one."""
        run_id = event.payload.get("run_id")
        if event.type == events.ALERT:
            return owns_alert(view.principal, event) and (follow in (None, "*") or run_id == follow)
        if event.type in OWNED_EVENTS:  # the caller's sweeps, downloads and walk-forwards, as alerts
            return owns_alert(view.principal, event) and follow in (None, "*")
        if follow is None:
            if run_id is None:  # a reset slot's idle status
                return event.type == events.STATUS_UPDATE and event.user_id == slot.user_id
            return bool(run_id == slot.run_id)
        if follow != "*":
            return bool(run_id == follow)
        known, user = registry.owner_of(run_id)
        return known and (owner is None or user == owner)

    async def forward(event: events.Event | None) -> bool:
        if event is None:
            return await _send(ws, {"type": "heartbeat", "payload": {}, "timestamp": now_iso()})
        if event.type not in types or not wanted(event):
            return True
        return await _send(ws, event.text)

    await _serve(ws, "status", sub, forward)


def _since(value: str | None) -> int | None:
    """`since` as a number, None when absent; ValueError with the refusal's text otherwise."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) > MAX_SINCE:
        raise ValueError(f"since must be a whole number from 0 to {MAX_SINCE} (the last event number you received)")
    return int(value)


async def _follow_logged(ws: WebSocket, view: RunView, run_id: str, types: frozenset[str], owner: int | None) -> None:
    """One run's stream from the event log: a numbered snapshot, then every event after it, in order, once."""
    try:
        since = _since(ws.query_params.get("since"))
    except ValueError as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=str(exc))
        return
    try:
        first = await status_anywhere(ws.app, ws.app.state.manager, run_id, owner=owner)
    except CracktraderError as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=exc.message[:120])
        return
    relay = ws.app.state.event_log.relay
    # Subscribed before the snapshot is sent: an event from after the number it carries is never missed.
    sub = await relay.subscribe(run_id, since=since)
    at = sub.seen[run_id]
    if not await _send(ws, {"type": "snapshot", "payload": first, "timestamp": now_iso(), "seq": at}):
        sub.close()
        return

    async def forward(item: Any) -> bool:
        if item is None:
            return await _send(ws, {"type": "heartbeat", "payload": {}, "timestamp": now_iso()})
        event = item.event
        if event.type not in types or (event.type == events.ALERT and not owns_alert(view.principal, event)):
            return True
        # The event's JSON is encoded once for every client of this process; only the number is added here.
        return await _send(ws, f'{event.text[:-1]}, "seq": {item.seq}}}')

    def dropped() -> str:
        return f"client too slow; reconnect with since={sub.seen.get(run_id, at)}"

    await _serve(ws, "status", sub, forward, dropped=dropped)


def _channel_data(event: events.Event) -> dict[str, Any]:
    """Event payload in the channel's shape; orders follow seed 001's example (order_id, amount, ms timestamp)."""
    p = event.payload
    if event.type == events.ORDER_UPDATE and "order_id" in p:
        return p  # a session's order change: already the channel's keys (brokers.orders.OrderEvent) and more
    if event.type == events.ORDER_UPDATE:
        return {
            "order_id": str(p["id"]),
            "status": p["status"],
            "symbol": p["symbol"],
            "side": p["side"],
            "amount": p["size"],
            "price": p["price"],
            "timestamp": to_ms(p["timestamp"] or p["created_at"]),
            "type": p["type"],
            "reason": p["reason"],
            "run_id": p.get("run_id"),
        }
    if event.type == events.TRADE_EXECUTION:
        return {**p, "timestamp": to_ms(p["timestamp"])}
    return p


class RunView:
    """What one connection may see of the runs: with auth on, other users' runs show only their lifecycle."""

    def __init__(self, ws: WebSocket) -> None:
        self.app = ws.app
        self.principal = getattr(ws.state, "principal", None) if ws.app.state.auth.enabled else None

    async def sees(self, run_id: str | None) -> bool:
        """Whether events of this run may be sent in full."""
        return await sees_run(self.app, self.principal, run_id)

    async def status(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The status document as this connection may see it."""
        return snapshot if await self.sees(snapshot.get("run_id")) else lifecycle_only(snapshot)


class ChannelSession:
    """One `/ws` connection's subscriptions: (channel, symbol or None) pairs, at most MAX_SUBSCRIPTIONS."""

    def __init__(self, ws: WebSocket, view: RunView) -> None:
        self.ws = ws
        self.view = view
        self.subs: set[tuple[str, str | None]] = set()

    async def error(self, code: str, message: str, **details: Any) -> None:
        await _send(self.ws, {"channel": "error", "data": {"code": code, "message": message, "details": details}})

    async def handle(self, text: str) -> None:
        """Apply a subscribe/unsubscribe message; a bad one gets an error message, not a closed socket."""
        if len(text) > MAX_MESSAGE_BYTES:
            await self.error("MESSAGE_TOO_LARGE", f"Messages are limited to {MAX_MESSAGE_BYTES} bytes")
            return
        problem = json_body_problem(text.encode("utf-8", "surrogatepass"))
        if problem is not None:
            # Deep nesting, non-finite numbers, NULs and lone surrogates: refused as in request bodies.
            await self.error("INVALID_MESSAGE", problem.summary())
            return
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            await self.error("INVALID_MESSAGE", 'Send JSON such as {"action": "subscribe", "channel": "trades"}')
            return
        if not isinstance(msg, dict):
            await self.error("INVALID_MESSAGE", "A message must be a JSON object")
            return
        action = msg.get("action") or msg.get("type") or msg.get("op")
        if action == "ping":
            await _send(self.ws, {"channel": "pong", "data": {"timestamp": now_iso()}})
            return
        if action not in ("subscribe", "unsubscribe"):
            await self.error("INVALID_ACTION", f"Unknown action {action!r}; use subscribe, unsubscribe or ping")
            return
        channels = msg.get("channels") or ([msg["channel"]] if "channel" in msg else [])
        symbol = msg.get("symbol")
        if not channels or not all(isinstance(c, str) for c in channels):
            await self.error(
                "INVALID_CHANNEL",
                f"Name a channel: {CHANNEL_NAMES}",
                accepted=sorted(set(CHANNELS.values())),
            )
            return
        unknown = [c for c in channels if c not in CHANNELS.values()]
        if unknown:
            await self.error(
                "INVALID_CHANNEL",
                f"Unknown channel(s) {unknown}; use {CHANNEL_NAMES}",
                accepted=sorted(set(CHANNELS.values())),
            )
            return
        if symbol is not None and not isinstance(symbol, str):
            await self.error("INVALID_MESSAGE", "symbol must be a string such as BTC/USDT")
            return
        keys = [(c, symbol.upper() if symbol else None) for c in channels]
        if action == "unsubscribe":
            self.subs.difference_update(keys)
        else:
            new = [k for k in keys if k not in self.subs]
            if len(self.subs) + len(new) > MAX_SUBSCRIPTIONS:
                await self.error(
                    "SUBSCRIPTION_LIMIT",
                    f"At most {MAX_SUBSCRIPTIONS} subscriptions per connection",
                    limit=MAX_SUBSCRIPTIONS,
                    current=len(self.subs),
                )
                return
            self.subs.update(new)
        await _send(
            self.ws,
            {
                "channel": f"{action}d",
                "data": {"subscriptions": [{"channel": c, "symbol": s} for c, s in sorted(self.subs, key=str)]},
            },
        )
        if action == "subscribe" and any(c == "status" for c, _ in keys):
            principal = self.view.principal
            registry = self.ws.app.state.manager
            slot = registry.slot(principal.user_id if principal is not None else None)
            if registry.shared_slots is not None:
                await registry.shared_slots.ensure(slot)
            status = await self.view.status(slot.status())
            await _send(self.ws, {"channel": "status", "data": status})

    def wants(self, channel: str, symbol: str | None) -> bool:
        if channel == "status":  # status is run-wide: a symbol on the subscription does not narrow it
            return any(c == "status" for c, _ in self.subs)
        return (channel, None) in self.subs or (symbol is not None and (channel, symbol) in self.subs)


@router.websocket("/ws")
async def channel_stream(ws: WebSocket) -> None:
    """Subscribe to status, orders, trades, equity and alerts; messages are `{"channel", "data"}`."""
    if not await ws.app.state.authorize_websocket(ws):
        return
    view = RunView(ws)
    session = ChannelSession(ws, view)
    sub = ws.app.state.manager.bus.subscribe(frozenset(CHANNELS))

    async def forward(event: events.Event | None) -> bool:
        if event is None:
            return await _send(ws, {"channel": "heartbeat", "data": {"timestamp": now_iso()}})
        channel = CHANNELS.get(event.type)
        if channel is None or not session.wants(channel, event.payload.get("symbol")):
            return True
        if event.type == events.ALERT:
            return not owns_alert(view.principal, event) or await _send(ws, {"channel": channel, "data": event.payload})
        if not await view.sees(event.payload.get("run_id")):
            if channel != "status":
                return True
            return await _send(ws, {"channel": channel, "data": lifecycle_only(event.payload)})
        return await _send(ws, {"channel": channel, "data": _channel_data(event)})

    await _serve(ws, "channels", sub, forward, session.handle)
