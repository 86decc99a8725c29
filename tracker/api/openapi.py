"""`/openapi.json`: built from the YAML in each route's docstring, plus the shared components (`schemas`),
so a route and its documentation live side by side and a test keeps them in step."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import SchemaGenerator

from tracker import __version__
from tracker.api.responses import JSONResponse
from tracker.api.schemas import COMPONENTS, ref

_generator = SchemaGenerator(
    {
        "openapi": "3.1.0",
        "info": {
            "title": "tracker",
            "version": __version__,
            "description": "Real-time fleet tracking. Socket.IO namespaces /device and /viewer "
            "share this port; see the README for their events.",
        },
        "components": COMPONENTS,
    }
)


# Every route below a device answers these the same way (a bad parameter, no token, a device of another
# fleet, no such device), and every admin route the first three (not the admin token: 403); so their
# docstrings leave them out and the document adds them.
_ERRORS = {
    code: ref(name, "responses")
    for code, name in ((400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (404, "NotFound"))
}
SHARED_ERRORS = {"/api/devices/{id}/": (400, 401, 403, 404), "/api/admin/": (400, 401, 403)}


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    schema: dict[str, Any] = _generator.get_schema(routes)
    for path, operations in schema["paths"].items():
        for prefix, codes in SHARED_ERRORS.items():
            if path.startswith(prefix):
                for operation in operations.values():
                    shared = {code: _ERRORS[code] for code in codes}
                    operation["responses"] = {**operation["responses"], **shared}
    return schema


async def openapi_json(request: Request) -> Response:
    """
    summary: This document
    responses:
      200: {description: The OpenAPI 3.1 document of the HTTP API.}
    """
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = document(request.app.routes)
    return JSONResponse(state.openapi)


routes = [Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=True)]
