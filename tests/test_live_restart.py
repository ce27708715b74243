"""A live session killed by SIGKILL at each step of its order path, then resumed by the next server process.

Real server processes (uvicorn, `python -m cracktrader.web.server.main`) on one SQLite file run a live sandbox
session whose strategy (tests/strategies/live_limit.py OneRestingBuy) sends one resting limit buy on its first 1s
bar, to a TradingVenue that this test process serves. The venue's virtual clock follows the wall clock (the server
signs with wall time and checks its offset). The kill points:

- before_store: a failpoint kills the server before the order's `pending_new` row is written: nothing was sent.
- after_store: a failpoint kills it after the row is written, before the request goes out: stored, never sent.
- sent: the venue receives the create request, kills the server, and drops the request unplaced (sent, never
  accepted: the request left the server but the venue never acted on it).
- accepted: the venue places the order, kills the server, then answers (the answer is lost).
- between_fills: the order rests; the venue part-fills it, the server stores that fill; SIGKILL; a second part-fill
  while no server runs.
- cancel: the venue receives the cancel of the resting order, cancels it, then kills the server (the answer is lost).

After each kill a second server takes the session over (leases of 2 s), waits for the keys, reconciles and runs;
then the stored orders equal the venue's (status, filled), the venue holds at most one order per stored order
(nothing sent twice), and the stored fills equal the venue's trades. Waits are on conditions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cracktrader.db.engine import make_engine
from cracktrader.db.migrate import upgrade
from cracktrader.db.models import LiveFillRecord, LiveOrderRecord, SessionFillRecord
from cracktrader.exchanges.client_ids import parse_client_id
from fakes.binance import exchange_options_for
from fakes.okx import VENUE_STATUS as OKX_STATUS
from fakes.okx import OkxVenue
from fakes.trading import VENUE_STATUS, TradingVenue
from web_support import TEST_STRATEGY_DIR, ServerProcess

pytestmark = pytest.mark.anyio
SYMBOL = "BTC/USDT"
KEYS = {"apiKey": "test-key", "secret": "test-secret"}
TTL_S = 2.0
PATIENCE_S = 150.0  # a net for a loaded machine (and okx's first 1m bar): every wait ends on its condition
SESSION: dict[str, Any] = {
    "strategy_name": "OneRestingBuy",
    "strategy_params": {"below": 0.97, "size": 0.01},
    "symbols": [SYMBOL],
    "timeframe": "1s",
    "exchange": "binance",
    "mode": "live",
    "exchange_config": {**KEYS, "sandbox": True, "risk": {"capital": 1_000.0}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class WallClockFollower:
    """Moves a venue's virtual clock along with the wall clock, every few milliseconds, from a thread."""

    def __init__(self, venue: TradingVenue) -> None:
        self.venue = venue
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.01):
            now = int(time.time() * 1000)
            if now > self.venue.clock.now_ms():
                self.venue.clock.set(now)


# Per protocol: the keys a session needs (okx: a passphrase too), and the path its create requests take.
VENUE_KEYS: dict[str, dict[str, str]] = {"binance": KEYS, "okx": {**KEYS, "password": "test-passphrase"}}
CREATE_PATH = {"binance": "/api/v3/order", "okx": "/api/v5/trade/batch-orders"}
# ccxt's okx has no 1s candles: its session trades on 1m bars, so its first order waits for the next minute.
TIMEFRAME = {"binance": "1s", "okx": "1m"}


def exchange_of(venue: TradingVenue) -> str:
    """The ccxt exchange id the venue is reached as."""
    return "okx" if isinstance(venue, OkxVenue) else "binance"


def session_for(venue: TradingVenue) -> dict[str, Any]:
    exchange = exchange_of(venue)
    config = {**SESSION["exchange_config"], **VENUE_KEYS[exchange]}
    return {**SESSION, "exchange": exchange, "timeframe": TIMEFRAME[exchange], "exchange_config": config}


@pytest.fixture
def venue(request: pytest.FixtureRequest) -> Iterator[TradingVenue]:
    cls = OkxVenue if request.param == "okx" else TradingVenue
    with cls(now_ms=int(time.time() * 1000), balances={"USDT": "10000", "BTC": "0"}) as server:
        follower = WallClockFollower(server)
        follower.thread.start()
        try:
            yield server
        finally:
            follower.done.set()
            follower.thread.join(timeout=5)


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'live.db').as_posix()}"
    await asyncio.to_thread(upgrade, url)
    return url


