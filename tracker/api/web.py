"""`GET /`: the dispatcher map. Until the browser bundle in `web/` is built (the map issue), a plain
page that says so and links the API, so that the demo's printed URL always answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

_PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tracker</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>tracker</h1>
<p>The dispatcher map is not built into this server yet. The live fleet is on the API meanwhile:</p>
<ul>
<li><a href="/api/devices">/api/devices</a> (send the token as <code>Authorization: Bearer</code>)</li>
<li><a href="/api/geofences">/api/geofences</a>, <a href="/api/events">/api/events</a></li>
<li><a href="/openapi.json">/openapi.json</a>, <a href="/metrics">/metrics</a></li>
</ul>
</body></html>
"""


async def index(request: Request) -> Response:
    """
    summary: The dispatcher map (HTML)
    responses:
      200:
        description: The page; it takes the viewer token from ?token= or a sign-in form.
        content:
          text/html: {}
    """
    return HTMLResponse(_PLACEHOLDER)


routes = [Route("/", index, methods=["GET"])]
