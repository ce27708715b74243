"""Real money: off unless the server enables it, only on stored credentials with size and loss limits, an echo of
what the session will do, and resting orders cancelled after too long offline on a venue without a dead man's
switch. Against the fake venue's main site (not its sandbox) with the real ccxt client, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cracktrader.brokers.live import OrderIntent
from cracktrader.brokers.orders import OrderStatus
from cracktrader.db.credential_store import CredentialStore
from cracktrader.db.secret_box import SecretBox
from cracktrader.exchanges.credentials import ExchangeCredentials
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.live import LiveCheckError, LiveRequestError, LiveTradingDisabledError
from cracktrader.runs.sessions import resume
from cracktrader.settings import Settings
from db_support import DatabaseTarget
from fakes.trading import TradingVenue
from test_live_sessions import (
    KEYS,
    LEASE_T0,
    SERVER_B,
    SYMBOL,
    T0,
    TTL_S,
    crash,
    live_config,
    server,
    settings_for,
    until,
    venue_orders,
)
from web_support import app_client

pytestmark = pytest.mark.anyio
LIMITS = {"capital": 1_000.0, "max_position_notional": 900.0, "daily_loss_limit": 50.0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[TradingVenue]:
    with TradingVenue(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}) as fake:
        yield fake


def real_money(**exchange_config: Any) -> LiveConfig:
    """BuyAndHold on the venue's main site (no sandbox) with stored credentials named `main`."""
    config = live_config()
    ec = {"credentials": "main", "risk": dict(LIMITS), **exchange_config}
    return config.model_copy(update={"exchange_config": ec})


def enabled(settings: Settings) -> Settings:
    return settings.model_copy(update={"live_trading": "enabled"})


async def store_keys(target: DatabaseTarget, settings: Settings, **change: str) -> None:
    engine = target.engine()
    try:
        store = CredentialStore(engine, SecretBox.from_settings(settings))
        await store.add(0, "main", ExchangeCredentials("binance", {**KEYS, **change}))
    finally:
        await engine.dispose()


async def test_real_money_on_a_server_that_has_not_enabled_it_is_403_saying_how(venue: TradingVenue) -> None:
    body = real_money().model_dump(exclude_none=True)
    async with app_client() as c:
        r = await c.post("/api/v1/runs", json=body)
    error = r.json()["error"]
    assert (r.status_code, error["code"]) == (403, "LIVE_TRADING_DISABLED")
    assert "CRACKTRADER_LIVE_TRADING=enabled" in error["message"] and "sandbox: true" in error["message"]
    assert venue.request_log == []  # nothing reached the exchange


async def test_real_money_needs_stored_credentials_and_size_and_loss_limits(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = enabled(settings_for(venue, tmp_path))
    async with server(target, settings, venue.clock) as registry:
        inline = live_config().model_copy(update={"exchange_config": {**KEYS, "risk": dict(LIMITS)}})
        with pytest.raises(LiveRequestError, match="stored credentials only"):
            await registry.start(inline)
        with pytest.raises(LiveRequestError, match="daily_loss_limit or daily_loss_fraction") as caught:
            await registry.start(real_money(risk={"capital": 1_000.0, "max_order_notional": 100.0}))
        assert caught.value.details["missing"] == ["daily_loss_limit or daily_loss_fraction"]
        with pytest.raises(LiveTradingDisabledError):
            await server_disabled_start(target, venue, tmp_path)
    assert venue.request_log == []


async def server_disabled_start(target: DatabaseTarget, venue: TradingVenue, tmp_path: Path) -> None:
    async with server(target, settings_for(venue, tmp_path), venue.clock, server_id="server-c") as registry:
        await registry.start(real_money())


async def test_a_real_money_start_echoes_the_account_and_limits_and_trades_on_the_main_site_only(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = enabled(settings_for(venue, tmp_path))
    await store_keys(target, settings)
    async with server(target, settings, venue.clock) as registry:
        started = await registry.start(real_money())
        assert started["status"] == "running"  # answered after the checks read the account
        echo = started["live"]
        where = (echo["exchange"], echo["sandbox"], echo["capital"], echo["quote"])
        assert where == ("binance", False, 1_000.0, "USDT")
        assert echo["tradable_balance"] == pytest.approx(10_000.0)
        assert (echo["risk"]["max_position_notional"], echo["risk"]["daily_loss_limit"]) == (900.0, 50.0)
        run = registry.get(started["run_id"])
        assert run.live is not None
        assert run.snapshot()["live"]["dead_man_switch"] == "unsupported"  # binance spot has none
        bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
        order = await run.live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * 0.97, 2)))
        assert order.status is OrderStatus.OPEN
        await registry.stop(run.run_id)
    assert venue.sites_used() == {"main"}


async def test_a_real_money_start_whose_checks_fail_answers_the_failed_check_not_starting(
    venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = enabled(settings_for(venue, tmp_path))
    await store_keys(target, settings, secret="a-rotated-away-secret")
    async with server(target, settings, venue.clock) as registry:
        with pytest.raises(LiveCheckError, match="refused the credentials") as refused:
            await registry.start(real_money())
        run_id = refused.value.details["run_id"]
        await until(lambda: registry.get(run_id).status == "failed", "failed")
    assert refused.value.check == "AUTH_FAILED"
    assert venue_orders(venue) == []


@pytest.mark.parametrize(
    ("offline_s", "cancelled", "venue_status"),
    [(301, 1, "CANCELED"), (120, 0, "NEW")],
    ids=["over-the-limit-cancels", "within-the-limit-keeps"],
)
async def test_a_session_resumed_after_too_long_offline_cancels_its_resting_orders_before_trading_again(
    offline_s: float, cancelled: int, venue_status: str, venue: TradingVenue, target: DatabaseTarget, tmp_path: Path
) -> None:
    settings = settings_for(venue, tmp_path).model_copy(update={"max_offline_s": 300.0})
    async with server(target, settings, venue.clock) as a:
        run_a = a.get((await a.start(live_config()))["run_id"])
        await until(lambda: run_a.status == "running", "running")
        assert run_a.live is not None
        bid = float(venue.book_ticker("BTCUSDT")["bidPrice"])
        resting = await run_a.live.place(OrderIntent(SYMBOL, "buy", "limit", 0.01, round(bid * 0.97, 2)))
        assert resting.status is OrderStatus.OPEN
        await crash(a, run_a)

    venue.clock.advance(offline_s)  # down this long, on a venue with no dead man's switch (binance spot)
    later = LEASE_T0 + timedelta(seconds=TTL_S + 1)
    async with server(target, settings, venue.clock, server_id=SERVER_B, lease=later) as b:
        assert await b.scan() == [run_a.run_id]
        run_b = b.get(run_a.run_id)
        resume(run_b, dict(KEYS))
        await until(lambda: run_b.status == "running", "running")
        assert run_b.live is not None and run_b.snapshot()["live"]["offline_cancels"] == cancelled
        (on_venue,) = venue_orders(venue)
        assert on_venue.status == venue_status
        await b.stop(run_b.run_id)
