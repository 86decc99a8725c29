"""`GET /`: the dispatcher map, built from `web/` into `settings.web_dir` (`npm --prefix web run build`).

The page is one HTML file plus content-hashed assets: the HTML is never cached (it names the current
assets) and carries the map settings inline, so the page needs no extra request to start; the assets are
cached for good and served pre-compressed when the build wrote a `.gz` beside them. Without a build, `GET /`
says how to make one instead of failing obscurely.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from tracker.api import params
from tracker.errors import NotFound
from tracker.settings import Settings

OVERLAY_PATH = "/map/overlay.geojson"
_CONFIG_SLOT = '<script id="tracker-config" type="application/json">{}</script>'
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".map": "application/json",
    ".json": "application/json",
}
_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tracker: map not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 44em; margin: 3em auto">
<h1>The dispatcher map is not built</h1>
<p>This server looks for it in <code>{where}</code>. Build it from the repository with
<code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code> (<code>bash .ci/setup</code> does
this), or point <code>TRACKER_WEB_DIR</code> at a built copy. The API works meanwhile:
<a href="/openapi.json">/openapi.json</a>.</p>
</body></html>
"""


def page_config(settings: Settings) -> dict[str, object]:
    """What the page needs to know: its base map, and where a trail breaks (`TRACKER_TRAIL_GAP_S`)."""
    return {
        "style": settings.map_style,
        "tiles": settings.map_tiles or None,
        "attribution": settings.map_attribution,
        "overlay": OVERLAY_PATH if settings.map_overlay else None,
        "trailGapS": settings.trail_gap_s,
    }


def _origin(url: str | None) -> str | None:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def page_headers(settings: Settings) -> dict[str, str]:
    """Scripts only from this server; images and fetches also from any https origin and from the configured
    tile and style servers (which may be plain http on a LAN)."""
    extra = " ".join(sorted({o for o in (_origin(settings.map_tiles), _origin(settings.map_style)) if o}))
    csp = (
        "default-src 'self'; script-src 'self'; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob: https: {extra}; connect-src 'self' ws: wss: https: {extra}; "
        "frame-ancestors 'none'"
    )
    return {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": " ".join(csp.split()),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


async def _page(settings: Settings) -> str | None:
    """The built index.html with the config filled in, or None without a build (coroutine)."""
    try:
        text = await anyio.Path(settings.web_dir / "index.html").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    config = orjson.dumps(page_config(settings)).decode().replace("<", "\\u003c")
    return text.replace(_CONFIG_SLOT, _CONFIG_SLOT.replace("{}", config))


async def index(request: Request) -> Response:
    """
    summary: The dispatcher map (HTML)
    description: >
      The live map of the token's fleets. Takes the viewer token from `?token=` or a sign-in form and keeps it
      in the browser. Each device in its list is an element with `data-device-id` and `data-ts`, each event
      in its feed an element with `data-event-id`.
    responses:
      200:
        description: The page.
        content:
          text/html: {}
      503:
        description: The page was not built on this server (`npm --prefix web run build`).
        content:
          text/html: {}
    """
    settings = params.core(request).settings
    page = await _page(settings)
    if page is None:
        where = html.escape(str(settings.web_dir))
        return HTMLResponse(_NOT_BUILT.format(where=where), status_code=503, headers=page_headers(settings))
    return HTMLResponse(page, headers=page_headers(settings))


async def asset(request: Request) -> Response:
    """
    summary: A file of the built map (script, style sheet, MapLibre's worker), by its content-hashed name
    description: Cached for good (the name changes with the content); gzip-encoded when the client accepts it.
    parameters:
      - {name: name, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The file.}
      404: {description: No such file in this build.}
    """
    name = request.path_params["name"]
    folder = params.core(request).settings.web_dir / "assets"
    path = folder / name
    if not _ASSET_NAME.match(name) or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    media_type = _TYPES.get(path.suffix)
    gz = path.with_name(name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and gz.is_file():
        headers["Content-Encoding"] = "gzip"
        return FileResponse(gz, headers=headers, media_type=media_type or "application/octet-stream")
    return FileResponse(path, headers=headers, media_type=media_type)


async def favicon(request: Request) -> Response:
    """
    summary: The map's icon (SVG), for browsers that ask for /favicon.ico
    responses:
      200:
        description: The icon.
        content:
          image/svg+xml: {}
      404: {$ref: '#/components/responses/NotFound'}
    """
    path = params.core(request).settings.web_dir / "favicon.svg"
    if not path.is_file():
        raise NotFound("no favicon: the map is not built on this server")
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, headers=headers, media_type="image/svg+xml")


async def overlay(request: Request) -> Response:
    """
    summary: What the map draws over its base map (TRACKER_MAP_OVERLAY), as GeoJSON
    description: >
      Streets or areas of the operator's own, drawn even without tiles; `tracker demo` serves its simulated
      streets here. Public like the page and its tiles.
    responses:
      200:
        description: The GeoJSON file.
        content:
          application/geo+json: {}
      404: {$ref: '#/components/responses/NotFound'}
    """
    path = params.core(request).settings.map_overlay
    if path is None or not path.is_file():
        raise NotFound("no map overlay here (TRACKER_MAP_OVERLAY names none, or no such file)")
    return FileResponse(path, headers={"Cache-Control": "no-cache"}, media_type="application/geo+json")


routes = [
    Route("/", index, methods=["GET"]),
    Route("/assets/{name}", asset, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
    Route(OVERLAY_PATH, overlay, methods=["GET"]),
]
