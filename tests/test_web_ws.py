"""The WebSocket streams against a real uvicorn: `/api/v1/ws/status` events and `/api/v1/ws` channel subscriptions."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from cracktrader.runs import events
from web_support import DEEP_BARS, DEEP_RUN, SLOW_RUN, YEAR_1H, LiveServer, live_server

pytestmark = pytest.mark.anyio

EVENT_KEYS = {"type", "payload", "timestamp"}
TERMINAL = {"completed", "failed", "stopped"}
NO_DATA_RUN = {**YEAR_1H, "start_date": "2010-01-01", "end_date": "2010-02-01"}
# A trade_execution carries the latest fill, and how many fills happened since the previous trade event.
TRADE_FIELDS = {
    "fills_since_last_event",
    "run_id",
    "id",
    "order_id",
    "timestamp",
    "symbol",
    "side",
    "size",
    "price",
    "value",
    "commission",
    "pnl",
    "return_pct",
    "reason",
}
SEED_001_ORDER_KEYS = {"order_id", "status", "symbol", "side", "amount", "price", "timestamp"}
MS_2024 = (1_704_067_200_000, 1_735_689_600_000)  # [2024-01-01, 2025-01-01) in epoch ms
# For the one test about stopping: a roomy queue keeps a drop of its reader from masking what it measures.
ROOMY_QUEUE = 100_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def parse_ts(value: str) -> float:
    """Epoch seconds of an ISO 8601 `...Z` timestamp."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Messages up to and including the first for which `done` is true."""
    deadline = time.monotonic() + timeout
    out: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no terminal message within {timeout}s; got {[summary(m) for m in out[-10:]]}")
        out.append(await recv(ws, remaining))
        if done(out[-1]):
            return out


def summary(message: dict[str, Any]) -> str:
    body = message.get("payload", message.get("data")) or {}
    return f"{message.get('type', message.get('channel'))}:{body.get('status', '')}"


def is_final_status(message: dict[str, Any]) -> bool:
    return message.get("type") == "status_update" and message["payload"]["status"] in TERMINAL


def is_final_status_channel(message: dict[str, Any]) -> bool:
    return message.get("channel") == "status" and message["data"]["status"] in TERMINAL


def lifecycle(statuses: list[str]) -> list[str]:
    """Statuses with consecutive repeats (progress updates) collapsed."""
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


async def start_run(srv: LiveServer, body: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=srv.base_url) as c:
        r = await c.post("/api/v1/run/backtest", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["run_id"])


async def get_json(srv: LiveServer, path: str) -> Any:
    async with httpx.AsyncClient(base_url=srv.base_url) as c:
        r = await c.get(path)
    assert r.status_code == 200, r.text
    return r.json()


async def stop_run(srv: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=srv.base_url) as c:
        await c.post("/api/v1/run/stop")


async def subscribe(ws: ClientConnection, **message: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"action": "subscribe", **message}))
    ack = await recv(ws)
    assert ack["channel"] == "subscribed", ack
    return ack


async def assert_still_open(ws: ClientConnection) -> None:
    """A ping is answered with a pong: the server kept the socket open and is still reading it."""
    await ws.send(json.dumps({"action": "ping"}))
    pong = await recv(ws)
    assert pong["channel"] == "pong" and parse_ts(pong["data"]["timestamp"]) > 0


# ------------------------------------------------------------------------------------------ /ws/status


async def test_status_stream_sends_snapshot_on_connect() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            snapshot = await recv(ws)
            status = await get_json(srv, "/api/v1/status")
    assert set(snapshot) == EVENT_KEYS and snapshot["type"] == "snapshot"
    assert snapshot["payload"]["status"] == "idle" and snapshot["payload"]["run_id"] is None
    assert snapshot["payload"].keys() == status.keys()
    assert abs(parse_ts(snapshot["timestamp"]) - time.time()) < 60


