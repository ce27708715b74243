"""What the sync and async clients share: endpoint descriptions, headers, URLs and response decoding.

Each endpoint is described once as a `Call` (method, path, query, body, parser); the two clients only differ in
how they send it, so the behaviour cannot drift between them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pydantic
from pydantic_core import to_jsonable_python

from cracktrader import __version__
from cracktrader.client.errors import (
    ConflictError,
    ConnectionError,
    CrackTraderError,
    InvalidResponseError,
    NoActiveRunError,
    RunAlreadyActiveError,
    RunFailedError,
    TimeoutError,
    error_from_response,
)
from cracktrader.client.models import (
    FINISHED_STATUSES,
    AlertList,
    ApiKeyCreated,
    ApiKeyList,
    BacktestRequest,
    CheckResult,
    CredentialCheck,
    CredentialInfo,
    CredentialList,
    DetailedStatus,
    ExchangeList,
    Health,
    LiveRequest,
    LogoutResult,
    Me,
    Meta,
    Results,
    RunList,
    RunResponse,
    RunSummary,
    SessionStatus,
    Status,
    StrategyInfo,
    StrategyList,
    Sweep,
    SweepList,
    SweepRequest,
    SweepResults,
    Tokens,
    WalkForward,
    WalkForwardList,
    WalkForwardRequest,
)

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "CRACKTRADER_BASE_URL"
API_PREFIX = "/api/v1"
USER_AGENT = f"cracktrader-python/{__version__}"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    # Statuses beyond 2xx whose body is the answer rather than an error (an unhealthy /health is a 503).
    accept: frozenset[int] = field(default_factory=frozenset)
    headers: dict[str, str] | None = None


def resolve_base_url(base_url: str | None) -> str:
    """The given URL, else `$CRACKTRADER_BASE_URL`, else the local default server."""
    return base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Connection settings of a client."""

    base_url: str
    api_key: str | None
    token: str | None
    timeout: float | None

    @classmethod
    def make(cls, base_url: str, api_key: str | None, token: str | None, timeout: float | None) -> ClientConfig:
        """Validated settings: an http(s) base URL without a trailing slash."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        return cls(base_url.rstrip("/"), api_key, token, timeout)

    def with_token(self, token: str | None) -> ClientConfig:
        """The same settings with another bearer token (after a login, a refresh or a logout)."""
        return dataclasses.replace(self, token=token)

    def headers(self) -> dict[str, str]:
        """Default headers: JSON, the SDK's user agent and the credentials that were given."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def ws_url(self, path: str, query: str = "") -> str:
        """The WebSocket URL of an API path (credentials go in headers, never in the URL, which servers log)."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + API_PREFIX + path, query, ""))

    def ws_headers(self) -> dict[str, str]:
        """Headers of a WebSocket handshake: the credentials that were given."""
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


# Responses -----------------------------------------------------------------------------------------------


def handle(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer of a response, or its typed error."""
    if response.is_success:
        return call.parse(response)
    if response.status_code in call.accept:
        try:
            return call.parse(response)
        except InvalidResponseError:
            pass  # not the endpoint's body (say, a proxy's 503 page): an ordinary error
    request = response.request
    raise error_from_response(
        response.status_code, response.headers, response.content, method=request.method, url=str(request.url)
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as exc:
        ctype = response.headers.get("content-type", "no content type")
        raise InvalidResponseError(
            f"Expected JSON from {response.request.method} {response.request.url}, got {ctype}",
            status_code=response.status_code,
            body=response.text[:500],
        ) from exc


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """A parser validating the JSON body as `cls`."""

    def parse(response: httpx.Response) -> M:
        data = _json(response)
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InvalidResponseError(
                f"{response.request.method} {response.request.url} answered a body that is not a {cls.__name__}: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
                status_code=response.status_code,
                body=data,
            ) from exc

    return parse


def _nothing(response: httpx.Response) -> None:
    return None


def _content(response: httpx.Response) -> bytes:
    return response.content


def _text(response: httpx.Response) -> str:
    return response.text


def transport_error(exc: httpx.TransportError, method: str, url: str) -> CrackTraderError:
    """The SDK error of a request that got no response."""
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"{method} {url} timed out ({type(exc).__name__})", details={"url": url})
    return ConnectionError(
        f"Cannot reach the Cracktrader server at {url}: {exc or type(exc).__name__}", details={"url": url}
    )


