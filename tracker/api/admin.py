"""Admin endpoints: register devices and viewers. Only the admin token (TRACKER_ADMIN_TOKEN) may call them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.auth import ADMIN
from tracker.errors import InvalidInput
from tracker.store import audit


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
    await params.require_admin(request)
    body = await params.json_object(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput("name must be a string")
    device, token = await params.core(request).auth.add_device(
        body.get("id"), body.get("fleet"), name, actor=ADMIN.name
    )
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
      content: {application/json: {schema: {$ref: '#/components/schemas/NewViewer'}}}
    responses:
      201:
        description: The new viewer and its token.
        content: {application/json: {schema: {$ref: '#/components/schemas/ViewerToken'}}}
      409: {description: A viewer with this name exists.}
    """
    await params.require_admin(request)
    body = await params.json_object(request)
    fleets = body.get("fleets")
    if fleets == "all":
        granted = None
    elif isinstance(fleets, list) and fleets and all(isinstance(f, str) for f in fleets):
        granted = frozenset(fleets)
    else:
        raise InvalidInput('fleets must be a non-empty list of fleet ids or "all"')
    expires_s = body.get("expires_s")
    if expires_s is not None and (not isinstance(expires_s, int | float) or isinstance(expires_s, bool)):
        raise InvalidInput(f"expires_s must be a number of seconds; got {expires_s!r:.40}")
    viewer, token = await params.core(request).auth.add_viewer(
        body.get("name"), granted, actor=ADMIN.name, expires_s=expires_s
    )
    shown = sorted(viewer.fleets) if viewer.fleets is not None else "all"
    return JSONResponse(
        {"name": viewer.name, "fleets": shown, "token": token, "expires_ts": viewer.expires_ts},
        status_code=201,
    )


async def revoke_device(request: Request) -> Response:
    """
    summary: Revoke a device's token
    description: >-
      The token stops working at once: HTTP requests and new connections with it are refused, and its
      open sockets on every process are disconnected within 2 s. `tracker device add ID --replace`
      (or registering the device again with the CLI) gives it a new token.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
    responses:
      200:
        description: Revoked.
        content: {application/json: {schema: {$ref: '#/components/schemas/DeviceRevoked'}}}
      404: {$ref: '#/components/responses/NotFound'}
    """
    await params.require_admin(request)
    device_id = request.path_params["id"]
    await params.core(request).auth.revoke_device(device_id, actor=ADMIN.name)
    return JSONResponse({"id": device_id, "revoked": True})


async def revoke_viewer(request: Request) -> Response:
    """
    summary: Revoke a viewer's token
    description: >-
      As for a device: refused at once, its open sockets on every process disconnected within 2 s.
      `tracker viewer add NAME ... --replace` gives the viewer a new token.
    security: [{bearer: []}]
    parameters:
      - {name: name, in: path, required: true, schema: {type: string}}
    responses:
      200:
        description: Revoked.
        content: {application/json: {schema: {$ref: '#/components/schemas/ViewerRevoked'}}}
      404: {$ref: '#/components/responses/NotFound'}
    """
    await params.require_admin(request)
    name = request.path_params["name"]
    await params.core(request).auth.revoke_viewer(name, actor=ADMIN.name)
    return JSONResponse({"name": name, "revoked": True})


AUDIT_ACTIONS = (
    "device.add",
    "device.rekey",
    "device.revoke",
    "device.erase",
    "device.export",
    "viewer.add",
    "viewer.rekey",
    "viewer.revoke",
    "message.send",
    "message.from_device",
)


async def audit_trail(request: Request) -> Response:
    """
    summary: The audit trail, oldest first, a page at a time
    description: >-
      Who did what, when: devices and viewers added, re-keyed and revoked, messages sent (by whom, to
      which device, how large; not the body) and received from devices, devices erased and exported.
      `actor` is `admin` (the admin token), `cli:<os user>` (the command line), a viewer's name or
      `device:<id>` (a device's own message). Never holds a token.
    security: [{bearer: []}]
    parameters:
      - {name: actor, in: query, schema: {type: string}}
      - name: action
        in: query
        description: One action or several, comma-separated.
        schema: {type: string, example: 'device.revoke,viewer.revoke'}
      - {name: target, in: query, description: A device id or viewer name, schema: {type: string}}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - {$ref: '#/components/parameters/PageLimit'}
      - {$ref: '#/components/parameters/Cursor'}
    responses:
      200:
        description: Entries, plus next_cursor (null on the last page).
        content: {application/json: {schema: {$ref: '#/components/schemas/AuditPage'}}}
    """
    await params.require_admin(request)
    query = request.query_params
    actions = [a for a in query.get("action", "").split(",") if a] or None
    unknown = sorted(set(actions or ()) - set(AUDIT_ACTIONS))
    if unknown:
        raise InvalidInput(f"action must be among {', '.join(AUDIT_ACTIONS)}; got {', '.join(unknown):.80}")
    window = params.page_window(request)
    found = await audit.entries(
        params.core(request).db,
        actor=query.get("actor") or None,
        actions=actions,
        target=query.get("target") or None,
        window=window,
    )
    shown, next_cursor = params.page(found, window.limit, lambda e: int(e.id))
    return JSONResponse({"entries": [e.to_json() for e in shown], "next_cursor": next_cursor})


routes = [
    Route("/api/admin/audit", audit_trail, methods=["GET"]),
    Route("/api/admin/devices", add_device, methods=["POST"]),
    Route("/api/admin/devices/{id}/token", revoke_device, methods=["DELETE"]),
    Route("/api/admin/viewers", add_viewer, methods=["POST"]),
    Route("/api/admin/viewers/{name}", revoke_viewer, methods=["DELETE"]),
]
