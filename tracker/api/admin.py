"""Admin endpoints: register devices and viewers. Only the admin token (TRACKER_ADMIN_TOKEN) may call them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput


async def add_device(request: Request) -> Response:
    """
    summary: Register a device and get its token (shown once)
    security: [{bearer: []}]
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: '#/components/schemas/NewDevice'}}}
    responses:
      201:
        description: The new device and its token.
        content: {application/json: {schema: {$ref: '#/components/schemas/DeviceToken'}}}
      409: {description: A device with this id exists.}
    """
    params.require_admin(request)
    body = await params.json_object(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput("name must be a string")
    device, token = await params.core(request).auth.add_device(body.get("id"), body.get("fleet"), name)
    return JSONResponse(
        {"id": device.id, "fleet": device.fleet, "name": device.name, "token": token},
        status_code=201,
    )


async def add_viewer(request: Request) -> Response:
    """
    summary: Register a viewer of some fleets (or all) and get its token (shown once)
    security: [{bearer: []}]
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: '#/components/schemas/Viewer'}}}
    responses:
      201:
        description: The new viewer and its token.
        content: {application/json: {schema: {$ref: '#/components/schemas/ViewerToken'}}}
      409: {description: A viewer with this name exists.}
    """
    params.require_admin(request)
    body = await params.json_object(request)
    fleets = body.get("fleets")
    if fleets == "all":
        granted = None
    elif isinstance(fleets, list) and fleets and all(isinstance(f, str) for f in fleets):
        granted = frozenset(fleets)
    else:
        raise InvalidInput('fleets must be a non-empty list of fleet ids or "all"')
    viewer, token = await params.core(request).auth.add_viewer(body.get("name"), granted)
    shown = sorted(viewer.fleets) if viewer.fleets is not None else "all"
    return JSONResponse({"name": viewer.name, "fleets": shown, "token": token}, status_code=201)


routes = [
    Route("/api/admin/devices", add_device, methods=["POST"]),
    Route("/api/admin/viewers", add_viewer, methods=["POST"]),
]