# Endpoints -----------------------------------------------------------------------------------------------


def _path(template: str, *ids: str) -> str:
    return API_PREFIX + template.format(*(quote(str(i), safe="") for i in ids))


def _paging(max_points: int | None, limit: int | None, offset: int) -> dict[str, Any]:
    params: dict[str, Any] = {"max_points": max_points, "limit": limit}
    if offset:
        params["offset"] = offset
    return {k: v for k, v in params.items() if v is not None}


def request_body(
    config: BacktestRequest | LiveRequest | SweepRequest | WalkForwardRequest | Mapping[str, Any] | None,
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """A start request's JSON: a model, a mapping or keyword fields (merged, keywords win); None drops out.

    Mappings and keywords are not validated here so that the server, which knows its strategies and exchanges,
    answers with its own typed errors; a model was validated when it was built.
    """
    if isinstance(config, pydantic.BaseModel):
        base: dict[str, Any] = config.model_dump(mode="json", exclude_none=True)
    else:
        base = dict(config or {})
    body = {k: v for k, v in {**base, **fields}.items() if v is not None}
    if isinstance(body.get("symbols"), str):
        body["symbols"] = [body["symbols"]]
    # Datetimes and other rich values given as keywords become their JSON form (ISO 8601 for datetimes).
    result: dict[str, Any] = to_jsonable_python(body)
    return result


def health() -> Call[Health]:
    """`GET /health` (an unhealthy server answers 503 with the same report)."""
    return Call("GET", _path("/health"), model(Health), accept=frozenset({503}))


def status() -> Call[Status]:
    """`GET /status`."""
    return Call("GET", _path("/status"), model(Status))


def detailed_status() -> Call[DetailedStatus]:
    """`GET /status/detailed`."""
    return Call("GET", _path("/status/detailed"), model(DetailedStatus))


def results(max_points: int | None, limit: int | None, offset: int) -> Call[Results]:
    """`GET /results`."""
    return Call("GET", _path("/results"), model(Results), params=_paging(max_points, limit, offset))


def start_backtest(body: dict[str, Any]) -> Call[RunResponse]:
    """`POST /run/backtest`."""
    return Call("POST", _path("/run/backtest"), model(RunResponse), json=body)


def start_live(body: dict[str, Any]) -> Call[RunResponse]:
    """`POST /run/live`."""
    return Call("POST", _path("/run/live"), model(RunResponse), json=body)


def stop(flatten: bool = False) -> Call[RunResponse]:
    """`POST /run/stop` (with `{"flatten": true}`: a session in the slot also closes its positions)."""
    if flatten:
        return Call("POST", _path("/run/stop"), model(RunResponse), json={"flatten": True})
    return Call("POST", _path("/run/stop"), model(RunResponse))


def reset() -> Call[RunResponse]:
    """`DELETE /run/reset`."""
    return Call("DELETE", _path("/run/reset"), model(RunResponse))


def strategies(skip: int, limit: int, active_only: bool, kind: str | None) -> Call[StrategyList]:
    """`GET /strategies` (one page)."""
    params: dict[str, Any] = {"skip": skip, "limit": limit, "active_only": str(active_only).lower()}
    if kind is not None:
        params["kind"] = kind
    return Call("GET", _path("/strategies"), model(StrategyList), params=params)


def get_strategy(ref: int | str) -> Call[StrategyInfo]:
    """`GET /strategies/{id or class name}`."""
    return Call("GET", _path("/strategies/{}", str(ref)), model(StrategyInfo))


def create_strategy(
    name: str, description: str, base_strategy: str | None, parameters: Mapping[str, Any] | None, is_active: bool
) -> Call[StrategyInfo]:
    """`POST /strategies` (201)."""
    body = {
        "name": name,
        "description": description,
        "base_strategy": base_strategy,
        "parameters": dict(parameters or {}),
        "is_active": is_active,
    }
    return Call("POST", _path("/strategies"), model(StrategyInfo), json=body)


def update_strategy(strategy_id: int, changes: Mapping[str, Any]) -> Call[StrategyInfo]:
    """`PUT /strategies/{id}` with only the fields given (None means "keep")."""
    body = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in changes.items() if v is not None}
    return Call("PUT", _path("/strategies/{}", str(strategy_id)), model(StrategyInfo), json=body)


