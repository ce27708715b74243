"""Stored strategies (seed 004's CRUD) merged with the strategy classes, presets as `strategy_name` in runs, and
their store on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from auth_support import bearer, wait_done
from cracktrader.db.strategy_store import DuplicateNameError, StrategyStore
from db_support import DatabaseTarget
from web_support import YEAR_1H, app_client, wait_for_status

pytestmark = pytest.mark.anyio
API = "/api/v1/strategies"
FAST_SMA = {
    "name": "Fast SMA",
    "description": "SmaCross with short windows",
    "base_strategy": "SmaCross",
    "parameters": {"fast": 5, "slow": 20},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def _create(c: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = await c.post(API, json=body, headers=headers or {})
    assert r.status_code == 201, r.text
    return dict(r.json())


# Seed 004 shapes --------------------------------------------------------------------------------------------
async def test_seed_004_create_list_get_update_delete_round_trip() -> None:
    async with app_client() as c:
        body = {
            "name": "RSI Mean Reversion",
            "description": "Buy oversold, sell overbought",
            "parameters": {"rsi_period": 14, "oversold": 30, "overbought": 70},
            "is_active": True,
        }
        created = await _create(c, body)
        assert created["id"] >= 1 and created["name"] == "RSI Mean Reversion" and created["is_active"] is True
        assert created["parameters"] == body["parameters"] and created["kind"] == "preset"
        assert created["created_at"].endswith("Z") and created["created_at"] == created["updated_at"]
        sid = created["id"]
        assert (await c.get(f"{API}/{sid}")).json() == created
        page = (await c.get(API)).json()
        assert set(page) >= {"items", "total", "skip", "limit"} and page["skip"] == 0 and page["limit"] == 100
        assert [i["id"] for i in page["items"] if i["kind"] == "preset"] == [sid]
        # 004's update body: a partial change; `parameters` replaces the whole object.
        r = await c.put(f"{API}/{sid}", json={"name": "Updated Strategy Name", "parameters": {"new_param": 42}})
        assert r.status_code == 200, r.text
        updated = r.json()
        assert updated["name"] == "Updated Strategy Name" and updated["parameters"] == {"new_param": 42}
        assert (
            updated["description"] == "Buy oversold, sell overbought" and updated["updated_at"] >= created["updated_at"]
        )
        r = await c.delete(f"{API}/{sid}")
        assert r.status_code == 204 and r.content == b""
        r = await c.get(f"{API}/{sid}")
        assert r.status_code == 404 and _code(r) == "NOT_FOUND" and "detail" in r.json()
        assert (await c.put(f"{API}/{sid}", json={"name": "x"})).status_code == 404
        assert (await c.delete(f"{API}/{sid}")).status_code == 404


async def test_seed_004_python_client_example_works_as_printed() -> None:
    """Seed 004's httpx example, with auth on and user@example.com as the account."""
    from auth_support import PASSWORD, add_user, auth_client

    async with auth_client() as client:
        await add_user(client, "user@example.com")
        response = await client.post("/api/v1/auth/login", data={"username": "user@example.com", "password": PASSWORD})
        token = response.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        response = await client.get("/api/v1/strategies", headers=headers)
        strategies = response.json()["items"]
        assert {"SmaCross", "TestStrategy"} <= {s["name"] for s in strategies}
        response = await client.post(
            "/api/v1/strategies",
            headers=headers,
            json={"name": "New Strategy", "description": "Test", "parameters": {}},
        )
        new_strategy = response.json()
        assert response.status_code == 201 and isinstance(new_strategy["id"], int)
        assert (await client.get("/api/v1/strategies", headers={})).status_code == 401


async def test_validation_errors_use_the_envelope_with_004s_detail_list() -> None:
    async with app_client() as c:
        r = await c.post(API, json={"description": "no name"})
        assert r.status_code == 422 and _code(r) == "VALIDATION_ERROR"
        assert r.json()["detail"][0]["loc"] == ["body", "name"] and r.json()["detail"][0]["msg"]
        for bad in ({"name": "   "}, {"name": "x" * 201}, {"name": "x", "parameters": []}, {"name": "x", "extra": 1}):
            assert (await c.post(API, json=bad)).status_code == 422, bad
        r = await c.post(API, json={**FAST_SMA, "parameters": {"fast": 0}})
        assert r.status_code == 422 and _code(r) == "INVALID_STRATEGY_PARAMS"
        assert "fast" in r.json()["error"]["message"] and "Accepted parameters" in r.json()["error"]["message"]
        r = await c.post(API, json={**FAST_SMA, "base_strategy": "NoSuchClass"})
        assert r.status_code == 422 and _code(r) == "UNKNOWN_STRATEGY" and "SmaCross" in r.json()["error"]["message"]
        assert (await c.get(f"{API}?limit=1001")).status_code == 422
        assert (await c.get(f"{API}?skip=-1")).status_code == 422
        assert (await c.put(f"{API}/abc", json={})).status_code == 422
        assert (await c.get(API)).json()["total"] == len((await c.get(f"{API}?kind=class")).json()["items"])