async def test_status_stream_reports_starting_running_completed_in_order() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)  # snapshot
            run_id = await start_run(srv, YEAR_1H)
            messages = await collect_until(ws, is_final_status)
            status = await get_json(srv, "/api/v1/status")
    updates = [m for m in messages if m["type"] == "status_update"]
    assert all(set(m) == EVENT_KEYS for m in messages)
    assert lifecycle([m["payload"]["status"] for m in updates]) == ["starting", "running", "completed"]
    assert {m["payload"]["run_id"] for m in updates} == {run_id}
    assert updates[0]["payload"]["phase"] == "queued"
    final = updates[-1]["payload"]
    assert final["bars_processed"] == final["bars_total"] == 8784 and final["progress"] == 1.0
    assert final == {**status, "runtime_seconds": final["runtime_seconds"]}
    stamps = [parse_ts(m["timestamp"]) for m in updates]
    assert stamps == sorted(stamps)


async def test_status_stream_throttles_progress_to_one_update_per_250ms_with_growing_bars() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)  # snapshot
            await start_run(srv, SLOW_RUN)
            t0 = time.monotonic()
            progress: list[tuple[float, dict[str, Any]]] = []  # (arrival, event)
            while len(progress) < 5:
                m = await recv(ws, 30)
                p = m.get("payload", {})
                if m["type"] == "status_update" and p["phase"] == "simulating" and p["bars_processed"] > 0:
                    progress.append((time.monotonic(), m))
                assert not is_final_status(m), f"run ended before 5 progress updates: {m}"
            await stop_run(srv)
            await collect_until(ws, is_final_status)
    bars = [m["payload"]["bars_processed"] for _, m in progress]
    assert bars == sorted(set(bars)) and bars[-1] < progress[-1][1]["payload"]["bars_total"]
    # Publication times (the events' own timestamps, in ms) are at least 250 ms apart.
    published = [parse_ts(m["timestamp"]) for _, m in progress]
    gaps = [b - a for a, b in itertools.pairwise(published)]
    assert min(gaps) >= 0.25 - 0.002, gaps
    # Arrival times: in-process delivery can bunch events up, but never more of them than the rate allows.
    arrivals = [t for t, _ in progress]
    arrival_gaps = [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    assert len(progress) <= (arrivals[-1] - t0) / 0.25 + 1, arrival_gaps


async def test_stop_deep_into_a_run_answers_stopped_within_one_second_and_the_stream_ends_stopped() -> None:
    with live_server(ws_queue_size=ROOMY_QUEUE) as srv:
        async with (
            connect(f"{srv.ws_url}/api/v1/ws/status") as ws,
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c,
        ):
            await recv(ws)
            await start_run(srv, DEEP_RUN)
            deadline = time.monotonic() + 60
            while (status := (await c.get("/api/v1/status")).json())["bars_processed"] < DEEP_BARS:
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.02)
            if status["phase"] != "simulating":
                pytest.fail(f"the run got past simulating before the test could stop it: {status}")
            t0 = time.monotonic()
            stop = (await c.post("/api/v1/run/stop")).json()
            answered = time.monotonic() - t0
            messages = await collect_until(ws, is_final_status, 60)
    final = messages[-1]["payload"]
    if not (final["status"] == "stopped" and DEEP_BARS <= final["bars_processed"] < final["bars_total"]):
        pytest.fail(f"the run did not end stopped part-way: {final}")
    assert stop["status"] == "stopped" and answered < 1.1, (stop, answered)


async def test_status_stream_carries_the_latest_fill_at_most_once_per_status_period() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)
            await start_run(srv, SLOW_RUN)
            trades_between: list[int] = []  # trade events between consecutive progress updates
            count = None
            while len(trades_between) < 5:
                m = await recv(ws, 30)
                assert not is_final_status(m), f"run ended before 6 progress updates: {m}"
                if m["type"] == "trade_execution" and count is not None:
                    count += 1
                    assert m["payload"]["fills_since_last_event"] >= 1
                elif m["type"] == "status_update" and m["payload"]["bars_processed"] > 0:
                    if count is not None:
                        trades_between.append(count)
                    count = 0
            await stop_run(srv)
            await collect_until(ws, is_final_status)
    # Trades and status updates are throttled separately to the same period, so two can fall between updates.
    assert max(trades_between) <= 2 and sum(trades_between) > 0, trades_between


