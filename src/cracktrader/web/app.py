"""The FastAPI application: `/api/v1` routers, WebSockets, offline docs, and the dashboard mounted last."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from cracktrader import __version__
from cracktrader.runs.commands import RunCommands
from cracktrader.runs.events import EventBus
from cracktrader.runs.queued import Executors, link_jobs
from cracktrader.runs.registry import RunRegistry
from cracktrader.runs.sessions import SessionRegistry, session_calls
from cracktrader.runs.shared_slots import SharedSlots
from cracktrader.runs.worker_logs import set_package_level
from cracktrader.settings import Settings, get_settings
from cracktrader.web.alerts.router import router as alerts_router
from cracktrader.web.alerts.service import AlertService
from cracktrader.web.analysis.router import router as analysis_router
from cracktrader.web.auth.deps import (
    AuthState,
    authorize_request,
    authorize_websocket,
    health_detail_allowed,
    optional_principal,
)
from cracktrader.web.auth.router import account_router, public_router
from cracktrader.web.catalog.router import router as catalog_router
from cracktrader.web.config import WebSettings, get_web_settings
from cracktrader.web.credentials.router import router as credentials_router
from cracktrader.web.data.jobs import DownloadJobs
from cracktrader.web.data.router import router as data_router
from cracktrader.web.errors import ERROR_RESPONSES, install_error_handlers
from cracktrader.web.health.router import metrics_router
from cracktrader.web.health.router import router as health_router
from cracktrader.web.log_redaction import install_log_redaction
from cracktrader.web.logs.buffer import LogTail
from cracktrader.web.logs.router import router as logs_router
from cracktrader.web.meta.router import router as meta_router
from cracktrader.web.metrics import RequestMetrics
from cracktrader.web.middleware import EdgeMiddleware
from cracktrader.web.runs.encoder import PageEncoder
from cracktrader.web.runs.router import router as runs_router
from cracktrader.web.sessions.router import router as sessions_router
from cracktrader.web.strategies.router import router as strategies_router
from cracktrader.web.sweeps.router import router as sweeps_router
from cracktrader.web.ui.router import router as ui_router
from cracktrader.web.walkforwards.router import router as walkforwards_router
from cracktrader.web.ws.router import router as ws_router

log = logging.getLogger("cracktrader.web")
API_PREFIX = "/api/v1"
DOCS_DIR = Path(__file__).resolve().parent / "static" / "docs"
FORM_PATHS = frozenset({f"{API_PREFIX}/auth/login"})

DESCRIPTION = """Cracktrader's v1 API: backtests, paper and live runs, run history and live streams.

Every response carries `X-Cracktrader-API-Version: v1`. Errors use one envelope:
`{"error": {"code", "message", "details"}, "status_code", "path", "detail"}`.
Deprecated routes carry `Deprecation`, `Sunset` and `Link` headers and are listed by `GET /api/v1/meta`.
"""


# The LISTEN connections a server holds for good on PostgreSQL: revocations, run events, run commands and
# runner slots.
LISTENERS = 4


async def _open_database(app: FastAPI, settings: Settings) -> Any:
    """Migrate the database to the latest schema and open the run store."""
    from cracktrader.db.engine import make_engine
    from cracktrader.db.migrate import upgrade
    from cracktrader.db.run_store import RunStore

    url = settings.database_url
    await asyncio.to_thread(upgrade, url)
    # Held for good: a live session's order line each, and on PostgreSQL the LISTEN connections of the revocation,
    # run-event and run-command notices.
    held = settings.max_live_sessions + LISTENERS
    engine = make_engine(url, echo=settings.sqlalchemy_echo, held_connections=held)
    app.state.db_engine = engine
    app.state.db_backend = engine.dialect.name
    from cracktrader.auth.store import AuthStore
    from cracktrader.db.strategy_store import StrategyStore

    app.state.auth.attach(AuthStore(engine))
    app.state.strategy_store = StrategyStore(engine)
    from cracktrader.db.idempotency_store import IdempotencyStore
    from cracktrader.web.idempotency import KEY_TTL

    app.state.idempotency_store = IdempotencyStore(engine, ttl=KEY_TTL)
    await _open_credentials(app, settings, engine)
    return RunStore(engine)


async def _open_credentials(app: FastAPI, settings: Settings, engine: Any) -> None:
    """The credential store; stored credentials the server's key cannot open are said at start, not at an order."""
    from cracktrader.db.credential_store import CredentialStore
    from cracktrader.db.secret_box import SecretBox, fix_hint

    store = CredentialStore(engine, SecretBox.from_settings(settings))
    app.state.credential_store = store
    unreadable = await store.unreadable()
    app.state.credentials_unreadable = unreadable
    if unreadable:
        log.error(
            "%d stored exchange credential(s) cannot be read with the current key: %s",
            unreadable,
            fix_hint(settings),
        )