def delete_strategy(strategy_id: int) -> Call[None]:
    """`DELETE /strategies/{id}` (204)."""
    return Call("DELETE", _path("/strategies/{}", str(strategy_id)), _nothing)


def credentials() -> Call[CredentialList]:
    """`GET /credentials`."""
    return Call("GET", _path("/credentials"), model(CredentialList))


def create_credentials(name: str, exchange: str, secrets: Mapping[str, str]) -> Call[CredentialInfo]:
    """`POST /credentials` (201): the secrets travel in the body only."""
    body = {**secrets, "name": name, "exchange": exchange}
    return Call("POST", _path("/credentials"), model(CredentialInfo), json=body)


def rotate_credentials(name: str, secrets: Mapping[str, str]) -> Call[CredentialInfo]:
    """`POST /credentials/{name}/rotate`."""
    return Call("POST", _path("/credentials/{}/rotate", name), model(CredentialInfo), json=dict(secrets))


def test_credentials(name: str, sandbox: bool) -> Call[CredentialCheck]:
    """`POST /credentials/{name}/test`."""
    return Call("POST", _path("/credentials/{}/test", name), model(CredentialCheck), json={"sandbox": sandbox})


def delete_credentials(name: str) -> Call[None]:
    """`DELETE /credentials/{name}` (204)."""
    return Call("DELETE", _path("/credentials/{}", name), _nothing)


def check_strategy(ref: int | str, body: dict[str, Any]) -> Call[CheckResult]:
    """`POST /strategies/{class name, stored name or id}/check`: answered when the check is done."""
    return Call("POST", _path("/strategies/{}/check", str(ref)), model(CheckResult), json=body)


def check_body(
    strategy_params: Mapping[str, Any] | None,
    symbols: str | Sequence[str] | None,
    timeframe: str | None,
    start_date: str | datetime | None,
    end_date: str | datetime | None,
    exchange: str | None,
) -> dict[str, Any]:
    """The check request's JSON; None drops out so the server's defaults apply (BTC/USDT, 1h, last 1000 bars)."""
    fields = {
        "strategy_params": None if strategy_params is None else dict(strategy_params),
        "symbols": symbols if symbols is None or isinstance(symbols, str) else list(symbols),
        "timeframe": timeframe,
        "start_date": start_date,
        "end_date": end_date,
        "exchange": exchange,
    }
    return request_body(None, fields)


def exchanges() -> Call[ExchangeList]:
    """`GET /exchanges`."""
    return Call("GET", _path("/exchanges"), model(ExchangeList))


def metrics() -> Call[str]:
    """`GET /metrics`: Prometheus exposition text."""
    return Call("GET", _path("/metrics"), _text, headers={"Accept": "text/plain"})


def login(username: str, password: str) -> Call[Tokens]:
    """`POST /auth/login` (the JSON form of the OAuth2 password form)."""
    return Call("POST", _path("/auth/login"), model(Tokens), json={"username": username, "password": password})


def refresh(refresh_token: str) -> Call[Tokens]:
    """`POST /auth/refresh`: the old refresh token stops working."""
    return Call("POST", _path("/auth/refresh"), model(Tokens), json={"refresh_token": refresh_token})


def logout(refresh_token: str | None) -> Call[LogoutResult]:
    """`POST /auth/logout`: one login (with its refresh token) or all of the user's (without)."""
    body = {"refresh_token": refresh_token} if refresh_token else {}
    return Call("POST", _path("/auth/logout"), model(LogoutResult), json=body)


