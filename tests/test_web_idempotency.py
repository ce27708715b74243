"""`Idempotency-Key` on start requests: a retry with the same key and body answers the same run, never a second."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from auth_support import auth_client, bearer
from cracktrader.db.idempotency_store import IdempotencyStore
from db_support import DatabaseTarget
from web_support import YEAR_1H, app_client, live_server

pytestmark = pytest.mark.anyio
SHORT = {**YEAR_1H, "end_date": "2024-01-03T00:00:00Z", "mode": "backtest"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def backtests(c: httpx.AsyncClient, headers: dict[str, str] | None = None) -> int:
    r = await c.get("/api/v1/runs", params={"mode": "backtest"}, headers=headers or {})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


async def test_a_start_retried_with_the_same_key_returns_the_same_run_and_starts_no_second() -> None:
    async with app_client() as c:
        first = await c.post("/api/v1/runs", json=SHORT, headers=key("order-7f3a"))
        again = await c.post("/api/v1/runs", json=SHORT, headers=key("order-7f3a"))
        other = await c.post("/api/v1/runs", json=SHORT, headers=key("order-8b21"))
        total = await backtests(c)
    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 201)
    assert again.json() == first.json()
    assert (first.headers.get("Idempotent-Replayed"), again.headers["Idempotent-Replayed"]) == (None, "true")
    assert other.json()["run_id"] != first.json()["run_id"]
    assert total == 2


async def test_the_same_key_with_another_body_is_422_idempotency_key_reused() -> None:
    async with app_client() as c:
        first = await c.post("/api/v1/runs", json=SHORT, headers=key("k-1"))
        changed = await c.post("/api/v1/runs", json={**SHORT, "initial_cash": 5_000}, headers=key("k-1"))
        total = await backtests(c)
    assert first.status_code == 201
    error = changed.json()["error"]
    assert (changed.status_code, error["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert "new key" in error["message"]
    assert total == 1


@pytest.mark.parametrize("bad", [b"has space", b"x" * 256, "é-accent".encode(), b""])
async def test_a_malformed_key_is_422_saying_what_a_key_may_hold(bad: bytes) -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/runs", json=SHORT, headers={b"Idempotency-Key": bad})
        total = await backtests(c)
    error = r.json()["error"]
    assert (r.status_code, error["code"]) == (422, "INVALID_IDEMPOTENCY_KEY")
    assert "1 to 255 printable ASCII characters" in error["message"]
    assert total == 0


async def test_a_start_refused_releases_its_key_so_the_corrected_retry_starts() -> None:
    async with app_client() as c:
        refused = await c.post("/api/v1/runs", json={**SHORT, "strategy_name": "NoSuchStrategy"}, headers=key("k-2"))
        corrected = await c.post("/api/v1/runs", json=SHORT, headers=key("k-2"))
        total = await backtests(c)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "UNKNOWN_STRATEGY"
    assert corrected.status_code == 201 and "Idempotent-Replayed" not in corrected.headers
    assert total == 1


async def test_ten_concurrent_starts_with_one_key_make_one_run() -> None:
    async with app_client() as c:
        answers = await asyncio.gather(*(c.post("/api/v1/runs", json=SHORT, headers=key("burst")) for _ in range(10)))
        total = await backtests(c)
    started = {r.json()["run_id"] for r in answers if r.status_code == 201}
    busy = [r.json()["error"]["code"] for r in answers if r.status_code == 409]
    assert len(started) == 1 and total == 1
    assert set(busy) <= {"IDEMPOTENCY_KEY_IN_USE"} and len(busy) + sum(r.status_code == 201 for r in answers) == 10


async def test_two_servers_on_one_database_answer_a_key_with_the_same_run() -> None:
    async with app_client() as a, app_client() as b:
        first = await a.post("/api/v1/runs", json=SHORT, headers=key("shared"))
        again = await b.post("/api/v1/runs", json=SHORT, headers=key("shared"))
        total = await backtests(b)
    assert again.status_code == 201 and again.json()["run_id"] == first.json()["run_id"]
    assert total == 1


async def test_keys_are_per_user() -> None:
    async with auth_client() as c:
        alice, bob = await bearer(c, "alice"), await bearer(c, "bob")
        for_alice = await c.post("/api/v1/runs", json=SHORT, headers={**alice, **key("mine")})
        for_bob = await c.post("/api/v1/runs", json=SHORT, headers={**bob, **key("mine")})
        totals = (await backtests(c, alice), await backtests(c, bob))
    assert (for_alice.status_code, for_bob.status_code) == (201, 201)
    assert for_alice.json()["run_id"] != for_bob.json()["run_id"]
    assert "Idempotent-Replayed" not in for_bob.headers
    assert totals == (1, 1)


async def test_the_slot_start_and_rerun_take_a_key_too() -> None:
    body: dict[str, Any] = {k: v for k, v in SHORT.items() if k != "mode"}
    async with app_client() as c:
        first = await c.post("/api/v1/run/backtest", json=body, headers=key("slot"))
        again = await c.post("/api/v1/run/backtest", json=body, headers=key("slot"))  # not 409 RUN_ALREADY_ACTIVE
        run_id = first.json()["run_id"]
        while (await c.get(f"/api/v1/runs/{run_id}")).json()["status"] not in ("completed", "failed"):
            await asyncio.sleep(0.05)
        await c.delete("/api/v1/run/reset")
        rerun = await c.post(f"/api/v1/runs/{run_id}/rerun", headers=key("rerun"))
        rerun_again = await c.post(f"/api/v1/runs/{run_id}/rerun", headers=key("rerun"))
    assert (first.status_code, again.status_code) == (200, 200) and again.json() == first.json()
    assert rerun.status_code == 202 and rerun_again.json()["run_id"] == rerun.json()["run_id"] != run_id


async def test_one_claim_wins_on_each_backend_and_an_expired_key_is_claimed_afresh(target: DatabaseTarget) -> None:
    engine = target.engine()
    try:
        store = IdempotencyStore(engine, ttl=timedelta(hours=24))
        now = datetime(2026, 12, 2, tzinfo=UTC)
        claims = await asyncio.gather(*(store.claim(user_id=1, key="k", fingerprint="f", now=now) for _ in range(8)))
        assert sum(c is None for c in claims) == 1
        await store.answer(user_id=1, key="k", run_id="r" * 32, response={"run_id": "r" * 32})
        later = await store.claim(user_id=1, key="k", fingerprint="f", now=now + timedelta(hours=23))
        assert later is not None and later.run_id == "r" * 32
        assert await store.claim(user_id=1, key="k", fingerprint="g", now=now + timedelta(hours=25)) is None
    finally:
        await engine.dispose()


def test_the_python_sdk_sends_the_key_and_a_retry_gets_the_same_run() -> None:
    from cracktrader.client import CrackTraderAPI

    body = {k: v for k, v in SHORT.items() if k != "mode"}
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        first = api.start_run(body, idempotency_key="sdk-retry-1")
        again = api.start_run(body, idempotency_key="sdk-retry-1")
        fresh = api.start_run(body)
        total = api.list_runs(mode="backtest").total
    assert again.run_id == first.run_id != fresh.run_id
    assert total == 2
