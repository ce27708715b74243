"""Health checks: required ones (database, data store, executor) and optional ones (exchange reachability)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI

from cracktrader import __version__
from cracktrader.runs.document import now_iso
from cracktrader.web.middleware import API_VERSION

DB_TIMEOUT_S = 2.0


def _check(ok: bool, required: bool, **info: Any) -> dict[str, Any]:
    return {"status": "ok" if ok else "fail", "required": required, **info}


async def _database(app: FastAPI) -> dict[str, Any]:
    store = app.state.run_store
    if store is None:
        return _check(False, True, detail="no database configured")
    try:
        seconds = await asyncio.wait_for(store.ping(), DB_TIMEOUT_S)
    except Exception as exc:
        return _check(False, True, detail=f"{type(exc).__name__}")
    return _check(True, True, latency_ms=round(seconds * 1000, 3), backend=app.state.db_backend)


def _data_store(app: FastAPI) -> dict[str, Any]:
    root = app.state.settings.data_dir
    ok = root.is_dir() and os.access(root, os.W_OK)
    return _check(ok, True, detail="" if ok else f"data folder {root} is missing or not writable")


def _executor(app: FastAPI) -> dict[str, Any]:
    manager = app.state.manager
    active = manager.active_backtests()
    return _check(
        not manager.closed,
        True,
        active_run=active[0] if active else None,
        active_backtests=len(active),
        pool_size=manager.settings.max_concurrent_backtests,
    )


def _exchanges(app: FastAPI) -> dict[str, Any]:
    seen = app.state.manager.exchange_status
    ok = all(v["reachable"] for v in seen.values()) if seen else True
    return _check(ok, False, exchanges=seen, detail="" if seen else "no exchange contacted yet")


async def _credentials(app: FastAPI) -> dict[str, Any]:
    """Stored credentials the server's key cannot open (CRACKTRADER_SECRET_KEY changed or was lost)."""
    store = getattr(app.state, "credential_store", None)
    if store is None:
        return _check(True, False, unreadable=0, detail="")
    try:
        unreadable = await asyncio.wait_for(store.unreadable(), DB_TIMEOUT_S)
    except Exception as exc:
        return _check(False, False, detail=f"{type(exc).__name__}")
    if not unreadable:
        return _check(True, False, unreadable=0, detail="")
    from cracktrader.db.secret_box import fix_hint

    detail = f"{unreadable} stored credential(s) unreadable with the current key: {fix_hint(app.state.settings)}"
    return _check(False, False, unreadable=unreadable, detail=detail)


async def health_report(app: FastAPI, *, detailed: bool = True) -> dict[str, Any]:
    """`{status, version, api_version, checks, metrics, timestamp}`; unhealthy when a required check fails."""
    checks = {
        "database": await _database(app),
        "data_store": _data_store(app),
        "executor": _executor(app),
        "exchanges": _exchanges(app),
        "credentials": await _credentials(app),
    }
    failed_required = any(c["status"] != "ok" and c["required"] for c in checks.values())
    failed_optional = any(c["status"] != "ok" and not c["required"] for c in checks.values())
    status = "unhealthy" if failed_required else ("degraded" if failed_optional else "healthy")
    report: dict[str, Any] = {
        "status": status,
        "version": __version__,
        "api_version": API_VERSION,
        "timestamp": now_iso(),
    }
    if detailed:
        report["checks"] = checks
        report["metrics"] = app.state.request_metrics.summary(dict(app.state.manager.outcomes))
    else:
        report["checks"] = {}
        report["metrics"] = {}
    return report
