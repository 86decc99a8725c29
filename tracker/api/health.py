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
    summary: 200 only while fixes can be stored; says what is degraded
    description: >-
      503 while the database does not answer, is read-only, or refused the last write (until one
      succeeds), with the reasons in `problems`. `degraded` names what works only in part, such as Redis
      between several processes: positions still reach the viewers of the same process.
    responses:
      200:
        description: Fixes can be stored.
        content: {application/json: {schema: {$ref: '#/components/schemas/Readiness'}}}
      503:
        description: Fixes cannot be stored now; `error` and `problems` say why.
        content: {application/json: {schema: {$ref: '#/components/schemas/Readiness'}}}
    """
    problems, degraded = await params.core(request).readiness()
    if not problems:
        return JSONResponse({"ok": True, "degraded": degraded})
    body = {"ok": False, "error": "; ".join(problems), "problems": problems, "degraded": degraded}
    return JSONResponse(body, status_code=503)


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