class Rows:
    """The test's own view of the servers' live_orders and live_fills rows."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    async def orders(self, run_id: str) -> list[LiveOrderRecord]:
        async with self.engine.connect() as c:
            result = await c.execute(select(LiveOrderRecord).where(LiveOrderRecord.run_id == run_id))
            return list(result.all())  # type: ignore[arg-type]

    async def fills(self, run_id: str) -> list[Any]:
        async with self.engine.connect() as c:
            result = await c.execute(select(LiveFillRecord).where(LiveFillRecord.run_id == run_id))
            return list(result.all())

    async def session_fill_ids(self, run_id: str) -> list[str]:
        async with self.engine.connect() as c:
            result = await c.execute(select(SessionFillRecord.trade_id).where(SessionFillRecord.run_id == run_id))
            return [str(t) for t in result.scalars()]


@pytest.fixture
async def rows(db_url: str) -> AsyncIterator[Rows]:
    out = Rows(db_url)
    try:
        yield out
    finally:
        await out.engine.dispose()


def _server(venue: TradingVenue, url: str, tmp_path: Path, name: str, failpoint: str | None = None) -> ServerProcess:
    exchange = exchange_of(venue)
    options = exchange_options_for(venue.base_url, exchange)
    options[exchange]["sandbox_base_url"] = venue.sandbox_base_url
    env = {
        "CRACKTRADER_DATABASE_URL": url,
        "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR),
        "CRACKTRADER_SERVER_LEASE_TTL_S": str(TTL_S),
        "CRACKTRADER_SERVER_HEARTBEAT_S": "0.25",
        "CRACKTRADER_EXCHANGE_OPTIONS": json.dumps(options),
        "CRACKTRADER_FAILPOINT": failpoint or "",
    }
    return ServerProcess(env, tmp_path / f"{name}.log")


async def until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.02)


def killer(server: ServerProcess) -> Callable[[], None]:
    """A venue hook that kills `server` with SIGKILL (it runs on the venue's loop, before the venue goes on)."""

    def kill() -> None:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)

    return kill


def venue_orders(venue: TradingVenue) -> list[Any]:
    return [o for o in venue.account.orders.values() if not o.external]


async def resumed_on(second: ServerProcess, run_id: str, keys: dict[str, str]) -> dict[str, Any]:
    """Take the session over on `second`: wait for it to ask for the keys, give them, wait until it runs."""
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as c:

        async def waiting_for_keys() -> dict[str, Any] | None:
            r = await c.get(f"/api/v1/runs/{run_id}/status")
            body = r.json() if r.status_code == 200 else {}
            return body if body.get("phase") == "awaiting_credentials" else None

        await until("the second server to wait for the keys", waiting_for_keys)
        r = await c.post(f"/api/v1/runs/{run_id}/resume", json=keys)
        assert r.status_code == 200, r.text

        async def running() -> dict[str, Any] | None:
            body = (await c.get(f"/api/v1/runs/{run_id}/status/detailed")).json()
            return body if body.get("status") == "running" and body.get("phase") is None else None

        return dict(await until("the resumed session to run", running))


async def assert_rows_equal_venue(rows: Rows, run_id: str, venue: TradingVenue) -> dict[str, Any]:
    """The stored orders and fills equal the venue's; nothing is on the venue twice. Returns what was found."""
    stored = {r.client_order_id: r for r in await rows.orders(run_id)}
    theirs = venue_orders(venue)
    by_cid: dict[str, list[Any]] = {}
    for o in theirs:
        by_cid.setdefault(o.client_id, []).append(o)
    assert all(len(v) == 1 for v in by_cid.values()), "an order was sent twice"
    assert set(by_cid) <= set(stored), "the venue holds an order the session does not know"
    for cid, row in stored.items():
        if cid in by_cid:
            o = by_cid[cid][0]
            statuses = OKX_STATUS if isinstance(venue, OkxVenue) else VENUE_STATUS
            assert (row.status, Fraction(row.filled_qty)) == (statuses[o.status], Fraction(str(o.executed))), cid
            assert row.exchange_order_id == str(o.order_id)
        else:  # never reached the venue: the session says so
            assert row.status in ("rejected_unconfirmed", "rejected"), (cid, row.status)
    fills = await rows.fills(run_id)
    trades = sorted(str(t.id) for o in theirs for t in o.trades)
    assert sorted(f.trade_id for f in fills) == trades  # each fill once
    assert sorted(await rows.session_fill_ids(run_id)) == trades  # and once in the session's own book, by trade id
    return {"stored": {c: r.status for c, r in stored.items()}, "venue_orders": len(theirs), "fills": len(fills)}


async def settled_equal(rows: Rows, run_id: str, venue: TradingVenue) -> dict[str, Any]:
    """Wait until the rows agree with the venue (the resumed session may be sending or booking), then check it."""

    async def agrees() -> bool:
        try:
            await assert_rows_equal_venue(rows, run_id, venue)
        except AssertionError:
            return False
        return True

    with contextlib.suppress(AssertionError):
        await until("the rows to equal the venue", agrees)
    return await assert_rows_equal_venue(rows, run_id, venue)  # the assertion's own message if they never agree