def me() -> Call[Me]:
    """`GET /auth/me`."""
    return Call("GET", _path("/auth/me"), model(Me))


def api_keys() -> Call[ApiKeyList]:
    """`GET /auth/apikeys`."""
    return Call("GET", _path("/auth/apikeys"), model(ApiKeyList))


def create_api_key(name: str, scopes: Sequence[str] | None, expires_at: str | datetime | None) -> Call[ApiKeyCreated]:
    """`POST /auth/apikeys` (201); None drops out so the server's defaults apply (read only, no expiry)."""
    body = request_body(
        None, {"name": name, "scopes": None if scopes is None else list(scopes), "expires_at": expires_at}
    )
    return Call("POST", _path("/auth/apikeys"), model(ApiKeyCreated), json=body)


def revoke_api_key(key_id: int) -> Call[None]:
    """`DELETE /auth/apikeys/{id}` (204)."""
    return Call("DELETE", _path("/auth/apikeys/{}", str(key_id)), _nothing)


def meta() -> Call[Meta]:
    """`GET /meta`."""
    return Call("GET", _path("/meta"), model(Meta))


def list_runs(
    status: str | None, mode: str | None, strategy: str | None, symbol: str | None, limit: int, offset: int
) -> Call[RunList]:
    """`GET /runs` with filters."""
    params = {"status": status, "mode": mode, "strategy": strategy, "symbol": symbol, "limit": limit, "offset": offset}
    return Call("GET", _path("/runs"), model(RunList), params={k: v for k, v in params.items() if v is not None})


def alerts(run_id: str | None, kind: str | None, limit: int, offset: int) -> Call[AlertList]:
    """`GET /alerts` with filters."""
    params = {"run_id": run_id, "kind": kind, "limit": limit, "offset": offset}
    return Call("GET", _path("/alerts"), model(AlertList), params={k: v for k, v in params.items() if v is not None})


def start_sweep(body: dict[str, Any]) -> Call[Sweep]:
    """`POST /sweeps` (202)."""
    return Call("POST", _path("/sweeps"), model(Sweep), json=body)


def list_sweeps(limit: int, offset: int) -> Call[SweepList]:
    """`GET /sweeps`."""
    return Call("GET", _path("/sweeps"), model(SweepList), params={"limit": limit, "offset": offset})


def get_sweep(sweep_id: str) -> Call[Sweep]:
    """`GET /sweeps/{id}`."""
    return Call("GET", _path("/sweeps/{}", sweep_id), model(Sweep))