async def test_a_client_reading_the_status_stream_keeps_up_with_a_heavy_run_on_the_default_queue() -> None:
    with live_server() as srv:  # the default ws_queue_size
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)
            run_id = await start_run(srv, DEEP_RUN)  # its full-speed part is the heavy run
            messages = await collect_until(
                ws, lambda m: m["type"] == "status_update" and m["payload"]["bars_processed"] >= DEEP_BARS, 60
            )
            await stop_run(srv)
            messages += await collect_until(ws, is_final_status, 60)
    assert {m["payload"]["run_id"] for m in messages if m["type"] == "status_update"} == {run_id}
    assert messages[-1]["payload"]["status"] == "stopped"


async def test_status_stream_sends_trade_executions_with_trade_fields() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)
            run_id = await start_run(srv, YEAR_1H)
            messages = await collect_until(ws, is_final_status)
            results = await get_json(srv, "/api/v1/results?limit=50000")
    trades = [m for m in messages if m["type"] == "trade_execution"]
    assert trades, [summary(m) for m in messages]
    by_id = {t["id"]: t for t in results["trades"]}
    for m in trades:
        t = m["payload"]
        assert set(m) == EVENT_KEYS and set(t) == TRADE_FIELDS
        assert t["run_id"] == run_id and t["symbol"] == "BTC/USDT" and t["side"] in ("buy", "sell")
        assert t["size"] > 0 and t["price"] > 0 and t["value"] == pytest.approx(t["size"] * t["price"])
        assert by_id[t["id"]]["price"] == t["price"] and by_id[t["id"]]["timestamp"] == t["timestamp"]
        assert t["timestamp"].startswith("2024-") and t["fills_since_last_event"] >= 1
    # Trades are streamed before the run reports completion.
    assert messages.index(trades[-1]) < len(messages) - 1


async def test_status_stream_sends_error_event_then_failed_status_when_a_run_fails() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)
            run_id = await start_run(srv, NO_DATA_RUN)
            messages = await collect_until(ws, is_final_status)
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 1 and set(errors[0]) == EVENT_KEYS
    error = errors[0]["payload"]
    assert error["run_id"] == run_id and error["code"] == "DATA_UNAVAILABLE" and error["message"]
    assert isinstance(error["details"], dict)
    final = messages[-1]["payload"]
    assert final["status"] == "failed" and final["error_code"] == "DATA_UNAVAILABLE"
    assert final["error"] == error["message"]
    assert messages.index(errors[0]) < len(messages) - 1


async def test_status_stream_sends_heartbeats_when_idle() -> None:
    with live_server(ws_heartbeat_s=0.2) as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await recv(ws)  # snapshot
            arrivals = []
            for _ in range(3):
                beat = await recv(ws, 2.0)
                arrivals.append(time.monotonic())
                assert set(beat) == EVENT_KEYS and beat["type"] == "heartbeat" and beat["payload"] == {}
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.15 <= g <= 1.0 for g in gaps), gaps


async def test_channel_stream_sends_heartbeats_when_idle() -> None:
    with live_server(ws_heartbeat_s=0.2) as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            beat = await recv(ws, 2.0)
    assert beat["channel"] == "heartbeat" and parse_ts(beat["data"]["timestamp"]) > 0


# ------------------------------------------------------------------------------------------ slow clients


async def test_event_bus_drops_a_subscriber_that_never_reads_while_a_reader_keeps_receiving() -> None:
    bus = events.EventBus(queue_size=8)
    bus.bind(asyncio.get_running_loop())
    stalled, reader = bus.subscribe(), bus.subscribe()
    received = []
    for seq in range(50):
        bus.publish(events.Event(events.STATUS_UPDATE, {"seq": seq}))
        event = await reader.get()
        assert event is not None
        received.append(event.payload["seq"])
    assert received == list(range(50))
    assert stalled.dropped and not reader.dropped and bus.subscriber_count == 1
    # The stalled subscriber drains what it had, then learns it was dropped (None), and gets nothing more.
    leftover = [await asyncio.wait_for(stalled.get(), 1) for _ in range(8)]
    assert leftover[-1] is None and [e.payload["seq"] for e in leftover[:-1] if e is not None] == list(range(1, 8))
    assert await asyncio.wait_for(stalled.get(), 1) is None