async def start_session(first: ServerProcess, session: dict[str, Any], strategy: str = "OneRestingBuy") -> str:
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as c:
        r = await c.post("/api/v1/runs", json={**session, "strategy_name": strategy})
        assert r.status_code == 201, r.text
        return str(r.json()["run_id"])


async def stop_session(second: ServerProcess, run_id: str) -> None:
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as c:
        r = await c.post(f"/api/v1/runs/{run_id}/stop")
        assert r.status_code == 200, r.text


def dead(server: ServerProcess) -> bool:
    return server.proc is not None and server.proc.poll() is not None


POINTS = ["before_store", "after_store", "sent", "accepted", "between_fills", "cancel"]
# A strategy that trusts only its own state decides its order again when that state was saved a bar before the
# order went out: the resumed session must follow the stored order, not send another.
# Every kill point on both protocols; the decided-again cases (about the session's own state) on binance.
CASES = (
    [("binance", p, "OneRestingBuy") for p in POINTS]
    + [("binance", p, "OneRestingBuyByItsFlag") for p in ("sent", "accepted")]
    + [("okx", p, "OneRestingBuy") for p in POINTS]
)


@pytest.mark.parametrize(
    ("venue", "point", "strategy"), CASES, ids=[f"{v}-{p}-{s}" for v, p, s in CASES], indirect=["venue"]
)
async def test_a_live_session_killed_at_each_step_of_its_order_resumes_equal_to_the_venue_without_a_duplicate(
    point: str, strategy: str, venue: TradingVenue, db_url: str, rows: Rows, tmp_path: Path
) -> None:
    failpoint = {"before_store": "live.before_store", "after_store": "live.after_store"}.get(point)
    if strategy == "OneRestingBuyByItsFlag":
        failpoint = "session.rows_unwritten"  # no bar is saved before the kill: the strategy will decide again
    first = await asyncio.to_thread(_server(venue, db_url, tmp_path, "first", failpoint).start)
    second: ServerProcess | None = None
    run_id = ""
    try:
        if point == "sent":
            venue.on_next_order(killer(first), when="received")
        elif point == "accepted":
            venue.on_next_order(killer(first), when="placed")
        run_id = await start_session(first, session_for(venue), strategy)
        if point in ("between_fills", "cancel"):
            (row,) = await until("the order to rest on the venue", lambda: _resting(rows, run_id))
            cid = row.client_order_id
            if point == "between_fills":
                venue.fill_order(cid, SYMBOL, qty="0.004")
                await until("the first part-fill to be stored", lambda: _count_fills(rows, run_id, 1))
                first.kill()
                venue.fill_order(cid, SYMBOL, qty="0.003")  # while no server runs
            else:
                venue.on_next_cancel(killer(first), when="placed")
                sequence = parse_client_id(cid).sequence
                async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as c:
                    # Answered at once ("cancel sent"); the venue's answer to the cancel never reaches the server.
                    r = await c.post(f"/api/v1/runs/{run_id}/orders/{sequence}/cancel")
                    assert r.status_code == 200, r.text
        await until("the first server to die", lambda: dead(first))
        at_kill = {r.client_order_id: r.status for r in await rows.orders(run_id)}
        venue_at_kill = len(venue_orders(venue))

        second = await asyncio.to_thread(_server(venue, db_url, tmp_path, "second").start)
        detailed = await resumed_on(second, run_id, VENUE_KEYS[exchange_of(venue)])
        if point == "before_store":  # nothing was stored: the next server makes the bar's decision again
            await until("the next server to send the order", lambda: venue_orders(venue))
        found = await settled_equal(rows, run_id, venue)
        await stop_session(second, run_id)
        after_stop = await settled_equal(rows, run_id, venue)
    except BaseException:
        print("--- venue requests", [x for x in venue.site_log if "order" in x[2].lower() or "Trades" in x[2]][-15:])
        print("--- venue orders", [(o.client_id, o.status, o.executed) for o in venue_orders(venue)])
        for srv in (first, second):
            if srv is not None and not dead(srv) and run_id:
                with contextlib.suppress(httpx.HTTPError):
                    print("--- status", httpx.get(f"{srv.base_url}/api/v1/runs/{run_id}/status/detailed").text[:3000])
        for log in (first.log, *(() if second is None else (second.log,))):  # the servers' side of a failure
            print(f"--- {log.name}", *log.read_text().splitlines()[-60:], sep="\n")
        raise
    finally:
        first.kill()
        if second is not None:
            second.stop()
    create = ("POST", CREATE_PATH[exchange_of(venue)])
    sent = sum(1 for _, method, path in venue.site_log if (method, path) == create)
    print(
        f"\n[{exchange_of(venue)} {point}] at kill: rows {at_kill}, venue orders {venue_at_kill}; resumed: {found}; "
        f"create requests {sent}; "
        f"after stop: {after_stop}; status {detailed['status']}"
    )
    rows_at_kill, venue_after, statuses = list(at_kill.values()), found["venue_orders"], list(found["stored"].values())
    assert (rows_at_kill, venue_at_kill, sent, venue_after, statuses, found["fills"]) == EXPECTED[point]


