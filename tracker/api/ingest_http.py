"""HTTP ingest for ready-made tracking apps: the OsmAnd protocol (Traccar Client, OsmAnd) at
`/api/ingest/osmand` and OwnTracks in HTTP mode at `/api/ingest/owntracks`.

The app's wire format is decoded by `tracker.protocols`; the fixes then take the path every fix takes,
`Ingestor.accept`, which returns after COMMIT (fences evaluated, viewers served), so a 200 means stored.
Policy for the answers:
- 400 (naming the app's field) only when no fix of the request could be stored; a batch with some bad
  fixes stores the good ones, answers 200 and logs the rest, since the apps resend a refused request as it
  is and one bad fix would otherwise block their queue for good.
- 401 for a missing or unknown token; 503 with Retry-After when the server cannot take the fixes now.
"""

from __future__ import annotations

import logging
import math
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.core import Core
from tracker.errors import Busy, InvalidInput, TooManyFailures, Unauthorized
from tracker.model import Device
from tracker.protocols import osmand, owntracks
from tracker.protocols.request import AppRequest
from tracker.store import push_tokens

MAX_BODY = 4 * 1024 * 1024  # as for a Socket.IO message: 1000 fixes with their attrs fit
BASIC_CHALLENGE = 'Basic realm="tracker"'

log = logging.getLogger("tracker.ingest_http")


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY (coroutine)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> Response:
    return JSONResponse({"error": f"the request body is larger than {MAX_BODY} bytes"}, status_code=413)


def _busy(exc: Busy) -> Response:
    """The apps retry on a 5xx; Retry-After says when: the server's estimate, in whole seconds."""
    wait = max(1, math.ceil(exc.retry_after_s))
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(wait)})


async def _device(request: Request, app: AppRequest) -> Device:
    """The device whose token the request carries; Unauthorized naming where the app puts it, or
    TooManyFailures (429) for an address that keeps failing (coroutine)."""
    try:
        return await params.core(request).auth.device(app.token, params.origin(request))
    except TooManyFailures:
        raise
    except Unauthorized as exc:
        if exc.reason == "missing":
            raise Unauthorized(f"{app.token_field} must be the device token; got none", exc.reason) from None
        raise Unauthorized(f"{app.token_field} is not a known device token", exc.reason) from None


async def _store(core: Core, device: Device, app: AppRequest) -> None:
    """Store the request's fixes for `device` (coroutine); InvalidInput naming the first problem, in the
    app's words, when nothing could be stored; Busy when the server cannot take them now."""
    raws, positions = app.fix_objects()
    errors = [(i, item) for i, item in enumerate(app.items) if isinstance(item, str)]
    if errors:  # what the decoder refused; `accept` counts and logs what validation refuses
        core.metrics.fixes_rejected.inc(len(errors))
        log.info("device=%s %d entries not read, first: %s", device.id, len(errors), app.describe(*errors[0]))
    stored = 0
    if raws:
        done = await core.ingestor.accept(device, raws, refresh_state=True)
        stored = done.result.accepted + done.result.duplicates
        errors.extend((positions[r["index"]], r["error"]) for r in done.rejected)
    if errors and not stored:
        raise InvalidInput(app.describe(*min(errors)))


async def _osmand(request: Request, body: bytes) -> Response:
    """Decode, authenticate, then validate and store; 200 with an empty body, as Traccar answers."""
    core = params.core(request)
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    query = dict(request.query_params.multi_items())
    now_ms = int(time.time() * 1000)
    app = osmand.decode(body, content_type, query, now_ms)
    device = await _device(request, app)
    if app.push_token is not None:
        await push_tokens.save(core.db, device.id, app.push_token, "traccar-client", now_ms)
        log.info("device=%s push token registered", device.id)
    if not app.items:  # only a push token
        return Response(status_code=200)
    try:
        await _store(core, device, app)
    except Busy as exc:
        return _busy(exc)
    return Response(status_code=200)


async def osmand_get(request: Request) -> Response:
    """
    Traccar Client (up to version 8) and OsmAnd send one fix per request in the query string.
    ---
    summary: Ingest a fix in the OsmAnd protocol (Traccar Client, OsmAnd), fields in the query string
    description: >
      The device token is the `id` field. Speed is in knots and stored as m/s; timestamp is unix seconds,
      milliseconds or ISO 8601 with an offset (default: the server time). Fields not listed are stored in
      the fix's attrs. Same validation, durability and fence evaluation as the Socket.IO `fix` event, but
      for the optional values: unknown ones (-1, empty, null, NaN) are left out, unfit ones (not a number,
      out of range) left out and kept in attrs; only the position and its time refuse a fix.
    parameters:
      - name: fields
        in: query
        style: form
        explode: true
        required: true
        schema: {$ref: '#/components/schemas/OsmAndFields'}
    responses:
      200: {description: 'Stored (or already stored: a retry is safe). Empty body, as Traccar answers.'}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      503: {description: 'Cannot take the fix now; retry after Retry-After seconds.'}
    """
    return await _osmand(request, b"")