async def test_event_bus_delivers_events_published_from_worker_threads_in_order() -> None:
    bus = events.EventBus(queue_size=64)
    bus.bind(asyncio.get_running_loop())
    sub = bus.subscribe()

    def worker() -> None:
        for seq in range(40):
            bus.publish_threadsafe(events.Event(events.TRADE_EXECUTION, {"seq": seq}))

    await asyncio.to_thread(worker)
    got = []
    for _ in range(40):
        event = await asyncio.wait_for(sub.get(), 2)
        assert event is not None and event.type == events.TRADE_EXECUTION
        got.append(event.payload["seq"])
    assert got == list(range(40)) and not sub.dropped


def _raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a plain socket with a tiny receive buffer; the caller then never reads it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_until_close_frame(sock: socket.socket, timeout: float) -> tuple[int, bytes, int]:
    """Read server frames until a close frame: (text frames seen, close reason, close code)."""
    sock.settimeout(timeout)
    buf = b""
    texts = 0

    def need(n: int) -> None:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise AssertionError("connection closed without a close frame")
            buf += chunk

    while True:
        need(2)
        opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
        offset = 2
        if length == 126:
            need(4)
            (length,) = struct.unpack("!H", buf[2:4])
            offset = 4
        elif length == 127:
            need(10)
            (length,) = struct.unpack("!Q", buf[2:10])
            offset = 10
        need(offset + length)
        payload, buf = buf[offset : offset + length], buf[offset + length :]
        if opcode == 0x8:
            return texts, payload[2:], struct.unpack("!H", payload[:2])[0]
        texts += opcode == 0x1


async def _flood_until_dropped(srv: LiveServer, fast: ClientConnection) -> tuple[list[int], list[int], float]:
    """Publish big events four at a time, each batch read by `fast` before the next, until the bus drops the other
    (non-reading) subscriber: `fast`'s queue never fills, the stalled one's fills once its socket buffers are full.
    Returns (published, received by fast, seconds until the drop)."""
    bus = srv.app.state.manager.bus
    deadline = time.monotonic() + 10
    while bus.subscriber_count < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    blob = "x" * 65_536  # fills the slow client's socket buffers within a few MB
    published: list[int] = []
    received: list[int] = []
    t0 = time.monotonic()
    while bus.subscriber_count == 2:
        assert len(published) < 2000, "the non-reading client was never dropped"
        for _ in range(4):
            published.append(len(published))
            bus.publish_threadsafe(
                events.Event(events.STATUS_UPDATE, {"status": "running", "seq": published[-1], "x": blob})
            )
        while len(received) < len(published):
            received.append((await recv(fast))["payload"]["seq"])
    return published, received, time.monotonic() - t0


async def test_slow_websocket_client_is_dropped_while_a_fast_one_keeps_receiving_everything() -> None:
    with live_server(ws_queue_size=8) as srv:
        slow = _raw_websocket(srv.port, "/api/v1/ws/status")
        try:
            async with connect(f"{srv.ws_url}/api/v1/ws/status") as fast:
                await recv(fast)  # snapshot
                published, received, dropped_after = await _flood_until_dropped(srv, fast)
                assert received == published and dropped_after < 10
                # The fast client is unaffected: still subscribed and receiving.
                bus = srv.app.state.manager.bus
                bus.publish_threadsafe(events.Event(events.STATUS_UPDATE, {"status": "running", "seq": -1}))
                assert (await recv(fast))["payload"]["seq"] == -1 and bus.subscriber_count == 1
                # The slow client, once it reads, finds what fitted in its buffers and a 1013 close.
                texts, reason, code = await asyncio.to_thread(_read_until_close_frame, slow, 15.0)
                assert code == 1013 and b"too slow" in reason and 0 < texts < len(published)
        finally:
            slow.close()