# What each kill leaves (rows' statuses, venue orders) and what the next server makes of it (create requests in all,
# venue orders, rows' statuses, fills).
EXPECTED: dict[str, tuple[list[str], int, int, int, list[str], int]] = {
    # Nothing stored, nothing sent: the bar's decision is made again by the next server, and sent once.
    "before_store": ([], 0, 1, 1, ["open"], 0),
    # Stored, never sent: looked up with backoff, not found, `rejected_unconfirmed` (on the watch list); not re-sent.
    "after_store": (["pending_new"], 0, 0, 0, ["rejected_unconfirmed"], 0),
    # Sent, dropped by the venue: the same (a request that never placed anything is an order that does not exist).
    "sent": (["pending_new"], 0, 1, 0, ["rejected_unconfirmed"], 0),
    # Accepted, the answer lost: found by its client id and taken as the venue shows it; not re-sent.
    "accepted": (["pending_new"], 1, 1, 1, ["open"], 0),
    # The fill stored before the kill and the one made while down: each once.
    "between_fills": (["partially_filled"], 1, 1, 1, ["partially_filled"], 2),
    # Cancelled on the venue, the answer lost: the stored `pending_cancel` becomes `canceled`.
    "cancel": (["pending_cancel"], 1, 1, 1, ["canceled"], 0),
}


async def _resting(rows: Rows, run_id: str) -> list[Any] | None:
    stored = await rows.orders(run_id)
    return stored if len(stored) == 1 and stored[0].status == "open" else None


async def _count_fills(rows: Rows, run_id: str, n: int) -> bool:
    return len(await rows.fills(run_id)) >= n


SECRET_KEY = "test-secret-key-for-stored-credentials-0123456789"
REAL_MONEY_RISK = {"capital": 1_000.0, "max_position_notional": 900.0, "daily_loss_limit": 50.0}


@pytest.mark.parametrize("venue", ["binance", "okx"], indirect=True)
async def test_a_real_money_session_killed_after_the_venue_accepted_resumes_on_its_stored_credentials(
    venue: TradingVenue, db_url: str, rows: Rows, tmp_path: Path
) -> None:
    from pydantic import SecretStr

    from cracktrader.db.credential_store import CredentialStore
    from cracktrader.db.secret_box import SecretBox
    from cracktrader.exchanges.credentials import ExchangeCredentials
    from cracktrader.settings import Settings

    box = SecretBox.from_settings(Settings(data_dir=tmp_path, secret_key=SecretStr(SECRET_KEY)))
    exchange = exchange_of(venue)
    keys = VENUE_KEYS[exchange]
    await CredentialStore(rows.engine, box).add(0, "main", ExchangeCredentials(exchange, dict(keys)))
    money = {"CRACKTRADER_LIVE_TRADING": "enabled", "CRACKTRADER_SECRET_KEY": SECRET_KEY}

    def real_money_server(name: str) -> ServerProcess:
        srv = _server(venue, db_url, tmp_path, name)
        srv.env.update(money)
        return srv

    first = await asyncio.to_thread(real_money_server("first").start)
    second: ServerProcess | None = None
    try:
        venue.on_next_order(killer(first), when="placed")
        body = {**session_for(venue), "exchange_config": {"credentials": "main", "risk": REAL_MONEY_RISK}}
        async with httpx.AsyncClient(base_url=first.base_url, timeout=60) as c:
            r = await c.post("/api/v1/runs", json=body)
            assert r.status_code == 201, r.text
            assert (r.json()["status"], r.json()["live"]["sandbox"]) == ("running", False)  # answered after its checks
            run_id = str(r.json()["run_id"])
        await until("the first server to die", lambda: dead(first))

        second = await asyncio.to_thread(real_money_server("second").start)
        async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as c:

            async def running() -> bool:
                body = (await c.get(f"/api/v1/runs/{run_id}/status/detailed")).json()
                assert body.get("phase") != "awaiting_credentials", body  # stored credentials: nothing to wait for
                return bool(body.get("status") == "running")

            await until("the resumed session to run on its stored credentials", running)
        found = await settled_equal(rows, run_id, venue)
        await stop_session(second, run_id)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    sent = sum(1 for _, method, path in venue.site_log if (method, path) == ("POST", CREATE_PATH[exchange]))
    assert (sent, found["venue_orders"], list(found["stored"].values())) == (1, 1, ["open"])
    assert "sandbox" not in venue.sites_used()