async def test_duplicate_names_conflict_case_insensitively_and_with_class_names() -> None:
    async with app_client() as c:
        first = await _create(c, FAST_SMA)
        r = await c.post(API, json={**FAST_SMA, "name": "  fast sma "})
        assert r.status_code == 409 and _code(r) == "DUPLICATE_NAME" and r.json()["detail"]
        r = await c.post(API, json={**FAST_SMA, "name": "smacross"})
        assert r.status_code == 409 and "strategy class" in r.json()["error"]["message"]
        other = await _create(c, {**FAST_SMA, "name": "Slow SMA"})
        r = await c.put(f"{API}/{other['id']}", json={"name": "FAST SMA"})
        assert r.status_code == 409
        # Nothing was changed by the refused requests.
        assert (await c.get(f"{API}/{other['id']}")).json()["name"] == "Slow SMA"
        assert (await c.get(f"{API}/{first['id']}")).json() == first


async def test_classes_are_read_only_entries_with_schemas_and_presets_follow() -> None:
    async with app_client() as c:
        preset = await _create(c, FAST_SMA)
        page = (await c.get(API)).json()
        classes = [i for i in page["items"] if i["kind"] == "class"]
        sma = next(i for i in classes if i["name"] == "SmaCross")
        assert sma["id"] is None and sma["read_only"] is True and sma["origin"] == "builtin"
        assert sma["parameters"] == {"fast": 10, "slow": 30, "size": 1.0, "stop_loss": None, "take_profit": None}
        assert sma["parameters_schema"]["properties"]["fast"]["default"] == 10
        assert page["items"][-1]["id"] == preset["id"] and page["total"] == len(classes) + 1
        assert preset["parameters_schema"] == sma["parameters_schema"] and preset["style"] == "vectorized"
        assert (await c.get(f"{API}/SmaCross")).json() == sma
        assert (await c.get(f"{API}/NoSuch")).status_code == 404


async def test_skip_limit_and_active_only_page_over_the_merged_list() -> None:
    async with app_client() as c:
        n_classes = (await c.get(f"{API}?kind=class")).json()["total"]
        for k in range(5):
            await _create(c, {**FAST_SMA, "name": f"p{k}", "is_active": k % 2 == 0})
        page = (await c.get(f"{API}?skip={n_classes + 1}&limit=2")).json()
        assert [i["name"] for i in page["items"]] == ["p1", "p2"] and page["total"] == n_classes + 5
        assert page["skip"] == n_classes + 1 and page["limit"] == 2
        active = (await c.get(f"{API}?kind=preset&active_only=true")).json()
        assert [i["name"] for i in active["items"]] == ["p0", "p2", "p4"] and active["total"] == 3


# Presets in runs --------------------------------------------------------------------------------------------
async def test_a_preset_runs_by_name_with_request_params_on_top() -> None:
    async with app_client() as c:
        await _create(c, FAST_SMA)
        r = await c.post(
            "/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "Fast SMA", "strategy_params": {"slow": 30}}
        )
        assert r.status_code == 200, r.text
        await wait_for_status(c, {"completed"})
        doc = (await c.get("/api/v1/results")).json()
        cfg = doc["config"]
        assert cfg["strategy_name"] == "Fast SMA" and cfg["strategy_class"] == "SmaCross"
        assert cfg["strategy_params"] == {"fast": 5, "slow": 30}
        via_preset = doc["final_value"]
        history = (await c.get("/api/v1/runs?strategy=Fast SMA")).json()
        assert history["total"] == 1
        # The same class and parameters named directly give the same result.
        await c.delete("/api/v1/run/reset")
        r = await c.post(
            "/api/v1/run/backtest",
            json={**YEAR_1H, "strategy_name": "SmaCross", "strategy_params": {"fast": 5, "slow": 30}},
        )
        assert r.status_code == 200, r.text
        await wait_for_status(c, {"completed"})
        direct = (await c.get("/api/v1/results")).json()
        assert direct["final_value"] == via_preset and direct["config"]["strategy_class"] is None