async def test_a_dropped_client_that_never_reads_is_disconnected_within_seconds() -> None:
    gauge = 'cracktrader_websocket_clients{stream="status"}'
    with live_server(ws_queue_size=8) as srv:
        slow = _raw_websocket(srv.port, "/api/v1/ws/status")
        try:
            async with connect(f"{srv.ws_url}/api/v1/ws/status") as fast, httpx.AsyncClient(base_url=srv.base_url) as c:
                await recv(fast)
                await _flood_until_dropped(srv, fast)
                assert f"{gauge} 2.0" in (await c.get("/metrics")).text
                deadline = time.monotonic() + 7  # the old send timeout was 5 s
                while f"{gauge} 1.0" not in (text := (await c.get("/metrics")).text):
                    if time.monotonic() > deadline:
                        line = next(x for x in text.splitlines() if x.startswith(gauge))
                        raise AssertionError(f"the dropped, non-reading client is still connected 7 s on: {line}")
                    await asyncio.sleep(0.2)
        finally:
            slow.close()


# ------------------------------------------------------------------------------------------ /ws channels


async def test_channel_subscribe_is_acknowledged_and_status_channel_sends_current_status() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            ack = await subscribe(ws, channel="status")
            current = await recv(ws)
            both = await subscribe(ws, channels=["trades", "orders"], symbol="btc/usdt")
            await ws.send(json.dumps({"action": "unsubscribe", "channels": ["orders"], "symbol": "BTC/USDT"}))
            unsubscribed = await recv(ws)
    assert ack["data"]["subscriptions"] == [{"channel": "status", "symbol": None}]
    assert current["channel"] == "status" and current["data"]["status"] == "idle"
    assert {(s["channel"], s["symbol"]) for s in both["data"]["subscriptions"]} == {
        ("status", None),
        ("trades", "BTC/USDT"),
        ("orders", "BTC/USDT"),
    }
    assert unsubscribed["channel"] == "unsubscribed"
    assert {(s["channel"], s["symbol"]) for s in unsubscribed["data"]["subscriptions"]} == {
        ("status", None),
        ("trades", "BTC/USDT"),
    }


async def test_channels_stream_status_trades_and_orders_during_a_run() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            await subscribe(ws, channels=["status", "trades", "orders"])
            assert (await recv(ws))["channel"] == "status"  # current status on subscribe
            run_id = await start_run(srv, YEAR_1H)
            messages = await collect_until(ws, is_final_status_channel)
            results = await get_json(srv, "/api/v1/results?limit=50000")
    assert all(set(m) == {"channel", "data"} for m in messages)
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        by_channel.setdefault(m["channel"], []).append(m["data"])
    assert set(by_channel) == {"status", "trades", "orders"}, [summary(m) for m in messages]
    statuses = [d["status"] for d in by_channel["status"]]
    assert lifecycle(statuses) == ["starting", "running", "completed"]
    assert {d["run_id"] for d in by_channel["status"]} == {run_id}
    orders_by_id = {str(o["id"]): o for o in results["orders"]}
    for order in by_channel["orders"]:
        # Seed 001's example shape: string order id, amount, and the timestamp in epoch milliseconds.
        assert set(order) >= SEED_001_ORDER_KEYS
        assert isinstance(order["order_id"], str) and order["symbol"] == "BTC/USDT" and order["side"] in ("buy", "sell")
        assert isinstance(order["timestamp"], int) and MS_2024[0] <= order["timestamp"] < MS_2024[1]
        assert order["status"] == "filled" and order["amount"] > 0 and order["price"] > 0
        stored = orders_by_id[order["order_id"]]
        assert (stored["size"], stored["price"], stored["side"]) == (order["amount"], order["price"], order["side"])
        assert order["run_id"] == run_id
    trades_by_id = {t["id"]: t for t in results["trades"]}
    for trade in by_channel["trades"]:
        assert set(trade) == TRADE_FIELDS and trade["run_id"] == run_id
        assert isinstance(trade["timestamp"], int) and MS_2024[0] <= trade["timestamp"] < MS_2024[1]
        assert trades_by_id[trade["id"]]["price"] == trade["price"]


