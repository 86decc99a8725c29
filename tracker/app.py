"""The app factory: one Starlette app for HTTP and one Socket.IO server on the same port.

The lifespan starts the core (pool, migrations, live index, ingest and broadcast loops) and stops it
in reverse order, draining the ingest queue so that no acked or in-flight fix is lost on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import socketio
from starlette.applications import Starlette

from tracker import api
from tracker.core import Core
from tracker.errors import ConfigError, TrackerError
from tracker.gc_policy import GcPolicy
from tracker.metrics import Metrics
from tracker.sessions import DEVICE, VIEWER
from tracker.settings import Settings
from tracker.socket_gate import AdmissionGate
from tracker.sockets import DeviceNamespace, DeviceRooms, ViewerNamespace, ViewerRooms, build_server
from tracker.store.compaction import run as compact_closed_days
from tracker.store.database import identity as database_identity

# How uvicorn serves the app, for `tracker serve` and `tracker demo` alike. Engine.IO pings every client
# itself (25 s), so uvicorn's own WebSocket pings (every 20 s) would only double the idle cost of
# thousands of connected devices.
UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_ping_interval": None,
    "timeout_graceful_shutdown": 10,
}


def create_app(settings: Settings, database_url: str | None = None, *, manage_gc: bool = True) -> Any:
    """The ASGI app of the tracker, on `database_url` (default: the settings' URL).

    With `manage_gc` (the default, as `tracker serve` runs it) the lifespan applies the server's
    process-wide garbage-collector policy (`tracker.gc_policy`: thresholds, freezes, a periodic full
    collection); `manage_gc=False` leaves the collector as it is, for an app that shares its process
    with other code, such as the in-process tests."""
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
        resolved = settings
        if shared:
            # Redis pub/sub ignores database numbers: a deployment's channels and keys carry its own prefix.
            namespace = settings.redis_namespace or f"tracker:{await database_identity(url)}"
            resolved = settings.model_copy(update={"redis_namespace": namespace})
            sio.manager.channel = f"{namespace}:socketio"
        devices = DeviceRooms(sio, shared)
        viewers = ViewerRooms(sio, shared)
        cut = {DEVICE: devices.disconnect, VIEWER: viewers.disconnect}
        holder["core"] = app.state.core = await Core.start(
            resolved, url, viewers, metrics, devices, devices, cut, viewers.here() if shared else None
        )
        # Closed days' primary keys are rebuilt in the background (one process of a cluster at a time).
        compaction = None
        if settings.compact_after_s > 0:
            compaction = asyncio.create_task(
                compact_closed_days(url, settings.compact_after_s, settings.retention_days), name="compaction"
            )
        # Last in start-up, so that the first freeze keeps everything the core has loaded out of the
        # collector's walks.
        gc_task = None
        if manage_gc:
            gc = GcPolicy(settings.gc_freeze_interval_s, settings.gc_full_interval_s)
            gc.apply()
            gc_task = asyncio.create_task(gc.run(), name="gc")
        try:
            yield
        finally:
            tasks = [task for task in (gc_task, compaction) if task is not None]
            for task in tasks:
                task.cancel()
            # A rebuild cut short cancels its query and closes its connection before the pool goes.
            await asyncio.gather(*tasks, return_exceptions=True)
            await holder["core"].stop()

    http = Starlette(routes=api.routes(), exception_handlers=api.exception_handlers, lifespan=lifespan)
    http.state.metrics = metrics
    http.state.settings = settings
    asgi = AdmissionGate(
        socketio.ASGIApp(sio, other_asgi_app=http, socketio_path="socket.io"),
        lambda inflight: core().ingestor.check_connection(inflight),
    )
    return _WebSocketOnly(asgi, settings.workers) if settings.workers > 1 else asgi


def create_app_from_env() -> Any:
    """The app of one worker of `tracker serve --workers N`: settings from the `TRACKER_*` environment,
    which the supervisor has filled in (database and Redis URLs, flags). uvicorn calls it in each worker
    process (`tracker.app:create_app_from_env`, `factory=True`)."""
    from uvicorn.config import STARTUP_FAILURE

    from tracker.logs import configure
    from tracker.settings import load_settings

    try:
        settings = load_settings()
        configure(settings.log_level)  # uvicorn set up its own loggers in this process; ours too
        return create_app(settings)
    except TrackerError as exc:  # uvicorn's supervisor restarts a worker that dies, unless it says this
        logging.getLogger("tracker.app").error("worker cannot start: %s", exc)
        raise SystemExit(STARTUP_FAILURE) from None


class _WebSocketOnly:
    """Engine.IO over WebSocket only, for N worker processes on one port.

    A long-polling session is a series of HTTP requests that must all reach the process holding it, and
    the kernel hands each new connection to any worker, so polling would fail at random ("Invalid
    session") and so would its upgrade. Every HTTP request to the Socket.IO path is answered 400 with
    an error that says what to do instead; WebSocket connections pass through.
    """

    def __init__(self, app: Any, workers: int) -> None:
        self._app = app
        self._body = orjson.dumps(
            {
                "error": f"this server runs {workers} worker processes, which share no long-polling "
                "sessions: connect with the websocket transport only (socket.io-client: "
                "transports: ['websocket']; python-socketio: transports=['websocket'])"
            }
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == "/socket.io":
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(self._body)).encode()),
                        (b"access-control-allow-origin", b"*"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": self._body})
            return
        await self._app(scope, receive, send)
