"""Hostile input never gets a 500 (issue 8, class 4): every field of every write endpoint, paths and queries,
on SQLite and PostgreSQL.

Values no database or JSON encoder accepts (NaN, Infinity, `1e309`, lone surrogates, NUL characters, deep
nesting) are refused at the edge with a 422 naming the field; wrong types are refused by strict request models;
ids beyond PostgreSQL's `integer` are 404/422; dates outside 1970..2100 are refused naming the range. A matrix
sends each fixed hostile token to each field; a derandomized Hypothesis property adds random JSON values.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from auth_support import PASSWORD, SECRET
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.db.engine import make_engine
from cracktrader.runs.config import BacktestConfig
from cracktrader.settings import Settings, get_settings
from cracktrader.web.errors import _clean_validation_errors, json_safe
from cracktrader.web.input_guard import MAX_JSON_DEPTH, json_body_problem, query_problem
from db_support import BACKENDS, app_database
from web_support import YEAR_1H, LiveServer, app_client

API = "/api/v1"
PLACEHOLDER = "__HOSTILE__"
# A week of hourly synthetic bars: a backtest that hostile-but-valid values start finishes in well under a second.
WEEK_1H = {**YEAR_1H, "start_date": "2024-01-01T00:00:00Z", "end_date": "2024-01-08T00:00:00Z"}
EXAMPLES_PER_ENDPOINT = 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------------------------------ the values


@dataclass(frozen=True)
class Raw:
    """JSON text sent as is (json.dumps cannot produce most of these)."""

    text: str
    label: str


# Refused wherever they appear: no field of any endpoint may accept them.
ALWAYS_BAD = [
    Raw("NaN", "NaN"),
    Raw("Infinity", "Infinity"),
    Raw("-Infinity", "-Infinity"),
    Raw("1e309", "1e309"),
    Raw("-1e309", "-1e309"),
    Raw('"\\ud800"', "lone high surrogate"),
    Raw('"x\\udfff"', "lone low surrogate"),
    Raw('"a\\u0000b"', "NUL"),
    Raw("[" * 40 + "]" * 40, "40 nested arrays"),
    Raw('{"a":' * 40 + "1" + "}" * 40, "40 nested objects"),
    Raw("9" * 5000, "5000-digit integer"),
    Raw('{"\\ud800": 1}', "surrogate key"),
    Raw('{"a\\u0000": 1}', "NUL key"),
]
# Values JSON can carry that some fields accept and others must refuse; none may cause a 5xx.
TRICKY: list[Any] = [
    2**31,
    2**63,
    2**64,
    -(2**63) - 1,
    10**100,
    -1,
    0,
    1.5,
    1e308,
    -0.0,
    "",
    " ",
    "x" * 10_000,
    True,
    False,
    None,
    "yes",
    "true",
    "1",
    "-1",
    [],
    {},
    [None],
    {"": None},
    "2147483648",
    "0001-01-01",
    "9999-12-31T23:59:59+14:00",
    "1000000000000000000",
    "-62135596800000",
    "\u2028\u202e",
    "\U0001f600",
    "../../etc/passwd",
    "' OR 1=1 --",
]
LONG_TEXT = "x" * 10_000
# The matrix sends these to every field (a wrong type or bound for most); Hypothesis samples all of TRICKY.
MATRIX_TRICKY: list[Any] = [True, "yes", 1.5, -1, 2**64, None, [], {}, "", LONG_TEXT, "9999-12-31T23:59:59+14:00"]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# What a field of each kind must refuse, beyond ALWAYS_BAD (strict types; strings are all capped below 10k).
WRONG: dict[str, Any] = {
    "str": lambda v: not isinstance(v, str) or v == LONG_TEXT,
    "optstr": lambda v: v is not None and (not isinstance(v, str) or v == LONG_TEXT),
    "number": lambda v: not _is_number(v),
    "optnumber": lambda v: v is not None and not _is_number(v),
    "int": lambda v: not isinstance(v, int) or isinstance(v, bool),
    "bool": lambda v: not isinstance(v, bool),
    "optbool": lambda v: v is not None and not isinstance(v, bool),
    "date": lambda v: v is not None and (not isinstance(v, str) or v == LONG_TEXT),
    "datetime": lambda v: isinstance(v, bool | list | dict) or v == LONG_TEXT,
    "object": lambda v: not isinstance(v, dict),
    "optobject": lambda v: v is not None and not isinstance(v, dict),
    "list": lambda v: not isinstance(v, list),
}


def _contains_unencodable(value: Any) -> bool:
    """Whether a generated value holds something the edge must refuse wherever it is."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list):
        return any(_contains_unencodable(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_unencodable(k) or _contains_unencodable(v) for k, v in value.items())
    return False


def _encode(value: Any) -> str:
    # json.dumps writes NaN/Infinity and escapes lone surrogates as \udxxx: exactly the hostile texts wanted.
    return value.text if isinstance(value, Raw) else json.dumps(value)


# ------------------------------------------------------------------------------------------ the endpoints


@dataclass(frozen=True)
class Endpoint:
    """A write endpoint: its base body (valid), each field's kind, and where to nest a value in containers."""

    name: str
    method: str
    path: str
    base: dict[str, Any]
    fields: dict[str, str]
    nest: dict[str, str]  # container field -> key (objects) or "[]" (lists) where a nested value goes


BACKTEST_FIELDS = {
    "strategy_name": "str",
    "strategy_params": "object",
    "strategy_class": "optstr",
    "symbols": "list",
    "timeframe": "str",
    "start_date": "date",
    "end_date": "date",
    "initial_cash": "number",
    "exchange": "str",
    "commission": "optnumber",
    "slippage_bps": "number",
    "latency_bars": "int",
    "allow_short": "bool",
}
LIVE_FIELDS = {
    "strategy_name": "str",
    "strategy_params": "object",
    "strategy_class": "optstr",
    "symbols": "list",
    "timeframe": "str",
    "exchange": "str",
    "exchange_config": "object",
    "mode": "str",
}
PRESET = {
    "name": "Base preset",
    "description": "SmaCross with short windows",
    "base_strategy": "SmaCross",
    "parameters": {"fast": 5, "slow": 20},
    "is_active": True,
}
ENDPOINTS = [
    Endpoint(
        "backtest",
        "POST",
        f"{API}/run/backtest",
        {**WEEK_1H, "commission": 0.001, "slippage_bps": 1.0, "latency_bars": 1, "allow_short": False},
        BACKTEST_FIELDS,
        {"strategy_params": "period", "symbols": "[]"},
    ),
    Endpoint(
        "live",
        "POST",
        f"{API}/run/live",
        {
            "strategy_name": "TestStrategy",
            "symbols": ["BTC/USDT"],
            "timeframe": "1h",
            "exchange": "synthetic",
            "exchange_config": {"rateLimit": 100},
            "mode": "paper",
        },
        LIVE_FIELDS,
        {"strategy_params": "period", "symbols": "[]", "exchange_config": "rateLimit"},
    ),
    Endpoint(
        "create strategy",
        "POST",
        f"{API}/strategies",
        PRESET,
        {"name": "str", "description": "str", "base_strategy": "optstr", "parameters": "object", "is_active": "bool"},
        {"parameters": "fast"},
    ),
    Endpoint(
        "update strategy",
        "PUT",
        f"{API}/strategies/{{preset_id}}",
        PRESET,
        {
            "name": "optstr",
            "description": "optstr",
            "base_strategy": "optstr",
            "parameters": "optobject",
            "is_active": "optbool",
        },
        {"parameters": "fast"},
    ),
    Endpoint(
        "login",
        "POST",
        f"{API}/auth/login",
        {"username": "alice", "password": PASSWORD},
        {"username": "str", "password": "str"},
        {},
    ),
    Endpoint(
        "create api key",
        "POST",
        f"{API}/auth/apikeys",
        {"name": "key", "scopes": ["read"], "expires_at": "2030-01-01T00:00:00Z"},
        {"name": "str", "scopes": "list", "expires_at": "datetime"},
        {"scopes": "[]"},
    ),
]


# ------------------------------------------------------------------------------------------ the server


@dataclass
class Target:
    """A live server with auth on, a trader's token and one stored preset to update."""

    client: httpx.Client
    headers: dict[str, str]
    preset_id: int
    created: int = 0

    def send(self, ep: Endpoint, field: str, value: Any, nested: bool) -> tuple[httpx.Response, bool] | None:
        """Send the endpoint's base body with `field` replaced (or its nested slot); whether it must be refused.

        Well-formed credentials are not sent to login: they only cost an Argon2 check to answer 401.
        """
        if _well_formed_credential(ep, value):
            return None
        body = dict(ep.base)
        if ep.name == "create strategy":
            self.created += 1
            body["name"] = f"Hostile {self.created}"
        slot = ep.nest.get(field) if nested else None
        if slot == "[]":
            body[field] = [PLACEHOLDER]
        elif slot is not None:
            body[field] = {**(body.get(field) or {}), slot: PLACEHOLDER}
        else:
            body[field] = PLACEHOLDER
        text = json.dumps(body).replace(json.dumps(PLACEHOLDER), _encode(value), 1)
        path = ep.path.format(preset_id=self.preset_id)
        headers = {**self.headers, "content-type": "application/json"}
        r = self.client.request(ep.method, path, content=text.encode("utf-8", "surrogatepass"), headers=headers)
        must_refuse = (
            isinstance(value, Raw) or _contains_unencodable(value) or (slot is None and _wrong(ep, field, value))
        )
        return r, must_refuse

    def clean_up(self, ep: Endpoint, r: httpx.Response) -> None:
        """Undo what an accepted request started, so the next example meets an idle runner."""
        if ep.name == "backtest" and r.status_code == 200:
            deadline = time.monotonic() + 60
            while (status := self.client.get(f"{API}/status", headers=self.headers).json())["status"] in (
                "starting",
                "running",
            ):
                assert time.monotonic() < deadline, status
                time.sleep(0.02)
            # An accepted value must not make the run itself crash (dates in year 9999 used to).
            assert status["error_code"] != "INTERNAL_ERROR", (r.request.content[:300], status)
            assert self.client.delete(f"{API}/run/reset", headers=self.headers).status_code == 200
        if ep.name == "create strategy" and r.status_code == 201:
            assert self.client.delete(f"{API}/strategies/{r.json()['id']}", headers=self.headers).status_code == 204


def _well_formed_credential(ep: Endpoint, value: Any) -> bool:
    return ep.name == "login" and isinstance(value, str) and 1 <= len(value) <= 150 and not _contains_unencodable(value)


def _wrong(ep: Endpoint, field: str, value: Any) -> bool:
    return bool(WRONG[ep.fields[field]](value))


def assert_refused_or_handled(r: httpx.Response, must_refuse: bool, label: str) -> None:
    """Never a 5xx (but live trading's documented 501); every error in the envelope; refused values get a 4xx."""
    what = f"{label} -> {r.status_code} {r.text[:300]}"
    body = r.json()
    if r.status_code == 501:
        assert body["error"]["code"] == "NOT_IMPLEMENTED", what
    else:
        assert r.status_code < 500, what
    if must_refuse:
        assert 400 <= r.status_code < 500, what
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/json"), what
        assert set(body) == {"error", "status_code", "path", "detail"}, what
        assert body["status_code"] == r.status_code and body["error"]["code"] and body["error"]["message"], what


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One live uvicorn (real HTTP parsing) per backend with auth on, shared by the property tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        # Module scope runs before the per-test isolated_env: point the data folder somewhere private here.
        mp.setenv("CRACKTRADER_DATA_DIR", str(tmp_path_factory.mktemp(f"hostile-{request.param}")))
        for name in ("DATABASE_URL", "CRACKTRADER_DATABASE_URL", "CRACKTRADER_STRATEGY_DIR"):
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        with app_database(request.param, mp) as db_settings:
            web = {"auth_mode": "on", "jwt_secret_key": SECRET, "rate_limit_per_minute": 1_000_000}
            with LiveServer(db_settings, **web) as srv:
                engine = make_engine(db_settings.database_url)
                try:
                    asyncio.run(service.create_user(store=AuthStore(engine), username="alice", password=PASSWORD))
                finally:
                    asyncio.run(engine.dispose())
                with httpx.Client(base_url=srv.base_url, timeout=60) as client:
                    login = client.post(f"{API}/auth/login", data={"username": "alice", "password": PASSWORD})
                    assert login.status_code == 200, login.text
                    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                    preset = client.post(f"{API}/strategies", json=PRESET, headers=headers)
                    assert preset.status_code == 201, preset.text
                    yield Target(client, headers, preset.json()["id"])
                    # Whatever was sent, the server still serves.
                    assert client.get(f"{API}/status", headers=headers).status_code == 200
        get_settings.cache_clear()


# ------------------------------------------------------------------------------------------ matrix and property


def test_every_field_of_every_write_endpoint_refuses_each_hostile_token_with_a_4xx_envelope(server: Target) -> None:
    sent = 0
    for ep in ENDPOINTS:
        for field in ep.fields:
            for nested in (False, True) if field in ep.nest else (False,):
                for value in [*ALWAYS_BAD, *MATRIX_TRICKY]:
                    sent_ = server.send(ep, field, value, nested)
                    if sent_ is None:
                        continue
                    r, must_refuse = sent_
                    label = f"{ep.name} {field}{'[nested]' if nested else ''}={_encode(value)[:60]}"
                    assert_refused_or_handled(r, must_refuse, label)
                    if isinstance(value, Raw):
                        # Refused at the edge, before any route: 422 naming the field.
                        assert r.status_code == 422 and field in r.json()["error"]["message"], label
                    server.clean_up(ep, r)
                    sent += 1
    assert sent > 1000


JSON_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | JSON_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(JSON_TEXT, children, max_size=3),
    max_leaves=6,
)
HOSTILE = st.sampled_from(ALWAYS_BAD) | st.sampled_from(TRICKY) | JSON_VALUES


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda ep: ep.name.replace(" ", "-"))
def test_random_hostile_values_in_any_field_get_a_4xx_envelope_never_a_5xx(server: Target, ep: Endpoint) -> None:
    fields = st.sampled_from([(f, False) for f in ep.fields] + [(f, True) for f in ep.nest])

    @given(slot=fields, value=HOSTILE)
    @settings(
        max_examples=EXAMPLES_PER_ENDPOINT,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(slot: tuple[str, bool], value: Any) -> None:
        field, nested = slot
        sent = server.send(ep, field, value, nested)
        if sent is None:
            return
        r, must_refuse = sent
        assert_refused_or_handled(r, must_refuse, f"{ep.name} {field} nested={nested} {_encode(value)[:80]}")
        server.clean_up(ep, r)

    check()


ODD_IDS = ["2147483648", "0", "-1", "1e309", "NaN", "9" * 300, "%00", "a%00b", "%ED%A0%80", "%C2%B2", "x" * 300]


def test_hostile_path_ids_and_query_values_get_a_4xx_envelope(server: Target) -> None:
    c, h = server.client, server.headers
    for odd in ODD_IDS:
        for method, path in [
            ("GET", f"{API}/strategies/{odd}"),
            ("DELETE", f"{API}/strategies/{odd}"),
            ("DELETE", f"{API}/auth/apikeys/{odd}"),
            ("GET", f"{API}/runs/{odd}"),
            ("GET", f"{API}/runs/{odd}/results"),
            ("DELETE", f"{API}/runs/{odd}"),
        ]:
            assert_refused_or_handled(c.request(method, path, headers=h), True, f"{method} {path[:80]}")
        r = c.put(f"{API}/strategies/{odd}", json={"description": "x"}, headers=h)
        assert_refused_or_handled(r, True, f"PUT strategies/{odd[:40]}")
        for query in ("strategy", "symbol", "limit", "offset", "status", "mode"):
            r = c.get(f"{API}/runs?{query}={odd}", headers=h)
            assert_refused_or_handled(r, "%00" in odd, f"GET runs?{query}={odd[:40]}")
        for query in ("skip", "limit", "active_only", "kind"):
            r = c.get(f"{API}/strategies?{query}={odd}", headers=h)
            assert_refused_or_handled(r, "%00" in odd, f"GET strategies?{query}={odd[:40]}")
        for query in ("max_points", "limit", "offset"):
            r = c.get(f"{API}/results?{query}={odd}", headers=h)
            assert_refused_or_handled(r, "%00" in odd, f"GET results?{query}={odd[:40]}")
        for path in (f"/ui/{odd}", f"/ui/{odd}.js", f"/ui/a/{odd}"):
            r = c.get(path)
            assert r.status_code in (200, 404, 422), (path, r.status_code)
            if r.status_code != 200:
                assert_refused_or_handled(r, True, path[:80])


# ------------------------------------------------------------------------------------------ the examples


@pytest.mark.anyio
async def test_nan_infinity_and_1e309_are_refused_naming_the_field_and_what_is_accepted() -> None:
    async with app_client() as c:
        for token in ("NaN", "Infinity", "-Infinity", "1e309"):
            text = json.dumps({**WEEK_1H, "initial_cash": PLACEHOLDER}).replace(f'"{PLACEHOLDER}"', token)
            r = await c.post(f"{API}/run/backtest", content=text, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "VALIDATION_ERROR"
            assert error["message"].startswith(f"Invalid request: body.initial_cash: {token} is not a finite number")
            assert "must be finite" in error["message"]
            assert error["details"]["errors"] == [
                {
                    "type": "finite_number",
                    "loc": ["body", "initial_cash"],
                    "msg": error["details"]["errors"][0]["msg"],
                    "input": token,
                }
            ]
        assert (await c.get(f"{API}/status")).json()["status"] == "idle"


@pytest.mark.anyio
async def test_lone_surrogates_and_nul_are_refused_in_bodies_queries_and_paths(db_settings: Settings) -> None:
    json_headers = {"content-type": "application/json"}
    async with app_client(db_settings) as c:
        cases = [
            ("POST", f"{API}/strategies", '{"name": "\\ud800"}', "body.name", "lone surrogate"),
            ("POST", f"{API}/strategies", '{"name": "a\\u0000"}', "body.name", "NUL"),
            ("POST", f"{API}/strategies", '{"name": "n", "description": "d\\u0000"}', "body.description", "NUL"),
            ("POST", f"{API}/strategies", '{"name": "n", "parameters": {"k\\u0000": 1}}', "body.parameters", "NUL"),
            (
                "POST",
                f"{API}/run/live",
                json.dumps({**ENDPOINTS[1].base, "exchange_config": {"rateLimit": "\x00"}}),
                "body.exchange_config.rateLimit",
                "NUL",
            ),
            ("GET", f"{API}/runs?strategy=a%00", None, "query.strategy", "NUL"),
            ("GET", f"{API}/runs/a%00b", None, "path", "NUL"),
            ("GET", f"{API}/strategies/%00", None, "path", "NUL"),
        ]
        for method, path, body, loc, what in cases:
            r = await c.request(method, path, content=body, headers=json_headers if body else {})
            assert r.status_code == 422, (path, body, r.text)
            message = r.json()["error"]["message"]
            assert message.startswith(f"Invalid request: {loc}") and what in message, message
            assert "valid Unicode without NUL" in message
        # Nothing was stored.
        presets = (await c.get(f"{API}/strategies", params={"kind": "preset"})).json()
        assert presets["total"] == 0


@pytest.mark.anyio
async def test_strategy_ids_beyond_the_integer_column_are_404_or_422_on_both_databases(db_settings: Settings) -> None:
    async with app_client(db_settings) as c:
        assert (await c.get(f"{API}/strategies/2147483648")).status_code == 404
        assert (await c.get(f"{API}/strategies/%C2%B2")).status_code == 404  # "²".isdigit() is true
        r = await c.put(f"{API}/strategies/2147483648", json={"description": "x"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "strategy_id"]
        assert (await c.delete(f"{API}/strategies/2147483648")).status_code == 422
        assert (await c.get(f"{API}/strategies/2147483647")).status_code == 404


@pytest.mark.anyio
async def test_deep_nesting_is_refused_on_every_json_endpoint_including_login() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    async with app_client(auth_mode="on", jwt_secret_key=SECRET) as c:
        for path in ("/auth/login", "/auth/refresh", "/run/backtest", "/strategies"):
            r = await c.post(f"{API}{path}", content=deep, headers={"content-type": "application/json"})
            if path == "/run/backtest":
                assert r.status_code == 413, r.text  # 200 KB is over the run body cap before it is parsed
                continue
            assert r.status_code == 422, (path, r.text)
            assert f"nested deeper than {MAX_JSON_DEPTH} levels" in r.json()["error"]["message"]
        ok = {"username": "nobody", "password": "x", "extra": [[[[[[[[1]]]]]]]]}
        assert (await c.post(f"{API}/auth/login", json=ok)).status_code == 401  # reasonable nesting passes


@pytest.mark.anyio
async def test_booleans_numbers_and_strings_are_not_coerced() -> None:
    async with app_client() as c:
        for field, value, message in [
            ("initial_cash", True, "Input should be a valid number"),
            ("initial_cash", "10000", "Input should be a valid number"),
            ("allow_short", "yes", "Input should be a valid boolean"),
            ("allow_short", 1, "Input should be a valid boolean"),
            ("latency_bars", 1.0, "Input should be a valid integer"),
            ("latency_bars", True, "Input should be a valid integer"),
            ("slippage_bps", False, "Input should be a valid number"),
        ]:
            r = await c.post(f"{API}/run/backtest", json={**WEEK_1H, field: value})
            assert r.status_code == 422, (field, value, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", field] and r.json()["detail"][0]["msg"] == message
        r = await c.post(f"{API}/strategies", json={**PRESET, "is_active": "yes"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "is_active"]
        # Integers are numbers.
        assert (await c.post(f"{API}/run/backtest", json={**WEEK_1H, "initial_cash": 5000})).status_code == 200


@pytest.mark.anyio
async def test_run_dates_outside_1970_to_2100_are_refused_naming_the_range() -> None:
    async with app_client() as c:
        for start, end in [
            ("0001-01-01", "2024-01-01"),
            ("2024-01-01", "9999-12-31"),
            ("2024-01-01", "1000000000000000000"),
            ("1969-12-31T23:59:59Z", "2024-01-01"),
            ("2024-01-01", "2100-01-01T00:00:01Z"),
            ("-1", "2024-01-01"),
            ("2024-01-01", "9999-12-31T23:59:59-05:00"),
            ("yesterday", "2024-01-01"),
            ("\u0662\u0660\u0662\u0664", "2024-01-01"),  # Arabic-Indic digits: isdigit(), yet no date
        ]:
            r = await c.post(f"{API}/run/backtest", json={**WEEK_1H, "start_date": start, "end_date": end})
            assert r.status_code == 422, (start, end, r.text)
            assert "between 1970-01-01 and 2100-01-01" in r.json()["error"]["message"], r.text
        # Validated before the route finds there is no user to own a key (auth is off here).
        r = await c.post(f"{API}/auth/apikeys", json={"name": "k", "expires_at": "9999-12-31T23:59:59Z"})
        assert r.status_code == 422 and "between 1970-01-01 and 2100-01-01" in r.text
        assert (await c.get(f"{API}/status")).json()["status"] == "idle"


def test_run_dates_at_the_ends_of_the_range_are_accepted() -> None:
    for start, end in [("1970-01-01", "2100-01-01"), ("0", "4102444800000"), ("1970-01-01T00:00:00Z", None)]:
        config = BacktestConfig(strategy_name="TestStrategy", symbols=["BTC/USDT"], start_date=start, end_date=end)
        assert (config.start_date, config.end_date) == (start, end)
    with pytest.raises(ValidationError, match="between 1970-01-01 and 2100-01-01"):
        BacktestConfig(strategy_name="TestStrategy", symbols=["BTC/USDT"], end_date="4102444800001")


@pytest.mark.anyio
async def test_run_bodies_over_64_kib_get_413_naming_the_limit_and_other_routes_keep_the_global_cap() -> None:
    pad = {"pad": "x" * 70_000}
    async with app_client() as c:
        r = await c.post(f"{API}/run/backtest", json={**WEEK_1H, "strategy_params": pad})
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "PAYLOAD_TOO_LARGE" and error["details"] == {"limit": 65536}
        assert "65536 bytes" in error["message"] and "/api/v1/run/*" in error["message"]

        async def chunks() -> Any:  # streamed, no content-length: the run cap applies while reading
            for _ in range(70):
                yield b" " * 1000

        streamed = await c.post(f"{API}/run/live", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["details"] == {"limit": 65536}
        # /strategies keeps the global 1 MB cap: 70 KB reaches validation.
        r = await c.post(f"{API}/strategies", json={**PRESET, "description": "x" * 70_000})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "description"]


@pytest.mark.anyio
async def test_ui_paths_with_nul_or_overlong_names_are_refused_not_crashed() -> None:
    async with app_client() as c:
        assert (await c.get("/ui/%00")).status_code == 422
        for path in ("/ui/" + "a" * 300, "/ui/" + "a" * 300 + ".js", "/ui/" + "a/" * 200 + "x.js"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND", path
        assert (await c.get("/ui/runs/42")).status_code == 200  # client-side routes still get the page


# ------------------------------------------------------------------------------------------ the echo and the guard


def test_the_validation_echo_always_encodes_and_still_redacts_secrets() -> None:
    errors = _clean_validation_errors(
        [
            {
                "type": "missing",
                "loc": ("body", "symbols"),
                "msg": "Field required",
                "input": {
                    "initial_cash": float("nan"),
                    "commission": float("inf"),
                    "strategy_name": "a\ud800b\x00",
                    "exchange_config": {"apiKey": "AKIA-leaked", "secret": "s3cr3t"},
                    "strategy_params": {"deep": [[[[[[1]]]]]], "huge": 10**400, "long": "y" * 5000},
                },
            },
            {
                "type": "x",
                "loc": ("body", "\ud800"),
                "msg": "bad \ud800",
                "input": float("-inf"),
                "ctx": {"e": "\udc00"},
            },
        ]
    )
    text = json.dumps(errors, allow_nan=False, ensure_ascii=False).encode("utf-8")  # must not raise
    assert b"AKIA-leaked" not in text and b"s3cr3t" not in text
    echoed = errors[0]["input"]
    assert echoed["initial_cash"] == "nan" and echoed["commission"] == "inf"
    assert echoed["strategy_name"] == "a\\ud800b\\x00"
    assert echoed["strategy_params"]["huge"] == "<integer of 1329 bits>"
    assert len(echoed["strategy_params"]["long"]) < 300  # cut by redact or by the echo itself
    assert errors[1]["input"] == "-inf" and errors[1]["loc"] == ["body", "\\ud800"]


def test_json_safe_bounds_the_size_of_what_it_echoes() -> None:
    value = {"items": list(range(1000)), "nested": {"a": {"b": {"c": {"d": {"e": 1}}}}}}
    safe = json_safe(value)
    assert safe["items"][-1] == "... (980 more)" and len(safe["items"]) == 21
    assert safe["nested"]["a"]["b"]["c"] == "<dict of 1 items>"


def test_the_guard_allows_32_levels_of_nesting_and_refuses_33() -> None:
    assert json_body_problem(("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode()) is None
    problem = json_body_problem(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode())
    assert problem is not None and problem.type == "json_too_deep"
    assert json_body_problem(b'{"a": 1e308, "b": -1.5e-400, "c": "\\ud83d\\ude00"}') is None  # a pair is fine
    assert json_body_problem(b"not json") is None  # syntax errors are FastAPI's 422 json_invalid
    assert json_body_problem(b'"\xff"').type == "json_invalid"  # type: ignore[union-attr]
    problem = query_problem(b"a=1&b=%00")
    assert problem is not None and problem.loc == ("query", "b") and problem.type == "string_nul"
    huge = json_body_problem(b'{"a": [' + b"9" * 5000 + b"]}")
    assert huge is not None and huge.loc == ("body", "a", 0) and huge.type == "int_too_large"
    assert query_problem(b"a=1&b=%2500") is None  # an escaped percent sign is not a NUL
