"""`GET /health` (under /api/v1 and at the root, where seed 004 puts it) and Prometheus `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cracktrader.web.health.schemas import HealthResponse
from cracktrader.web.health.service import health_report

router = APIRouter()


@router.get(
    "/health",
    response_model=HealthResponse,
    tags=["health"],
    responses={503: {"model": HealthResponse, "description": "A required check failed"}},
)
async def get_health(request: Request) -> Response:
    """Overall health: 200 when healthy or degraded, 503 when unhealthy."""
    report = await health_report(request.app, detailed=request.app.state.health_detail_allowed(request))
    return JSONResponse(report, status_code=503 if report["status"] == "unhealthy" else 200)


metrics_router = APIRouter()


@metrics_router.get("/metrics", tags=["health"], response_class=Response)
async def get_metrics(request: Request) -> Response:
    """Prometheus exposition of request counts, latencies, runs and WebSocket clients."""
    return Response(generate_latest(request.app.state.request_metrics.registry), media_type=CONTENT_TYPE_LATEST)
