"""`GET /api/me`: who the token is and which fleets it grants, so a client (the map's fleet selector) can
offer exactly those without trying each."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse


async def me(request: Request) -> Response:
    """
    summary: The viewer this token belongs to, and the fleets it grants
    security: [{bearer: []}]
    responses:
      200:
        description: '`fleets` is a sorted list of fleet ids, or "all".'
        content: {application/json: {schema: {$ref: '#/components/schemas/Viewer'}}}
      401: {description: No token, or a token that is not a viewer's or the admin's.}
    """
    who = await params.viewer(request)
    fleets: list[str] | str = sorted(who.fleets) if who.fleets is not None else "all"
    return JSONResponse({"name": who.name, "fleets": fleets})


routes = [Route("/api/me", me, methods=["GET"])]
