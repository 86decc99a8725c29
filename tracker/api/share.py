"""Share links over HTTP: the public page `GET /s/<token>` and `DELETE /api/trips/{id}/share`.

The page needs no sign-in: the token in its path is the whole grant (`tracker.shares`). A live link gets
the share page of the map build (`web/src/share.html`, the same MapLibre bundle's second entry), whose
socket is `/viewer` with auth `{"share": <token>}`; an ended link gets a short page that says so (410);
an unknown token a 404 page, counted as a failed authentication, so that an address that keeps guessing
is slowed (429). The token is never logged, and no page sends it on as a referrer.
"""

from __future__ import annotations

import html
import math
import time

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.web import page_config, page_headers
from tracker.auth import Origin
from tracker.errors import InvalidInput, TooManyFailures, Unauthorized
from tracker.shares import COMPLETED, LIVE, link_state
from tracker.trips.model import Trip

_CONFIG_SLOT = '<script id="tracker-config" type="application/json">{}</script>'
_NOTICE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title></head>
<body data-share-state="{state}" style="font-family: system-ui, sans-serif; margin: 0; min-height: 100vh;
display: flex; align-items: center; justify-content: center; background: #f4f1ea; color: #1f2933">
<main style="max-width: 28em; padding: 2em; text-align: center">
<h1 id="share-notice" style="font-size: 1.6em">{title}</h1><p>{text}</p></main></body></html>
"""
_NOTICES = {
    COMPLETED: ("This delivery is complete", "Thank you. This tracking link no longer shows the courier."),
    "ended": ("This link has ended", "This tracking link is no longer active."),
    "unknown": ("This link is not valid", "Check that the address is complete, or ask the sender again."),
    "slowed": ("Too many attempts", "Too many invalid links were opened from here; try again later."),
    "unbuilt": ("Tracking is not available", "The map is not built on this server."),
}


def _headers(request: Request) -> dict[str, str]:
    headers = page_headers(params.core(request).settings)
    headers.update({"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"})
    return headers


def _notice(request: Request, state: str, status: int, extra: dict[str, str] | None = None) -> Response:
    title, text = _NOTICES[state]
    body = _NOTICE.format(title=html.escape(title), text=html.escape(text), state=state)
    return HTMLResponse(body, status_code=status, headers={**_headers(request), **(extra or {})})


async def share_url(request: Request, trip: Trip) -> str:
    """A new link for `trip` (created with `share`), as an absolute URL: on TRACKER_PUBLIC_URL when set,
    else on the address the request came to (coroutine)."""
    core = params.core(request)
    token = await core.shares.issue(trip)
    base = core.settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}/s/{token}"


async def page(request: Request) -> Response:
    """
    summary: A trip's public share page (HTML), from the share_url of POST /api/trips
    description: >
      No sign-in: the token in the path grants the live position, status and ETA of that trip's device
      while the trip is open and the link neither revoked nor past share_ttl_s. An ended link answers a page
      that says so. Unknown tokens count as failed authentications: an address that keeps guessing is slowed
      (429).
    parameters:
      - {name: token, in: path, required: true, schema: {type: string}}
    responses:
      200:
        description: The live page of the trip.
        content: {text/html: {}}
      404:
        description: No link has this token.
        content: {text/html: {}}
      410:
        description: The link has ended (the delivery is complete, or the link was revoked or expired).
        content: {text/html: {}}
      429:
        description: Too many failed attempts from this address.
        content: {text/html: {}}
      503:
        description: The page was not built on this server.
        content: {text/html: {}}
    """
    core = params.core(request)
    origin = Origin("http", request.client.host if request.client else None, "GET /s/<token>")
    try:
        link = await core.shares.link(request.path_params["token"], origin)
    except TooManyFailures as exc:
        return _notice(request, "slowed", 429, {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    except Unauthorized:
        return _notice(request, "unknown", 404)
    state = link_state(link, time.time() * 1000)
    if state != LIVE:
        return _notice(request, state, 410)
    try:
        text = await anyio.Path(core.settings.web_dir / "share.html").read_text(encoding="utf-8")
    except FileNotFoundError:
        return _notice(request, "unbuilt", 503)
    config = {**page_config(core.settings), "share": await core.shares.view(link)}
    filled = orjson.dumps(config).decode().replace("<", "\\u003c")
    return HTMLResponse(
        text.replace(_CONFIG_SLOT, _CONFIG_SLOT.replace("{}", filled)), headers=_headers(request)
    )


async def revoke(request: Request) -> Response:
    """
    summary: Revoke a trip's share link
    description: >
      The link stops working at once, everywhere: its open sockets on every process get `ended` and are
      disconnected within 2 s, and its page says the link has ended. Revoking a revoked link changes nothing.
    security: [{bearer: []}]
    parameters:
      - {name: id, in: path, required: true, schema: {type: string, pattern: '^[0-9]{1,18}$'}}
    responses:
      204: {description: The link is revoked.}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    who = await params.viewer(request)
    raw = request.path_params["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput(f"trip id must be a number; got {raw!r:.40}")
    await params.core(request).shares.revoke(who, str(int(raw)))
    return Response(status_code=204)


routes = [
    Route("/s/{token}", page, methods=["GET"]),
    Route("/api/trips/{id}/share", revoke, methods=["DELETE"]),
]