async def osmand_post(request: Request) -> Response:
    """
    Traccar Client POSTs the query string with an empty body (up to version 8) or a JSON body (9 and
    later); other clients POST a form.
    ---
    summary: Ingest fixes in the OsmAnd protocol (Traccar Client), as query, form or Traccar Client JSON
    description: >
      Fields as for GET, in the query string or an application/x-www-form-urlencoded body; or the JSON
      body of Traccar Client 9+ (`device_id` = the device token, `location` an object or an array, speed
      in m/s there, battery level 0..1). A batch with some bad locations stores the good ones and answers
      200; 400 only when nothing could be stored. `id` and `notificationToken` alone (Traccar Client
      registering its push token) store the token for the device and no fix.
    parameters:
      - name: fields
        in: query
        style: form
        explode: true
        schema: {$ref: '#/components/schemas/OsmAndFields'}
    requestBody:
      content:
        application/x-www-form-urlencoded:
          schema: {$ref: '#/components/schemas/OsmAndFields'}
        application/json:
          schema:
            oneOf:
              - {$ref: '#/components/schemas/TraccarClientJson'}
              - {type: array, items: {$ref: '#/components/schemas/TraccarClientJson'}, minItems: 1}
    responses:
      200: {description: 'Stored (or already stored: a retry is safe). Empty body, as Traccar answers.'}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      413: {description: The body is larger than 4 MiB.}
      503: {description: 'Cannot take the fixes now; retry after Retry-After seconds.'}
    """
    body = await _read_body(request)
    if body is None:
        return _too_large()
    return await _osmand(request, body)


async def owntracks_post(request: Request) -> Response:
    """
    OwnTracks POSTs every message it would publish over MQTT; only locations become fixes. The Basic
    auth user name is not checked (the app requires one; any will do): the token alone names the device.
    ---
    summary: Ingest OwnTracks messages (HTTP mode); answers the device's pending messages
    description: >
      HTTP Basic auth with the device token as the password (any user name). A `_type: location` message
      (or each of an array) becomes a fix: `tst` unix seconds, `vel` km/h (stored as m/s), `cog` heading,
      `acc`, `alt`, `batt`; other fields (tid, t, conn, bs, m, SSID, ...) are stored in attrs. Other
      types (transition, waypoint(s), lwt, card, status, steps, encrypted, ...) and empty bodies are
      answered 200 and ignored. Unknown optional values (-1, null) are left out, unfit ones kept in attrs.
      The answer is a JSON array: [] or the device's pending messages (then acked): a message that is an
      object the apps read (`_type` cmd, card, location, transition, waypoints, ...) as it is; any other,
      as text, an OwnTracks `transition` (`event` enter, `desc` the text, `tid` the sender, at the
      device's newest position), which both apps notify; neither shows a `msg`.
    security: [{basic: []}]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            oneOf:
              - {$ref: '#/components/schemas/OwnTracksMessage'}
              - {type: array, items: {$ref: '#/components/schemas/OwnTracksMessage'}}
    responses:
      200:
        description: Stored (or already stored, or ignored); the device's pending messages.
        content:
          application/json:
            schema:
              type: array
              items: {type: object, required: [_type], properties: {_type: {type: string}}}
            example:
              - {_type: transition, event: enter, desc: Pick-up at door 4, tid: desk, tst: 1795687200,
                 wtst: 1795687200, lat: 52.52, lon: 13.405, acc: 0}
              - {_type: cmd, action: reportLocation}
      400: {$ref: '#/components/responses/BadRequest'}
      401:
        description: 'No or unknown credentials; WWW-Authenticate: Basic realm="tracker".'
        content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
      413: {description: The body is larger than 4 MiB.}
      503: {description: 'Cannot take the fixes now; retry after Retry-After seconds.'}
    """
    core = params.core(request)
    password = owntracks.basic_password(request.headers.get("authorization", ""))
    try:
        device = await _device(request, AppRequest(password, owntracks.TOKEN_FIELD))
    except TooManyFailures:
        raise
    except Unauthorized as exc:
        return JSONResponse(
            {"error": f"{exc} (OwnTracks: set the password to the device token)"},
            status_code=401,
            headers={"WWW-Authenticate": BASIC_CHALLENGE},
        )
    body = await _read_body(request)
    if body is None:
        return _too_large()
    app = owntracks.decode(body, password)
    if app.items:
        try:
            await _store(core, device, app)
        except Busy as exc:
            return _busy(exc)
    taken = await core.messages.take(device)
    newest = core.index.get(device.id) if taken else None
    return JSONResponse(owntracks.answer(taken, (newest.lat, newest.lon) if newest else None))


routes = [
    Route("/api/ingest/osmand", osmand_get, methods=["GET"]),
    Route("/api/ingest/osmand", osmand_post, methods=["POST"]),
    Route("/api/ingest/owntracks", owntracks_post, methods=["POST"]),
]
