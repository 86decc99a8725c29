"""A device's data for data-protection requests: erase it everywhere, or export all of it (admin token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.auth import ADMIN
from tracker.errors import InvalidInput, NotFound
from tracker.parse import check_id
from tracker.store import accounts, audit
from tracker.store import erasure as store


async def erase(request: Request) -> Response:
    """
    summary: Erase a device and everything stored about it
    description: >-
      Deletes the device's fixes, geofence events (and their webhook deliveries), fence state and
      messages, then the device. Its token is refused at once and its sockets are cut on every process;
      the deletes run in the background (a long history takes a while): the answer is the erasure under
      way, and GET .../erasure says when it is done and how much was deleted. Audited as device.erase.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
      - name: erase
        in: query
        required: true
        description: Must be true, to say that all the device's data is to go.
        schema: {type: boolean, enum: [true]}
    responses:
      202:
        description: The erasure, under way.
        content: {application/json: {schema: {$ref: '#/components/schemas/Erasure'}}}
      404: {$ref: '#/components/responses/NotFound'}
    """
    await params.require_admin(request)
    if request.query_params.get("erase") != "true":
        raise InvalidInput(
            "erase=true is required: it deletes the device and all its data; to stop its token only, "
            "DELETE /api/admin/devices/{id}/token"
        )
    erasure = await params.core(request).erasure.erase(request.path_params["id"], ADMIN.name)
    return JSONResponse(erasure.to_json(), status_code=202)


async def erasure_status(request: Request) -> Response:
    """
    summary: Whether a device's erasure is done, and what it deleted
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
    responses:
      200:
        description: The device's latest erasure.
        content: {application/json: {schema: {$ref: '#/components/schemas/Erasure'}}}
      404: {$ref: '#/components/responses/NotFound'}
    """
    await params.require_admin(request)
    erasure = await params.core(request).erasure.status(request.path_params["id"])
    return JSONResponse(erasure.to_json())


async def export(request: Request) -> Response:
    """
    summary: Everything stored about a device, as JSON lines
    description: >-
      One JSON object per line, each with a `type`: first the `device`, then every `fix` (oldest
      first, with all its fields and attrs), `event`, `fence_state` and `message` (with its body), read
      in one consistent snapshot. Streams any history in bounded memory. Audited as device.export.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
    responses:
      200:
        description: The device's data.
        content: {application/x-ndjson: {schema: {type: string}}}
      404: {$ref: '#/components/responses/NotFound'}
    """
    await params.require_admin(request)
    db = params.core(request).db
    device_id = check_id(request.path_params["id"], "id")
    device = await accounts.get_device(db, device_id)
    if device is None:
        raise NotFound(f"device {device_id!r} not found")
    await audit.record(db.pool, ADMIN.name, "device.export", device.id)
    record = {"id": device.id, "fleet": device.fleet, "name": device.name}
    return StreamingResponse(
        store.export_lines(db, record),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{device.id}.jsonl"'},
    )


routes = [
    Route("/api/admin/devices/{id}", erase, methods=["DELETE"]),
    Route("/api/admin/devices/{id}/erasure", erasure_status, methods=["GET"]),
    Route("/api/admin/devices/{id}/export", export, methods=["GET"]),
]
