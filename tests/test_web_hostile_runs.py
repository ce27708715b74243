"""Hostile requests against the run registry and paper sessions (issue 10): a clear 4xx, never a 500, nothing
stored lost, and no user reaching another's run by id."""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_support import auth_client, bearer
from cracktrader.clock import ManualClock
from cracktrader.runs import sessions
from cracktrader.runs.config import LiveConfig
from cracktrader.settings import get_settings
from cracktrader.strategies.builtin import SmaCross
from cracktrader.strategies.pinning import pin
from web_support import SLOW_RUN, LiveServer, app_client, with_test_strategies

pytestmark = pytest.mark.anyio
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SESSION: dict[str, Any] = {
    "strategy_name": "BuyAndHold",
    "symbols": ["BTC/USDT"],
    "timeframe": "1m",
    "exchange": "synthetic",
    "mode": "paper",
}
BACKTEST: dict[str, Any] = {
    **SESSION,
    "mode": "backtest",
    "timeframe": "1h",
    "start_date": "2024-01-01",
    "end_date": "2024-01-03",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_deleting_another_users_active_run_is_404_not_a_409_that_says_it_runs() -> None:
    async with auth_client() as c:
        c.app.state.sessions.clock = ManualClock(NOW + 10)  # type: ignore[attr-defined]
        alice, bob = await bearer(c, "alice"), await bearer(c, "bob")
        session = (await c.post("/api/v1/runs", json=SESSION, headers=alice)).json()["run_id"]
        backtest = (await c.post("/api/v1/runs", json=BACKTEST, headers=alice)).json()["run_id"]
        for run_id in (session, backtest):
            r = await c.delete(f"/api/v1/runs/{run_id}", headers=bob)
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "NOT_FOUND"
            assert "active" not in r.json()["error"]["message"]
        # Alice's own delete still says why it cannot be done yet.
        own = await c.delete(f"/api/v1/runs/{session}", headers=alice)
        assert own.status_code == 409 and own.json()["error"]["code"] == "RUN_NOT_RESETTABLE"
        assert (await c.get(f"/api/v1/runs/{session}/status", headers=alice)).json()["status"] == "running"
        await c.post(f"/api/v1/runs/{session}/stop", headers=alice)


@pytest.mark.parametrize(
    ("paper", "field"),
    [
        ({"balances": {"USDT": "100"}}, "balances.USDT"),
        ({"exchange_rules": "false"}, "exchange_rules"),
        ({"slippage_bps": "5"}, "slippage_bps"),
        ({"latency_ms": "500"}, "latency_ms"),
        ({"replay": {"start": "2024-01-01", "end": "2024-01-02", "speed": "1e9"}}, "replay.speed"),
    ],
)
async def test_paper_settings_of_the_wrong_type_are_refused_not_run_and_then_lost_from_the_record(
    paper: dict[str, Any], field: str
) -> None:
    # A string the session coerced ran with, while the stored config (which a resumed session is rebuilt from)
    # dropped it: after a restart the session would trade with 10,000 USDT, or other exchange rules.
    with LiveServer() as srv:
        srv.app.state.sessions.clock = ManualClock(NOW + 10)
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as c:
            r = await c.post("/api/v1/runs", json={**SESSION, "exchange_config": {"paper": paper}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "INVALID_PAPER_CONFIG"
    assert field in r.json()["error"]["message"]


async def test_a_replay_with_epoch_millisecond_dates_keeps_them_in_its_record() -> None:
    # The record is what a resumed session is rebuilt from: without start and end it could never resume.
    replay = {"start": " 1704067200000", "end": "1704153600000 ", "speed": 1e9}
    with LiveServer() as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as c:
            r = await c.post("/api/v1/runs", json={**SESSION, "exchange_config": {"paper": {"replay": replay}}})
            assert r.status_code == 201, r.text
            record = (await c.get(f"/api/v1/runs/{r.json()['run_id']}")).json()
    assert record["config"]["exchange_config"] == {"paper": {"replay": replay}}
    assert record["config"]["exchange_config_dropped_keys"] == 0


async def test_backtests_beyond_the_running_and_queued_limits_are_refused_with_409_queue_full() -> None:
    # 1 running + 2 waiting admitted; 30 requests at once must not all queue (each queued run holds memory).
    settings = with_test_strategies(get_settings()).model_copy(
        update={"max_concurrent_backtests": 1, "max_queued_backtests": 2}
    )
    with LiveServer(settings) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=120) as c:
            body = {**SLOW_RUN, "mode": "backtest"}  # 44 s or more each: none ends during the test
            answers = await asyncio.gather(*[c.post("/api/v1/runs", json=body) for _ in range(30)])
            accepted = [r.json()["run_id"] for r in answers if r.status_code == 201]
            refused = [r.json()["error"] for r in answers if r.status_code != 201]
            assert len(accepted) == 3, [r.text for r in answers if r.status_code not in (201, 409)]
            assert len(refused) == 27 and {e["code"] for e in refused} == {"QUEUE_FULL"}
            assert refused[0]["details"] == {"max_concurrent_backtests": 1, "max_queued_backtests": 2}
            assert "CRACKTRADER_MAX_QUEUED_BACKTESTS" in refused[0]["message"]
            for run_id in accepted:
                assert (await c.post(f"/api/v1/runs/{run_id}/stop")).status_code == 200
            # Stopped runs free their places.
            again = await c.post("/api/v1/runs", json=body)
            assert again.status_code == 201, again.text
            await c.post(f"/api/v1/runs/{again.json()['run_id']}/stop")


async def test_a_replay_over_the_replay_bar_limit_is_refused_before_it_loads_anything() -> None:
    # A replay loads every candle into the server process itself (not a worker): 10 symbols x a year of 1m took
    # 20 s of the API's GIL and 2 GB there. Two symbols x a year of 1m is 1,051,200 bars, over the 1,000,000 default.
    replay = {"start": "2023-01-01", "end": "2024-01-01", "speed": 1}
    body = {**SESSION, "symbols": ["BTC/USDT", "ETH/USDT"], "exchange_config": {"paper": {"replay": replay}}}
    with LiveServer() as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as c:
            r = await c.post("/api/v1/runs", json=body)
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "RUN_TOO_LARGE" and "CRACKTRADER_MAX_REPLAY_BARS" in error["message"]
            assert error["details"]["total_bars"] == 1_051_200 and error["details"]["max_total_bars"] == 1_000_000
            assert srv.app.state.sessions.active_count() == 0
            # One symbol of the same year fits.
            one = await c.post("/api/v1/runs", json={**body, "symbols": ["BTC/USDT"]})
            assert one.status_code == 201, one.text
            await c.post(f"/api/v1/runs/{one.json()['run_id']}/stop")


async def test_a_session_start_stuck_on_its_exchange_does_not_hold_up_other_starts_nor_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A session on an unreachable exchange spends 15 s in its warm-up (ccxt's retries): every other user's start
    # waited behind it. It still counts toward CRACKTRADER_MAX_LIVE_SESSIONS while it starts.
    release = threading.Event()
    real = sessions.prepare_paper

    def slow_for_eth(config: LiveConfig, **kwargs: Any) -> Any:
        if config.symbols == ["ETH/USDT"]:
            assert release.wait(60), "the test never released the stuck start"
        return real(config, **kwargs)

    monkeypatch.setattr(sessions, "prepare_paper", slow_for_eth)
    settings = with_test_strategies(get_settings()).model_copy(update={"max_live_sessions": 2})
    async with app_client(settings) as c:
        c.app.state.sessions.clock = ManualClock(NOW + 10)  # type: ignore[attr-defined]
        stuck = asyncio.create_task(c.post("/api/v1/runs", json={**SESSION, "symbols": ["ETH/USDT"]}))
        while c.app.state.sessions._starting == 0:  # type: ignore[attr-defined]
            await asyncio.sleep(0.005)  # the stuck start has its place and is in its warm-up
        other = await c.post("/api/v1/runs", json=SESSION)
        assert other.status_code == 201, other.text
        over = await c.post("/api/v1/runs", json=SESSION)
        assert over.status_code == 409 and over.json()["error"]["code"] == "SESSION_LIMIT"
        assert not stuck.done()
        release.set()
        late = await stuck
        assert late.status_code == 201, late.text
        for run_id in (other.json()["run_id"], late.json()["run_id"]):
            assert (await c.post(f"/api/v1/runs/{run_id}/stop")).status_code == 200


async def test_thirty_session_starts_at_once_admit_exactly_the_limit() -> None:
    settings = with_test_strategies(get_settings()).model_copy(update={"max_live_sessions": 3})
    with LiveServer(settings) as srv:
        srv.app.state.sessions.clock = ManualClock(NOW + 10)
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=120) as c:
            answers = await asyncio.gather(*[c.post("/api/v1/runs", json=SESSION) for _ in range(30)])
            slot = await c.post("/api/v1/run/live", json=SESSION)
            started = [r.json()["run_id"] for r in answers if r.status_code == 201]
            codes = {r.json()["error"]["code"] for r in answers if r.status_code != 201}
            assert len(started) == 3 and codes == {"SESSION_LIMIT"}
            assert slot.status_code == 409 and slot.json()["error"]["code"] == "SESSION_LIMIT"
            assert srv.app.state.sessions.active_count() == 3
            for run_id in started:
                assert (await c.post(f"/api/v1/runs/{run_id}/stop")).status_code == 200


def test_two_sessions_pinning_the_same_new_strategy_at_once_both_keep_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Concurrent starts of one strategy on a fresh data dir both found no kept copy, wrote the same `.part` file and
    # renamed it: the second rename found nothing and the start was a 500. Both writers pass the barrier after
    # writing, before either renames: the interleaving that failed, every time.
    barrier = threading.Barrier(2, timeout=30)
    real_write = Path.write_bytes

    def write_then_wait(self: Path, data: bytes) -> int:
        written = real_write(self, data)
        barrier.wait()
        return written

    monkeypatch.setattr(Path, "write_bytes", write_then_wait)
    settings = get_settings().model_copy(update={"data_dir": tmp_path})
    digests: list[str | None] = []
    errors: list[BaseException] = []

    def pin_it() -> None:
        try:
            digests.append(pin(SmaCross, settings))
        except BaseException as exc:  # what a start would have answered
            errors.append(exc)

    threads = [threading.Thread(target=pin_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(digests) == 2 and digests[0] == digests[1]
    kept = tmp_path / "pinned_strategies" / f"{digests[0]}.py"
    assert kept.read_bytes() == Path(inspect.getfile(SmaCross)).read_bytes()
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no partial file left behind