async def test_a_preset_that_cannot_run_says_why() -> None:
    async with app_client() as c:
        inactive = await _create(c, {**FAST_SMA, "name": "Off", "is_active": False})
        await _create(c, {"name": "No Base", "parameters": {"x": 1}})
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "Off"})
        assert r.status_code == 409 and _code(r) == "STRATEGY_INACTIVE" and str(inactive["id"]) in r.json()["detail"]
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "No Base"})
        assert r.status_code == 422 and _code(r) == "STRATEGY_NOT_RUNNABLE" and "base_strategy" in r.json()["detail"]
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "Nope"})
        assert r.status_code == 400 and _code(r) == "UNKNOWN_STRATEGY"
        assert r.json()["error"]["details"]["stored"] == ["Off", "No Base"]
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "Off", "strategy_class": "SmaCross"})
        assert r.status_code == 409  # a client cannot smuggle a class past the preset check
        r = await c.post(
            "/api/v1/run/live", json={"strategy_name": "Off", "symbols": ["BTC/USDT"], "exchange": "synthetic"}
        )
        assert r.status_code == 409 and _code(r) == "STRATEGY_INACTIVE"
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"


async def test_presets_survive_a_restart() -> None:
    async with app_client() as c:
        created = await _create(c, FAST_SMA)
    async with app_client() as c:
        assert (await c.get(f"{API}/{created['id']}")).json() == created


# Ownership --------------------------------------------------------------------------------------------------
async def test_presets_belong_to_their_user() -> None:
    from auth_support import auth_client

    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        admin = await bearer(c, "root", role="admin")
        viewer = await bearer(c, "vera", role="viewer")
        mine = await _create(c, FAST_SMA, alice)
        sid = mine["id"]
        for who in (bob, admin):
            assert (await c.get(f"{API}/{sid}", headers=who)).status_code == 404
            assert (await c.put(f"{API}/{sid}", json={"name": "stolen"}, headers=who)).status_code == 404
            assert (await c.delete(f"{API}/{sid}", headers=who)).status_code == 404
            assert (await c.get(f"{API}?kind=preset", headers=who)).json()["total"] == 0
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "Fast SMA"}, headers=bob)
        assert r.status_code == 400 and _code(r) == "UNKNOWN_STRATEGY"
        # Names are per user: Bob may use the same one.
        theirs = await _create(c, FAST_SMA, bob)
        assert theirs["id"] != sid
        # A viewer reads but never writes.
        assert (await c.get(API, headers=viewer)).status_code == 200
        r = await c.post(API, json={**FAST_SMA, "name": "v"}, headers=viewer)
        assert r.status_code == 403 and _code(r) == "FORBIDDEN"
        assert (await c.get(f"{API}/{sid}", headers=alice)).json() == mine
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "strategy_name": "fast sma"}, headers=alice)
        assert r.status_code == 200, r.text
        await wait_done(c, alice)


# Store on both databases ------------------------------------------------------------------------------------
@pytest.fixture
async def store(target: DatabaseTarget) -> AsyncIterator[StrategyStore]:
    engine = target.engine()
    yield StrategyStore(engine)
    await engine.dispose()


async def test_store_scopes_by_owner_and_enforces_unique_names(store: StrategyStore) -> None:
    a = await store.create(
        owner_id=1, name=" Alpha ", description="", base_strategy="SmaCross", parameters={"fast": 3}, is_active=True
    )
    assert a.name == "Alpha" and a.parameters == {"fast": 3}
    with pytest.raises(DuplicateNameError):
        await store.create(owner_id=1, name="ALPHA", description="", base_strategy=None, parameters={}, is_active=True)
    b = await store.create(owner_id=2, name="alpha", description="", base_strategy=None, parameters={}, is_active=False)
    assert (await store.get(a.id, owner_id=2)) is None and (await store.get_by_name("alpha", owner_id=2)) == b
    assert [s.id for s in await store.list(owner_id=1)] == [a.id]
    assert await store.list(owner_id=2, active_only=True) == []
    assert await store.update(a.id, owner_id=2, changes={"name": "x"}) is None
    changed = await store.update(a.id, owner_id=1, changes={"name": "Beta", "parameters": {"fast": 4}})
    assert changed is not None and changed.name == "Beta" and changed.parameters == {"fast": 4}
    assert changed.updated_at >= a.updated_at and changed.created_at == a.created_at
    assert await store.delete(a.id, owner_id=2) is False and await store.delete(a.id, owner_id=1) is True
    assert await store.count(owner_id=1) == 0 and await store.count(owner_id=2) == 1