async def _open_run_commands(app: FastAPI, manager: RunRegistry) -> RunCommands:
    """Stops sent by other server processes, carried out here for the runs this one holds."""
    from cracktrader.notify import open_notices

    web = app.state.web_settings
    notices, close_client = await open_notices(
        redis_url=web.redis_url, redis_prefix=web.redis_prefix, engine=app.state.run_store.engine, name="run-commands"
    )
    commands = RunCommands.for_registry(
        notices, app.state.event_log.relay, manager, calls=session_calls(app.state.sessions)
    )
    if close_client is not None:
        app.state.event_log.closers.append(close_client)
    downloads = app.state.downloads
    commands.serve(downloads.holds, downloads.calls())
    await commands.start()
    return commands


async def _open_shared_slots(app: FastAPI, manager: RunRegistry) -> SharedSlots:
    """Runner slots in the database, for every process of the deployment (the run queue's mode)."""
    from cracktrader.db.slot_store import SlotStore
    from cracktrader.notify import open_notices
    from cracktrader.web.runs.service import stop_anywhere, stored_status_of

    web = app.state.web_settings
    engine = app.state.run_store.engine
    notices, close_client = await open_notices(
        redis_url=web.redis_url, redis_prefix=web.redis_prefix, engine=engine, name="runner-slots"
    )
    if close_client is not None:
        app.state.event_log.closers.append(close_client)

    async def stop_elsewhere(run_id: str, flatten: bool) -> dict[str, Any]:
        return await stop_anywhere(app, manager, run_id, owner=None, flatten=flatten)

    shared = SharedSlots(
        store=SlotStore(engine),
        notices=notices,
        relay=app.state.event_log.relay,
        bus=manager.bus,
        registry=manager,
        stored_status=lambda run_id: stored_status_of(app, run_id),
        stop_elsewhere=stop_elsewhere,
    )
    await shared.start()
    await shared.ensure(manager.slot(None))  # the auth-off operator's /status is served from memory
    return shared


def _open_run_queue(app: FastAPI, manager: RunRegistry) -> Executors | None:
    """With the run queue on: POST /runs, /sweeps and /walkforwards queue their jobs, and this process executes some
    unless told not to."""
    app.state.run_queue = None
    settings: Settings = app.state.settings
    if not settings.run_queue:
        return None
    from cracktrader.db.run_queue import RunQueue
    from cracktrader.db.secret_box import SecretBox

    queue = RunQueue(app.state.run_store.engine, settings, SecretBox.from_settings(settings))
    app.state.run_queue = queue
    link_jobs(manager, queue, app.state.event_log, app.state.run_commands)
    if not app.state.web_settings.executor:
        return None
    executors = Executors(queue, manager, count=settings.max_concurrent_backtests, poll_s=settings.executor_poll_s)
    executors.start()
    return executors