async def test_equity_channel_streams_growing_equity_points_during_a_run() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            await subscribe(ws, channels=["equity", "status"])
            await recv(ws)  # current status
            run_id = await start_run(srv, SLOW_RUN)
            equity: list[dict[str, Any]] = []
            while len(equity) < 3:
                m = await recv(ws, 30)
                assert not is_final_status_channel(m), f"run ended before 3 equity updates: {m}"
                if m["channel"] == "equity":
                    equity.append(m["data"])
            await stop_run(srv)
            await collect_until(ws, is_final_status_channel)
    bars = [p["bar"] for p in equity]
    assert bars == sorted(set(bars)) and bars[0] > 0
    for point in equity:
        assert set(point) == {"run_id", "bar", "timestamp", "value", "cash", "pnl"} and point["run_id"] == run_id
        assert point["pnl"] == pytest.approx(point["value"] - 10_000.0) and point["cash"] >= 0
        assert "2024-01-01T00:00:00Z" <= point["timestamp"] < "2025-01-01T00:00:00Z"


async def test_symbol_subscription_only_receives_that_symbol_and_unsubscribe_stops_delivery() -> None:
    with live_server() as srv:
        async with (
            connect(f"{srv.ws_url}/api/v1/ws") as btc,
            connect(f"{srv.ws_url}/api/v1/ws") as eth,
            connect(f"{srv.ws_url}/api/v1/ws") as left,
        ):
            await subscribe(btc, channels=["trades"], symbol="BTC/USDT")
            await subscribe(eth, channels=["trades"], symbol="eth/usdt")
            await subscribe(left, channel="trades")
            await left.send(json.dumps({"action": "unsubscribe", "channel": "trades"}))
            assert (await recv(left))["data"]["subscriptions"] == []
            for ws in (btc, eth, left):
                # The final status is published after every trade, so it marks the end of each stream.
                await subscribe(ws, channel="status")
                assert (await recv(ws))["data"]["status"] == "idle"
            await start_run(srv, YEAR_1H)
            streams = [await collect_until(ws, is_final_status_channel) for ws in (btc, eth, left)]
    btc_trades, eth_trades, left_trades = ([m for m in s if m["channel"] == "trades"] for s in streams)
    assert btc_trades and all(m["data"]["symbol"] == "BTC/USDT" for m in btc_trades)
    assert eth_trades == [] and left_trades == []


