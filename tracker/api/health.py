"""Liveness, readiness and metrics for operators and orchestrators."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse


async def healthz(request: Request) -> Response:
    """
    summary: 200 while the process runs
    responses:
      200: {description: The process is up.}
    """
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    """
    summary: 200 only while PostGIS answers
    responses:
      200: {description: The database answers; the server can take fixes.}
      503: {description: The database does not answer.}
    """
    if await params.core(request).db.ping():
        return JSONResponse({"ok": True})
    return JSONResponse({"ok": False, "error": "the database does not answer"}, status_code=503)


async def metrics(request: Request) -> Response:
    """
    summary: Prometheus metrics in the text format
    responses:
      200:
        description: Counters, gauges and histograms of ingest, storage and broadcast.
        content:
          text/plain: {schema: {type: string}}
    """
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