# A run's thread holds the GIL for Python strategies; each socket write hands it over and the event loop then
# waits a whole switch interval (5 ms by default) to get it back. 200 WebSocket clients made that seconds.
SWITCH_INTERVAL_S = 0.0005


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The package's INFO lines (runs started, ended, failed) reach the log tail at the default level.
    set_package_level(app.state.web_settings.log_level)
    app.state.log_tail.attach()
    store = await _open_database(app, settings)
    app.state.run_store = store
    # Revocations by other processes (the CLI) reach the auth caches by polling, not a query per request.
    await app.state.auth.start()
    bus = EventBus(queue_size=app.state.web_settings.ws_queue_size)
    manager = RunRegistry(
        bus=bus, store=store, settings=settings, status_throttle_s=app.state.web_settings.status_throttle_ms / 1000
    )
    manager.on_finish(lambda outcome, mode: app.state.request_metrics.runs.labels(mode, outcome).inc())
    app.state.manager = manager
    app.state.downloads.bus = bus
    app.state.event_log = None
    if app.state.web_settings.event_log:
        from cracktrader.runs.event_log import open_event_log
        from cracktrader.web.ws.router import LOGGED_EVENTS

        web = app.state.web_settings
        app.state.event_log = await open_event_log(
            bus=bus,
            engine=store.engine,
            types=LOGGED_EVENTS,
            redis_url=web.redis_url,
            redis_prefix=web.redis_prefix,
            queue_size=web.ws_queue_size,
            keep_days=web.event_log_days,
        )
    from cracktrader.db.alert_store import AlertStore

    alerts = AlertService.from_settings(settings, AlertStore(store.engine), bus)
    alerts.bind(asyncio.get_running_loop())
    app.state.alerts = alerts
    sessions = SessionRegistry(settings, store=store, bus=bus, server_id=manager.server_id, alerts=alerts)
    sessions.credentials = app.state.credential_store
    manager.sessions = sessions
    app.state.sessions = sessions
    app.state.run_commands = await _open_run_commands(app, manager) if app.state.event_log is not None else None
    if settings.run_queue and app.state.event_log is not None:
        manager.shared_slots = await _open_shared_slots(app, manager)
    app.state.page_encoder = PageEncoder()
    if not app.state.auth.enabled:
        # The edge serves this without routing, hence without auth: only for the local, auth-off model.
        local = manager.slot(None)
        app.state.fast_get[f"{API_PREFIX}/status"] = lambda: json.dumps(local.status()).encode()
    interrupted = await manager.start()
    if interrupted:
        log.warning("Marked %d run(s) interrupted by a previous crash as failed", interrupted)
    from cracktrader.db.sweep_store import SweepStore
    from cracktrader.sweeps.runner import SweepRegistry

    sweeps = SweepRegistry(
        runs=manager, store=SweepStore(store.engine), settings=settings, throttle_s=manager.throttle_s
    )
    manager.sweeps = sweeps
    app.state.sweeps = sweeps
    if await sweeps.start():
        log.warning("Marked sweeps cut short by a previous server as failed")
    from cracktrader.db.walkforward_store import WalkForwardStore
    from cracktrader.sweeps.walkforward_runner import WalkForwardRegistry

    walkforwards = WalkForwardRegistry(runs=manager, store=WalkForwardStore(store.engine), settings=settings)
    manager.walkforwards = walkforwards
    app.state.walkforwards = walkforwards
    if await walkforwards.start():
        log.warning("Marked walk-forwards cut short by a previous server as failed")
    await sessions.begin()  # after the lease is taken: resume paper sessions of servers whose lease lapsed
    executors = _open_run_queue(app, manager)
    warm = asyncio.create_task(manager.warm_up(), name="warm-up")
    # What start-up loaded (modules, numba, pydantic models) lives as long as the server: out of the collector's
    # sight, a full collection no longer walks it (it stalled the event loop ~130 ms, /status p99 with it).
    gc.freeze()
    try:
        yield
    finally:
        warm.cancel()
        await app.state.downloads.close()
        await sessions.close()  # each session saves what it has
        await alerts.close()  # what the stops raised is still stored and posted
        await app.state.auth.close()
        if executors is not None:  # first: the jobs they hand back are then recorded before their registries close
            await executors.stop(settings.executor_drain_s)
        await sweeps.close()
        await walkforwards.close()
        if manager.shared_slots is not None:
            await manager.shared_slots.close()
        if app.state.run_commands is not None:
            await app.state.run_commands.close()
        await manager.close()
        if app.state.event_log is not None:
            await app.state.event_log.close()  # after the runs' last events
        app.state.page_encoder.close()
        await app.state.db_engine.dispose()
        app.state.log_tail.detach()