async def test_eleventh_subscription_gets_an_error_and_the_socket_stays_open() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            for k in range(10):
                ack = await subscribe(ws, channel="trades", symbol=f"S{k}/USDT")
            assert len(ack["data"]["subscriptions"]) == 10
            # Subscribing again to one already held is not a new subscription.
            assert len((await subscribe(ws, channel="trades", symbol="S0/USDT"))["data"]["subscriptions"]) == 10
            await ws.send(json.dumps({"action": "subscribe", "channel": "trades", "symbol": "S10/USDT"}))
            error = await recv(ws)
            await assert_still_open(ws)
            await ws.send(json.dumps({"action": "unsubscribe", "channel": "trades", "symbol": "S0/USDT"}))
            assert len((await recv(ws))["data"]["subscriptions"]) == 9
            assert len((await subscribe(ws, channel="trades", symbol="S10/USDT"))["data"]["subscriptions"]) == 10
    assert error["channel"] == "error"
    assert error["data"]["code"] == "SUBSCRIPTION_LIMIT" and "10" in error["data"]["message"]
    assert error["data"]["details"] == {"limit": 10, "current": 10}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "INVALID_MESSAGE"),
        ("[1, 2]", "INVALID_MESSAGE"),
        (json.dumps({"action": "subscribe", "channel": "candles"}), "INVALID_CHANNEL"),
        (json.dumps({"action": "subscribe", "channels": ["trades", "nope"]}), "INVALID_CHANNEL"),
        (json.dumps({"action": "subscribe"}), "INVALID_CHANNEL"),
        (json.dumps({"action": "dance", "channel": "trades"}), "INVALID_ACTION"),
        (json.dumps({"channel": "trades"}), "INVALID_ACTION"),
        (json.dumps({"action": "subscribe", "channel": "trades", "symbol": 5}), "INVALID_MESSAGE"),
        (json.dumps({"action": "subscribe", "channel": "x" * 5000}), "MESSAGE_TOO_LARGE"),
        # Hostile values get an error message, as in request bodies, never a crashed handler.
        ("[" * 2_000 + "]" * 2_000, "INVALID_MESSAGE"),
        ('{"action": "subscribe", "channel": "trades", "symbol": NaN}', "INVALID_MESSAGE"),
        ('{"action": "subscribe", "channel": "trades", "symbol": 1e309}', "INVALID_MESSAGE"),
        ('{"action": "subscribe", "channel": "trades", "symbol": "BTC\\u0000"}', "INVALID_MESSAGE"),
        ('{"action": "subscribe", "channel": "trades", "symbol": "\\ud800"}', "INVALID_MESSAGE"),
    ],
)
async def test_bad_channel_message_gets_an_error_message_not_a_dropped_socket(message: str, code: str) -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws") as ws:
            await ws.send(message)
            error = await recv(ws)
            await assert_still_open(ws)
            # Nothing was subscribed by the bad message.
            ack = await subscribe(ws, channel="equity")
    assert error["channel"] == "error" and error["data"]["code"] == code and error["data"]["message"]
    assert ack["data"]["subscriptions"] == [{"channel": "equity", "symbol": None}]
    if code == "INVALID_CHANNEL":
        assert error["data"]["details"]["accepted"] == ["alerts", "equity", "orders", "status", "trades"]


# ------------------------------------------------------------------------------------------ origins


@pytest.mark.parametrize("path", ["/api/v1/ws/status", "/api/v1/ws"])
@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1.evil.example", "null"])
async def test_websocket_from_a_foreign_origin_is_refused(path: str, origin: str) -> None:
    with live_server() as srv:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{srv.ws_url}{path}", origin=origin):
                pass
        status = await get_json(srv, "/api/v1/status")
    assert refused.value.response.status_code == 403
    assert status["status"] == "idle"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_websocket_from_a_loopback_origin_is_accepted(host: str) -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status", origin=f"http://{host}:{srv.port}") as ws:
            snapshot = await recv(ws)
    assert snapshot["type"] == "snapshot"


# ------------------------------------------------------------------------------------------ fan-out


async def test_two_hundred_status_clients_each_receive_every_status_update() -> None:
    n_clients = 200
    with live_server() as srv:
        clients = await asyncio.gather(
            *(connect(f"{srv.ws_url}/api/v1/ws/status", open_timeout=20) for _ in range(n_clients))
        )
        try:
            snapshots = await asyncio.gather(*(recv(ws, 20) for ws in clients))
            assert all(s["type"] == "snapshot" for s in snapshots)
            assert srv.app.state.manager.bus.subscriber_count == n_clients
            run_id = await start_run(srv, YEAR_1H)
            streams = await asyncio.gather(*(collect_until(ws, is_final_status, 30) for ws in clients))
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))
    sequences = [[(m["timestamp"], m["payload"]["status"]) for m in s if m["type"] == "status_update"] for s in streams]
    assert all(seq == sequences[0] for seq in sequences)
    assert lifecycle([status for _, status in sequences[0]]) == ["starting", "running", "completed"]
    assert {m["payload"]["run_id"] for s in streams for m in s if m["type"] == "status_update"} == {run_id}
    trade_counts = {sum(m["type"] == "trade_execution" for m in s) for s in streams}
    assert len(trade_counts) == 1 and trade_counts.pop() > 0
