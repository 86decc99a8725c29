"""Messages over HTTP, for integrations: send one to a device, list a device's conversation (both
directions, each with its delivery state)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput
from tracker.store import messages as store


async def send(request: Request) -> Response:
    """
    summary: Send a message to a device (delivered at once if connected, else on its next connect)
    description: >-
      The message is stored before this answers. The device gets it as the Socket.IO event `message`
      (or in the reply to its next OwnTracks request) and is sent it again, in order, on every reconnect
      until it acks it. `from` is the token's viewer name.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: '#/components/schemas/NewMessage'}}}
    responses:
      201:
        description: The stored message.
        content: {application/json: {schema: {$ref: '#/components/schemas/Message'}}}
    """
    who, device = await params.viewer_and_device(request)
    body = await params.json_object(request)
    if "body" not in body:
        raise InvalidInput("body is required (any JSON value)")
    message = await params.core(request).messages.send(who, device, body["body"])
    return JSONResponse(message.to_json(), status_code=201)


async def list_messages(request: Request) -> Response:
    """
    summary: A device's messages, both directions, newest first, with their delivery state
    description: >-
      Messages to the device (`direction` `to_device`, from a viewer) and the device's own (`from_device`,
      its Socket.IO `send`; `from` is the device id, `state` is `received`), in one order.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
      - name: direction
        in: query
        description: to_device or from_device; both when absent.
        schema: {type: string, enum: [to_device, from_device]}
      - name: state
        in: query
        description: >-
          queued (never handed to the device), sent (handed over, not acked), acked, or pending
          (queued or sent), all of them messages to the device; or received (the device's own); all
          when absent.
        schema: {type: string, enum: [queued, sent, acked, pending, received]}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000, default: 100}}
      - {$ref: '#/components/parameters/Cursor'}
    responses:
      200:
        description: A page of messages and next_cursor (null on the last page).
        content: {application/json: {schema: {$ref: '#/components/schemas/MessagePage'}}}
    """
    _, device = await params.viewer_and_device(request)
    state = request.query_params.get("state") or None
    if state is not None and state not in store.STATES:
        raise InvalidInput(f"state must be one of {', '.join(store.STATES)}; got {state!r:.40}")
    direction = request.query_params.get("direction") or None
    if direction is not None and direction not in store.DIRECTIONS:
        raise InvalidInput(f"direction must be one of {', '.join(store.DIRECTIONS)}; got {direction!r:.40}")
    limit = params.integer(request, "limit", 100, 1, 1000)
    before = params.decode_cursor(request)
    rows = await store.page(params.core(request).db, device.id, state, before, limit + 1, direction)
    messages, next_cursor = params.page(rows, limit, lambda m: int(m.id))
    return JSONResponse({"messages": [m.to_json() for m in messages], "next_cursor": next_cursor})


routes = [
    Route("/api/devices/{id}/messages", send, methods=["POST"]),
    Route("/api/devices/{id}/messages", list_messages, methods=["GET"]),
]
