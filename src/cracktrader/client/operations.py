"""Every operation of the server's OpenAPI document and the SDK method that calls it, keyed by "METHOD path".

`CrackTraderAPI` and `AsyncCrackTraderAPI` both have each method. tests/test_sdk_coverage.py fails when an
operation is missing here (or in the JavaScript SDK's table), so a new endpoint needs a method in both SDKs.
"""

from __future__ import annotations

__all__ = ["OPERATIONS", "STREAMS"]

OPERATIONS: dict[str, str] = {
    "GET /api/v1/health": "get_health",
    "GET /health": "get_health",  # the same report outside /api/v1, for load balancers
    "POST /api/v1/auth/login": "login",
    "POST /api/v1/auth/refresh": "refresh",
    "POST /api/v1/auth/logout": "logout",
    "GET /api/v1/auth/me": "get_me",
    "GET /api/v1/auth/apikeys": "list_api_keys",
    "POST /api/v1/auth/apikeys": "create_api_key",
    "DELETE /api/v1/auth/apikeys/{key_id}": "revoke_api_key",
    "POST /api/v1/run/backtest": "start_backtest",
    "POST /api/v1/run/live": "start_live",
    "POST /api/v1/run/stop": "stop",
    "DELETE /api/v1/run/reset": "reset",
    "GET /api/v1/status": "get_status",
    "GET /api/v1/run/status": "get_status",  # deprecated alias of /status
    "GET /api/v1/status/detailed": "get_detailed_status",
    "GET /api/v1/results": "get_results",
    "GET /api/v1/runs": "list_runs",
    "POST /api/v1/runs": "start_run",
    "GET /api/v1/runs/{run_id}": "get_run",
    "DELETE /api/v1/runs/{run_id}": "delete_run",
    "POST /api/v1/runs/{run_id}/rerun": "rerun",
    "GET /api/v1/runs/{run_id}/results": "get_run_results",
    "GET /api/v1/runs/{run_id}/trades.csv": "trades_csv",
    "GET /api/v1/runs/{run_id}/equity.csv": "equity_csv",
    "GET /api/v1/runs/{run_id}/status": "run_status",
    "GET /api/v1/runs/{run_id}/status/detailed": "run_detailed_status",
    "POST /api/v1/runs/{run_id}/stop": "stop_run",
    "POST /api/v1/runs/{run_id}/orders/{order_id}/cancel": "cancel_order",
    "POST /api/v1/runs/{run_id}/positions/{symbol}/close": "close_position",
    "POST /api/v1/runs/{run_id}/pause": "pause_session",
    "POST /api/v1/runs/{run_id}/resume": "resume_session",
    "GET /api/v1/strategies": "get_strategies",
    "POST /api/v1/strategies": "create_strategy",
    "GET /api/v1/strategies/{strategy_ref}": "get_strategy",
    "PUT /api/v1/strategies/{strategy_id}": "update_strategy",
    "DELETE /api/v1/strategies/{strategy_id}": "delete_strategy",
    "POST /api/v1/strategies/{strategy_ref}/check": "check_strategy",
    "GET /api/v1/credentials": "list_credentials",
    "POST /api/v1/credentials": "create_credentials",
    "DELETE /api/v1/credentials/{name}": "delete_credentials",
    "PUT /api/v1/credentials/{name}": "rotate_credentials",
    "POST /api/v1/credentials/{name}/rotate": "rotate_credentials",
    "POST /api/v1/credentials/{name}/test": "test_credentials",
    "GET /api/v1/exchanges": "get_exchanges",
    "GET /api/v1/meta": "get_meta",
    "GET /api/v1/metrics": "get_metrics",
    "GET /metrics": "get_metrics",  # the same exposition outside /api/v1, for Prometheus
    "GET /api/v1/alerts": "alerts",
    "GET /api/v1/runs/{run_id}/candles": "run_candles",
    "GET /api/v1/runs/{run_id}/recent-candles": "recent_candles",
    "GET /api/v1/runs/{run_id}/roundtrips": "round_trips",
    "GET /api/v1/runs/{run_id}/breakdowns": "breakdowns",
    "GET /api/v1/candles": "get_candles",
    "GET /api/v1/exchanges/{exchange}/markets": "get_markets",
    "GET /api/v1/data/sets": "list_candle_sets",
    "POST /api/v1/data/downloads": "start_download",
    "GET /api/v1/data/downloads/{job_id}": "get_download",
    "DELETE /api/v1/data/downloads/{job_id}": "cancel_download",
    "GET /api/v1/logs": "get_logs",
    "POST /api/v1/sweeps": "start_sweep",
    "GET /api/v1/sweeps": "list_sweeps",
    "GET /api/v1/sweeps/{sweep_id}": "get_sweep",
    "GET /api/v1/sweeps/{sweep_id}/results": "sweep_results",
    "DELETE /api/v1/sweeps/{sweep_id}": "cancel_sweep",
    "POST /api/v1/sweeps/{sweep_id}/rows/{rank}/backtest": "backtest_sweep_row",
    "POST /api/v1/walkforwards": "start_walkforward",
    "GET /api/v1/walkforwards": "list_walkforwards",
    "GET /api/v1/walkforwards/{walkforward_id}": "get_walkforward",
    "DELETE /api/v1/walkforwards/{walkforward_id}": "cancel_walkforward",
}

# The WebSocket streams (not in the OpenAPI document) and their methods.
STREAMS: dict[str, str] = {
    "/api/v1/ws/status": "stream_status",
    "/api/v1/ws": "subscribe",
}