def sweep_results(sweep_id: str, sort: str | None, limit: int, offset: int) -> Call[SweepResults]:
    """`GET /sweeps/{id}/results`."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if sort is not None:
        params["sort"] = sort
    return Call("GET", _path("/sweeps/{}/results", sweep_id), model(SweepResults), params=params)


def cancel_sweep(sweep_id: str) -> Call[Sweep]:
    """`DELETE /sweeps/{id}`."""
    return Call("DELETE", _path("/sweeps/{}", sweep_id), model(Sweep))


def backtest_sweep_row(sweep_id: str, rank: int) -> Call[RunResponse]:
    """`POST /sweeps/{id}/rows/{rank}/backtest`."""
    return Call("POST", _path("/sweeps/{}/rows/{}/backtest", sweep_id, str(rank)), model(RunResponse))


def sweep_wait_timeout(sweep: Sweep, timeout: float) -> TimeoutError:
    """The error of a sweep that did not end in time."""
    done, total = sweep.progress.done, sweep.progress.total
    return TimeoutError(
        f"Sweep {sweep.sweep_id} still {sweep.status} after {timeout}s ({done} of {total} combinations)",
        details={"sweep_id": sweep.sweep_id, "status": sweep.status, "done": done, "total": total},
    )


def start_walkforward(body: dict[str, Any]) -> Call[WalkForward]:
    """`POST /walkforwards` (202)."""
    return Call("POST", _path("/walkforwards"), model(WalkForward), json=body)


def list_walkforwards(limit: int, offset: int) -> Call[WalkForwardList]:
    """`GET /walkforwards`."""
    return Call("GET", _path("/walkforwards"), model(WalkForwardList), params={"limit": limit, "offset": offset})


def get_walkforward(walkforward_id: str) -> Call[WalkForward]:
    """`GET /walkforwards/{id}`."""
    return Call("GET", _path("/walkforwards/{}", walkforward_id), model(WalkForward))


def cancel_walkforward(walkforward_id: str) -> Call[WalkForward]:
    """`DELETE /walkforwards/{id}`."""
    return Call("DELETE", _path("/walkforwards/{}", walkforward_id), model(WalkForward))


def walkforward_wait_timeout(wf: WalkForward, timeout: float) -> TimeoutError:
    """The error of a walk-forward that did not end in time."""
    done, total = wf.progress.done, wf.progress.total
    return TimeoutError(
        f"Walk-forward {wf.walkforward_id} still {wf.status} after {timeout}s ({done} of {total} windows)",
        details={"walkforward_id": wf.walkforward_id, "status": wf.status, "done": done, "total": total},
    )


def get_run(run_id: str) -> Call[RunSummary]:
    """`GET /runs/{id}`."""
    return Call("GET", _path("/runs/{}", run_id), model(RunSummary))


def run_results(run_id: str, max_points: int | None, limit: int | None, offset: int) -> Call[Results]:
    """`GET /runs/{id}/results`."""
    return Call("GET", _path("/runs/{}/results", run_id), model(Results), params=_paging(max_points, limit, offset))


def rerun(run_id: str) -> Call[RunResponse]:
    """`POST /runs/{id}/rerun` (202): the new run's id; its results' `rerun` says what changed."""
    return Call("POST", _path("/runs/{}/rerun", run_id), model(RunResponse))


def delete_run(run_id: str) -> Call[None]:
    """`DELETE /runs/{id}` (204)."""
    return Call("DELETE", _path("/runs/{}", run_id), _nothing)


def csv_file(run_id: str, name: str) -> Call[bytes]:
    """`GET /runs/{id}/trades.csv` or `/equity.csv`."""
    return Call("GET", _path("/runs/{}/" + name, run_id), _content, headers={"Accept": "text/csv"})


def start_session(body: dict[str, Any]) -> Call[RunResponse]:
    """`POST /runs` (201): a paper session, which never occupies the runner of `/run/backtest`."""
    return Call("POST", _path("/runs"), model(RunResponse), json=body)


def start_run(body: dict[str, Any], idempotency_key: str | None = None) -> Call[RunResponse]:
    """`POST /runs` (201): a backtest (`mode: "backtest"`) or a session by id, outside the runner slot.

    With `idempotency_key`, a retry of the same request answers the same run instead of starting another.
    """
    headers = None if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    return Call("POST", _path("/runs"), model(RunResponse), json=body, headers=headers)


def run_detailed_status(run_id: str) -> Call[DetailedStatus]:
    """`GET /runs/{id}/status/detailed`."""
    return Call("GET", _path("/runs/{}/status/detailed", run_id), model(DetailedStatus))


def run_body(config: Any, fields: dict[str, Any], mode: str) -> dict[str, Any]:
    """A `/runs` body: a backtest's or a session's request with its `mode`."""
    return {**request_body(config, fields), "mode": mode}


def session_status(run_id: str) -> Call[SessionStatus]:
    """`GET /runs/{id}/status`."""
    return Call("GET", _path("/runs/{}/status", run_id), model(SessionStatus))


def stop_session(run_id: str, flatten: bool) -> Call[RunResponse]:
    """`POST /runs/{id}/stop` with `{"flatten": ...}`."""
    return Call("POST", _path("/runs/{}/stop", run_id), model(RunResponse), json={"flatten": flatten})


def session_control(run_id: str, action: str, keys: dict[str, str] | None = None) -> Call[RunResponse]:
    """`POST /runs/{id}/pause` or `/resume` (a live session resumed after a restart: with its exchange keys)."""
    return Call("POST", _path("/runs/{}/" + action, run_id), model(RunResponse), json=keys or None)


def cancel_order(run_id: str, order_id: int) -> Call[RunResponse]:
    """`POST /runs/{id}/orders/{order_id}/cancel`."""
    return Call("POST", _path("/runs/{}/orders/{}/cancel", run_id, str(order_id)), model(RunResponse))


def close_position(run_id: str, symbol: str) -> Call[RunResponse]:
    """`POST /runs/{id}/positions/{symbol}/close` (the symbol's slash is percent-encoded; the server decodes it)."""
    return Call("POST", _path("/runs/{}/positions/{}/close", run_id, symbol), model(RunResponse))


def session_body(
    strategy_name: str,
    symbols: str | Sequence[str],
    timeframe: str,
    exchange: str,
    strategy_params: Mapping[str, Any] | None,
    exchange_config: Mapping[str, Any] | None,
    mode: str,
) -> dict[str, Any]:
    """The JSON of `POST /runs`; None drops out so the server's defaults apply."""
    fields = {
        "strategy_name": strategy_name,
        "symbols": symbols if isinstance(symbols, str) else list(symbols),
        "timeframe": timeframe,
        "exchange": exchange,
        "strategy_params": None if strategy_params is None else dict(strategy_params),
        "exchange_config": None if exchange_config is None else dict(exchange_config),
        "mode": mode,
    }
    return request_body(None, fields)


# Client-side logic shared by both clients ----------------------------------------------------------------


def check_waiting(status: Status, run_id: str | None) -> bool:
    """True when the awaited run is finished; raises when there is nothing (left) to wait for."""
    if run_id is not None and status.run_id != run_id:
        raise ConflictError(
            f"The runner no longer holds run {run_id} (now: {status.run_id or 'none'}, {status.status}); "
            "fetch it with get_run()",
            code="RUN_REPLACED",
            details={"run_id": run_id, "current_run_id": status.run_id, "status": status.status},
        )
    if status.status == "idle":
        raise NoActiveRunError("No run to wait for: the runner is idle", details={"status": "idle"})
    return status.status in FINISHED_STATUSES


def wait_timeout(status: Status, timeout: float) -> TimeoutError:
    """The error of a run that did not finish in time."""
    return TimeoutError(
        f"Run {status.run_id} still {status.status} after {timeout}s ({status.progress:.0%} of bars)",
        details={"run_id": status.run_id, "status": status.status, "progress": status.progress},
    )


def resettable(exc: RunAlreadyActiveError) -> bool:
    """True when a refused start was refused only because a finished run still occupies the runner."""
    return exc.details.get("status") in FINISHED_STATUSES


def started_run_id(response: RunResponse) -> str:
    """The id of a run the server accepted."""
    if not response.run_id:
        raise InvalidResponseError(f"The server accepted the run without an id: {response.message!r}", body=response)
    return response.run_id


def check_run_succeeded(status: Status) -> None:
    """Raise `RunFailedError` for a failed run."""
    if status.status == "failed":
        raise RunFailedError(
            status.error or "The run failed",
            code=status.error_code or "RUN_FAILED",
            details={"run_id": status.run_id, "status": status.status},
        )


def no_current_session(last: str | None) -> NoActiveRunError:
    """The error of `get_balance()` without `run_id` when none of this client's sessions is active."""
    if last is None:
        message = "This client has not started a session; pass run_id=... to read a session's balances"
    else:
        message = (
            f"No session this client started is active any more (the last one, {last}, ended); "
            "pass run_id=... to read a session's balances"
        )
    return NoActiveRunError(message, details={"last_session": last})


def session_finished(status: SessionStatus, deadline: float | None, timeout: float | None) -> bool:
    """True once the watched session ended; TimeoutError when it is still active at `deadline`."""
    if status.is_finished:
        return True
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(
            f"Session {status.run_id} still {status.status} after {timeout}s",
            details={"run_id": status.run_id, "status": status.status},
        )
    return False