def _auth_state(web_settings: WebSettings) -> AuthState:
    """Auth configuration; with auth on, a missing or weak JWT secret stops the app from starting."""
    from cracktrader.auth.tokens import TokenSettings

    secret = web_settings.jwt_secret_key.get_secret_value() if web_settings.jwt_secret_key else ""
    if web_settings.auth_enabled and not secret:
        raise RuntimeError("CRACKTRADER_AUTH_MODE=on needs JWT_SECRET_KEY (at least 32 random characters)")
    tokens = (
        TokenSettings(
            secret=secret,
            algorithm=web_settings.jwt_algorithm,
            access_minutes=web_settings.jwt_expiration_minutes,
            refresh_days=web_settings.refresh_token_days,
        )
        if secret
        else None
    )
    from cracktrader.auth.rate_limit import RateLimiter

    return AuthState(
        enabled=web_settings.auth_enabled,
        tokens=tokens,
        cache_ttl_s=web_settings.auth_cache_ttl_s,
        rate_limiter=RateLimiter(web_settings.rate_limit_per_minute),
        revocation_poll_s=web_settings.auth_revocation_poll_s,
        redis_url=web_settings.redis_url,
        redis_prefix=web_settings.redis_prefix,
    )


def create_app(settings: Settings | None = None, web_settings: WebSettings | None = None) -> FastAPI:
    """Build the application (uvicorn calls this as a factory)."""
    settings = settings or get_settings()
    web_settings = web_settings or get_web_settings()
    install_log_redaction()
    app = FastAPI(
        title="Cracktrader API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.web_settings = web_settings
    app.state.request_metrics = RequestMetrics()
    app.state.fast_get = {}
    app.state.run_queue = None  # set by the lifespan when CRACKTRADER_RUN_QUEUE is on
    app.state.open_streams = set()  # WebSocket streams being served: closed with 1001 when the server stops
    app.state.downloads = DownloadJobs(settings)
    app.state.log_tail = LogTail()
    app.state.auth = _auth_state(web_settings)
    app.state.authorize_websocket = authorize_websocket
    app.state.health_detail_allowed = health_detail_allowed
    install_error_handlers(app)

    # Auth is applied here, once per router group, not route by route. Public: health (details only for
    # authenticated callers), login and refresh. Account: any valid principal. Everything else: the principal
    # plus the scope rule (reads need `read`, changes need `trade`). WebSockets check in `authorize_websocket`.
    public = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    public.include_router(health_router, dependencies=[Depends(optional_principal)])
    public.include_router(public_router)
    # Its routes take `CurrentUser`: a viewer may log out and hold read-only keys without the `trade` scope.
    account = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    account.include_router(account_router)
    protected = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES, dependencies=[Depends(authorize_request)])
    for router in (
        runs_router,
        analysis_router,
        sessions_router,
        strategies_router,
        credentials_router,
        catalog_router,
        data_router,
        logs_router,
        meta_router,
        metrics_router,
        alerts_router,
        sweeps_router,
        walkforwards_router,
    ):
        protected.include_router(router)
    streams = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    streams.include_router(ws_router)
    for group in (public, account, protected, streams):
        app.include_router(group)
    app.include_router(health_router, dependencies=[Depends(optional_principal)])
    app.include_router(metrics_router, dependencies=[Depends(authorize_request)])
    _mount_docs(app)
    # Mounted last, as freqtrade does, so it can never shadow an API route.
    app.include_router(ui_router)

    if web_settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=web_settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Cracktrader-API-Version", "X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        EdgeMiddleware,
        bound_host=web_settings.api_host,
        allowed_hosts=web_settings.allowed_hosts,
        cors_origins=web_settings.cors_origins,
        max_body_bytes=web_settings.max_body_bytes,
        metrics=app.state.request_metrics,
        form_paths=FORM_PATHS,
        fast_get=app.state.fast_get,
    )
    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from vendored assets: no CDN, so they work offline."""
    app.mount("/static/docs", StaticFiles(directory=DOCS_DIR), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Cracktrader API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon-32x32.png",
            oauth2_redirect_url="/static/docs/oauth2-redirect.html",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="Cracktrader API",
            redoc_js_url="/static/docs/redoc.standalone.js",
            redoc_favicon_url="/static/docs/favicon-32x32.png",
            with_google_fonts=False,
        )
