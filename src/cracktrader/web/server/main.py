"""Run the API server: `python -m cracktrader.web.server.main`, `cracktrader serve`, `scripts/run_web_server.py`."""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

from cracktrader.runs.worker_logs import level_of
from cracktrader.web.config import WebSettings, is_loopback_host

log = logging.getLogger("cracktrader.web")


class ServerConfigError(Exception):
    """The requested server configuration is refused."""


def check_server_config(
    *,
    host: str,
    workers: int,
    insecure: bool,
    auth_enabled: bool = False,
    jwt_secret: str | None = None,
    database_url: str = "",
    executor: bool = True,
    event_log: bool = True,
) -> list[str]:
    """Refuse unsafe or inconsistent set-ups; returns warnings for allowed-but-risky ones."""
    if not executor and not database_url.startswith("postgresql"):
        raise ServerConfigError(
            "--no-executor leaves queued runs to `cracktrader worker` processes, which need a database every "
            "process shares: set DATABASE_URL to PostgreSQL (postgresql://user@host/db), or drop --no-executor "
            "(with SQLite, serve executes the queue itself)."
        )
    if auth_enabled:
        from cracktrader.auth.tokens import MIN_SECRET_LENGTH

        if not jwt_secret:
            raise ServerConfigError(
                "CRACKTRADER_AUTH_MODE=on needs JWT_SECRET_KEY: set it to a random string of at least "
                f"{MIN_SECRET_LENGTH} characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
            )
        if len(jwt_secret) < MIN_SECRET_LENGTH:
            raise ServerConfigError(f"JWT_SECRET_KEY is too short: use at least {MIN_SECRET_LENGTH} random characters.")
    if workers > 1 and not database_url.startswith("postgresql"):
        raise ServerConfigError(
            f"--workers {workers} is refused: SQLite serves one process. Several processes share their runner "
            "slots, run queue, limits and streams through a database they all reach: set DATABASE_URL to "
            "PostgreSQL (postgresql://user@host/db), or use --workers 1."
        )
    if workers > 1 and not event_log:
        raise ServerConfigError(
            f"--workers {workers} needs the event log (CRACKTRADER_EVENT_LOG=true): it carries each run's events "
            "to the processes that did not run it."
        )
    if not is_loopback_host(host) and not auth_enabled:
        if not insecure:
            raise ServerConfigError(
                f"Refusing to bind {host}: it is reachable from other machines and authentication is off. "
                "Bind 127.0.0.1, turn authentication on (CRACKTRADER_AUTH_MODE=on and JWT_SECRET_KEY), or pass "
                "--insecure if a trusted proxy guards it."
            )
        return [f"INSECURE: serving on {host} without authentication; anyone who can reach it can trade"]
    return []


def _database_url() -> str:
    """The configured database URL; "" when the settings do not load (the app reports that itself)."""
    from cracktrader.settings import get_settings

    try:
        return str(get_settings().database_url)
    except Exception:
        return ""


def dashboard_url(host: str, port: int) -> str:
    """`http://HOST:PORT/ui`; an IPv6 address in brackets, a wildcard bind as the loopback a browser can open."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/ui"


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging set-up, plus the package's own lines (runs started and ended, workers' records) on stderr.

    Through the root logger, where the log tail listens too; uvicorn's own loggers keep their handlers.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    config["loggers"]["cracktrader"] = {"level": logging.getLevelName(level_of(log_level))}
    return config


def run_server(
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str | None = None,
    workers: int | None = None,
    insecure: bool | None = None,
) -> None:
    """Validate the configuration and run uvicorn with the app factory."""
    base = WebSettings()
    host = host or base.api_host
    port = base.api_port if port is None else port
    log_level = (log_level or base.log_level).lower()
    workers = workers or base.workers
    insecure = base.insecure if insecure is None else insecure
    secret = base.jwt_secret_key.get_secret_value() if base.jwt_secret_key else None
    checks = check_server_config(
        host=host,
        workers=workers,
        insecure=insecure,
        auth_enabled=base.auth_enabled,
        jwt_secret=secret,
        database_url=_database_url(),
        executor=base.executor,
        event_log=base.event_log,
    )
    for warning in checks:
        log.warning(warning)
        print(f"WARNING: {warning}", file=sys.stderr)
    # The factory reads its settings from the environment: pass the command line's choices on.
    os.environ["CRACKTRADER_API_HOST"] = host
    os.environ["CRACKTRADER_API_PORT"] = str(port)
    os.environ["CRACKTRADER_LOG_LEVEL"] = log_level
    if workers > 1:
        # Several processes: backtests by id go through the queue and the runner slots live in the database.
        os.environ["CRACKTRADER_RUN_QUEUE"] = "true"
        from cracktrader.settings import get_settings

        get_settings.cache_clear()
    from cracktrader.web.config import get_web_settings

    get_web_settings.cache_clear()
    # Printed, not logged: the one line a new user needs, whatever the log level.
    print(f"Cracktrader dashboard: {dashboard_url(host, port)}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        "cracktrader.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config(log_level),
        workers=workers,
        proxy_headers=False,
        server_header=False,
        # Compressing every event once per client was a tenth of a busy server's CPU; events are small JSON.
        ws_per_message_deflate=False,
    )
    if workers > 1:
        _draining_multiprocess(config).run()
    else:
        DrainingServer(config).run()


def _fastapi_app(app: Any) -> Any:
    """The application inside uvicorn's middleware wrappers (each keeps the next as `.app`)."""
    for _ in range(10):
        if hasattr(getattr(app, "state", None), "open_streams"):
            return app
        app = getattr(app, "app", None)
    return None


class DrainingServer(uvicorn.Server):
    """On SIGTERM or Ctrl-C, the app's streams close with 1001 (going away) before uvicorn's own shutdown (1012)."""

    async def shutdown(self, sockets: Any = None) -> None:
        app = _fastapi_app(self.config.loaded_app)
        if app is not None:
            from cracktrader.web.ws.router import close_streams

            closed = await close_streams(app)
            if closed:
                log.info("Closed %d WebSocket stream(s) with 1001 before shutting down", closed)
        await super().shutdown(sockets)


class _DrainingProcess(multiprocess.Process):
    """uvicorn's worker process, serving with DrainingServer."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


def _draining_multiprocess(config: uvicorn.Config) -> multiprocess.Multiprocess:
    """uvicorn's supervisor of `config.workers` processes on one socket, each closing its streams with 1001."""
    # uvicorn makes its worker processes from this module global and offers no other hook; the supervisor only
    # runs in the `serve` process, which has nothing else of uvicorn's to start.
    multiprocess.Process = _DrainingProcess  # type: ignore[misc]
    return multiprocess.Multiprocess(config, sockets=[config.bind_socket()])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run the Cracktrader API server")
    parser.add_argument("--host", help="Address to bind (default CRACKTRADER_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="Port (default CRACKTRADER_API_PORT or 8000)")
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="Log level (default CRACKTRADER_LOG_LEVEL or info)",
    )
    parser.add_argument("--workers", type=int, help="API processes on the port (more than 1 needs PostgreSQL)")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="Allow a non-loopback bind without authentication"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    try:
        run_server(
            host=args.host, port=args.port, log_level=args.log_level, workers=args.workers, insecure=args.insecure
        )
    except ServerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
