"""HTTP edge: JSON routes of the contract. Routes parse parameters, check the token, call the core,
and map domain errors to statuses here and only here."""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from tracker.api import (
    admin,
    area,
    devices,
    dry_run,
    erasure,
    geofences,
    health,
    history,
    ingest_http,
    me,
    messages,
    openapi,
    reports,
    share,
    trips,
    web,
)
from tracker.api.responses import JSONResponse
from tracker.errors import (
    Busy,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyFailures,
    TrackerError,
    Unauthorized,
)

log = logging.getLogger("tracker.api")

_STATUS: list[tuple[type[TrackerError], int]] = [
    (InvalidInput, 400),
    (TooManyFailures, 429),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Busy, 503),
]


def routes() -> list[BaseRoute]:
    """Every HTTP route of the tracker."""
    return [
        *health.routes,
        *me.routes,
        *devices.routes,
        *history.routes,
        *messages.routes,
        *trips.routes,
        *reports.routes,
        *share.routes,
        *area.routes,
        *geofences.routes,
        *dry_run.routes,
        *admin.routes,
        *erasure.routes,
        *ingest_http.routes,
        *openapi.routes,
        *web.routes,
    ]


async def tracker_error(request: Request, exc: Exception) -> Response:
    """A domain error as the contract's `{"error": ...}` with its status."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if isinstance(exc, TooManyFailures):
                headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)
    log.error("unmapped tracker error on %s: %s", request.url.path, exc)
    return JSONResponse({"error": str(exc)}, status_code=500)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as JSON errors, with Starlette's headers; a 405 names in `Allow` every
    method the path takes (RFC 9110)."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return JSONResponse(
        {"error": f"{request.method} {request.url.path}: {exc.detail}"},
        status_code=exc.status_code,
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """The methods of every route of the request's path. Starlette's own `Allow` names only those of the
    first route that matched, where a path's GET and POST are two routes."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= route.methods
    return sorted(methods)


async def server_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its trace, answered without one."""
    path = request.url.path
    if path.startswith("/s/"):  # a share link's path is its token, which is never logged
        path = "/s/<token>"
    log.exception("unhandled error on %s %s", request.method, path, exc_info=exc)
    return JSONResponse({"error": "internal server error"}, status_code=500)


exception_handlers = {TrackerError: tracker_error, HTTPException: http_error, 500: server_error}
