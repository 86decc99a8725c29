"""`POST /api/geofences/dry-run`: a posted rules file tried on the stored history of the token's fleets.

The answer streams: `{"events": [` is sent at once, each chunk's events as the detector yields them (a
newline when a chunk fired none, which keeps proxies from timing out a quiet month), then the errors. A
file that fails to parse or validate answers at once, `{"events": [], "errors": ["file:line: reason"]}`;
a failure midway is the last entry of `errors`, since the 200 is gone by then. With `Accept:
application/x-ndjson` each event is a line of its own and each error a line `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import Busy, Forbidden, InvalidInput, NotFound
from tracker.geofence import dry_run
from tracker.geofence.ruleset import RuleSet
from tracker.model import GeofenceEvent, Viewer
from tracker.parse import check_id, time_ms
from tracker.store.database import DAY_MS
from tracker.store.history_fixes import device_fleets

log = logging.getLogger("tracker.api")

MAX_BODY = dry_run.MAX_YAML_BYTES + 64 * 1024  # the file, escaped, and the device list
MAX_RUNNING = 2  # dry-runs at once per process: each holds a connection and a worker thread
NDJSON = "application/x-ndjson"


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object posted, refused beyond MAX_BODY bytes (coroutine)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise InvalidInput(f"the request body must be at most {MAX_BODY} bytes")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > MAX_BODY:
            raise InvalidInput(f"the request body must be at most {MAX_BODY} bytes")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidInput("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def _devices(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("devices must be a non-empty list of device ids")
    if len(raw) > dry_run.MAX_DEVICES:
        raise InvalidInput(f"devices must name at most {dry_run.MAX_DEVICES} devices; got {len(raw)}")
    return list(dict.fromkeys(check_id(d, f"devices[{i}]") for i, d in enumerate(raw)))


async def _scope(request: Request, who: Viewer, devices: list[str] | None) -> dict[str, str]:
    """Device id -> fleet of the devices to run on: those named, each visible to `who` (else 404/403),
    or every device of its fleets (coroutine)."""
    db = params.core(request).db
    if devices is None:
        scope = await device_fleets(db, sorted(who.fleets) if who.fleets is not None else None, None)
        if len(scope) > dry_run.MAX_DEVICES:
            raise InvalidInput(
                f"the token's fleets hold {len(scope)} devices; name at most {dry_run.MAX_DEVICES} in devices"
            )
        return scope
    known = await device_fleets(db, None, devices)
    for device in devices:
        if device not in known:
            raise NotFound(f"device {device!r} not found")
        if not who.grants(known[device]):
            raise Forbidden(
                f"device {device!r} is in fleet {known[device]!r}, which this token does not grant"
            )
    return known


async def geofence_dry_run(request: Request) -> Response:
    """
    summary: The events a rules file would have fired on stored history
    description: >
      Runs the posted geofences YAML (it may name its own fences and the fences in force) over the
      stored, unflagged fixes of the window, from an empty state at `from`, through the live detector.
      Nothing is stored or delivered. Scoped to the token's fleets; `devices` narrows it. At most
      31 days, 1 MiB of YAML and 5000 devices; `geojson:` may only name a plain file of the server's
      geofences folder. The answer streams; `Accept: application/x-ndjson` gives one event per line.
      A file with problems answers `errors` as `file:line: reason` and no events.
    security: [{bearer: []}]
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: '#/components/schemas/DryRunRequest'}}}
    responses:
      200:
        description: The events in fix order, and the file's problems.
        content:
          application/json: {schema: {$ref: '#/components/schemas/DryRunResult'}}
          application/x-ndjson: {schema: {$ref: '#/components/schemas/GeofenceEvent'}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
      503: {description: Too many dry-runs at once on this process; retry later.}
    """
    who = await params.viewer(request)
    body = await _body(request)
    text = body.get("yaml")
    if not isinstance(text, str):
        raise InvalidInput("yaml must be the text of a geofences file")
    now = int(time.time() * 1000)
    to_ms = time_ms(body["to"], "to") if body.get("to") is not None else now
    from_ms = time_ms(body["from"], "from") if body.get("from") is not None else to_ms - DAY_MS
    devices = _devices(body.get("devices"))
    dry_run.check_request(len(text.encode()), from_ms, to_ms, devices)
    state = request.app.state
    if getattr(state, "dry_runs", 0) >= MAX_RUNNING:
        raise Busy(f"{MAX_RUNNING} dry-runs are running on this process; retry in a minute", 10.0)
    # The slot is taken before the first await (so that simultaneous requests cannot all pass the check)
    # and given back by the answer's stream when it ends, or here when no stream starts.
    state.dry_runs = getattr(state, "dry_runs", 0) + 1
    streaming = False
    try:
        scope = await _scope(request, who, devices)
        core = params.core(request)
        compiled = await asyncio.to_thread(
            dry_run.compile_text, text, core.geofences.rules.fences, core.geofences.folder
        )
        ndjson = NDJSON in request.headers.get("accept", "")
        if compiled.rules is None:
            if ndjson:
                lines = b"".join(orjson.dumps({"error": e}) + b"\n" for e in compiled.errors)
                return Response(lines, media_type=NDJSON)
            return JSONResponse({"events": [], "errors": list(compiled.errors)})
        events = _events(request, compiled.rules, scope, from_ms, to_ms)
        streaming = True
        if ndjson:
            return StreamingResponse(_ndjson(events), media_type=NDJSON)
        return StreamingResponse(_json(events), media_type="application/json")
    finally:
        if not streaming:
            state.dry_runs -= 1


def _event_json(event: GeofenceEvent) -> dict[str, Any]:
    out = event.to_json()
    del out["id"]  # never stored, so it has none
    return out


async def _events(
    request: Request, rules: RuleSet, scope: dict[str, str], from_ms: int, to_ms: int
) -> AsyncIterator[list[GeofenceEvent] | str]:
    """Each chunk's events, then a string if the run failed midway (async generator); gives back the
    run's slot, taken by the request, when it ends."""
    state = request.app.state
    try:
        async for events in dry_run.run(params.core(request).db, rules, scope, from_ms, to_ms):
            yield events
    except dry_run.DryRunStopped as exc:
        yield f"the dry-run stopped early: {exc}"
    except Exception as exc:  # the 200 is sent: the failure becomes the answer's last error
        log.exception("geofence dry-run failed after its answer started")
        yield f"the dry-run stopped early: {type(exc).__name__}"
    finally:
        state.dry_runs -= 1


async def _json(events: AsyncIterator[list[GeofenceEvent] | str]) -> AsyncIterator[bytes]:
    yield b'{"events":['
    first = True
    errors: list[str] = []
    async for chunk in events:
        if isinstance(chunk, str):
            errors.append(chunk)
            continue
        if not chunk:
            yield b"\n"  # whitespace between array elements: a quiet chunk keeps the connection busy
            continue
        encoded = b",".join(orjson.dumps(_event_json(e)) for e in chunk)
        yield encoded if first else b"," + encoded
        first = False
    yield b'],"errors":' + orjson.dumps(errors) + b"}"


async def _ndjson(events: AsyncIterator[list[GeofenceEvent] | str]) -> AsyncIterator[bytes]:
    async for chunk in events:
        if isinstance(chunk, str):
            yield orjson.dumps({"error": chunk}) + b"\n"
        elif chunk:
            yield b"".join(orjson.dumps(_event_json(e)) + b"\n" for e in chunk)


routes = [Route("/api/geofences/dry-run", geofence_dry_run, methods=["POST"])]
