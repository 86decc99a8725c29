"""The app factory: one Starlette app for HTTP and one Socket.IO server on the same port.

The lifespan starts the core (pool, migrations, live index, ingest and broadcast loops) and stops it
in reverse order, draining the ingest queue so that no acked or in-flight fix is lost on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import socketio
from starlette.applications import Starlette

from tracker import api
from tracker.core import Core
from tracker.errors import ConfigError
from tracker.gc_policy import GcPolicy
from tracker.metrics import Metrics
from tracker.settings import Settings
from tracker.sockets import DeviceNamespace, DeviceRooms, ViewerNamespace, ViewerRooms, build_server

# How uvicorn serves the app, for `tracker serve` and `tracker demo` alike. Engine.IO pings every client
# itself (25 s), so uvicorn's own WebSocket pings (every 20 s) would only double the idle cost of
# thousands of connected devices.
UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_ping_interval": None,
    "timeout_graceful_shutdown": 10,
}


def create_app(settings: Settings, database_url: str | None = None) -> Any:
    """The ASGI app of the tracker, on `database_url` (default: the settings' URL)."""
    url = database_url or settings.database_url
    if not url:
        raise ConfigError("no database URL: pass --database-url or set TRACKER_DATABASE_URL")
    metrics = Metrics()
    sio = build_server(settings.redis_url, settings.cors_origins)
    holder: dict[str, Core] = {}

    def core() -> Core:
        return holder["core"]

    sio.register_namespace(DeviceNamespace(core, metrics))
    sio.register_namespace(ViewerNamespace(core, metrics))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        shared = settings.redis_url is not None
        devices = DeviceRooms(sio, shared)
        holder["core"] = app.state.core = await Core.start(
            settings, url, ViewerRooms(sio, shared), metrics, devices, devices
        )
        # Last in start-up, so that the first freeze keeps everything the core has loaded out of the
        # collector's walks.
        gc = GcPolicy(settings.gc_freeze_interval_s, settings.gc_full_interval_s)
        gc.apply()
        gc_task = asyncio.create_task(gc.run(), name="gc")
        try:
            yield
        finally:
            gc_task.cancel()
            await holder["core"].stop()

    http = Starlette(routes=api.routes(), exception_handlers=api.exception_handlers, lifespan=lifespan)
    http.state.metrics = metrics
    http.state.settings = settings
    return socketio.ASGIApp(sio, other_asgi_app=http, socketio_path="socket.io")
