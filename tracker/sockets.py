"""Socket.IO edge: the `/device` and `/viewer` namespaces of the contract.

Handlers parse and check what arrives, call into the core, and turn domain errors into transport
answers: `ConnectionRefusedError("unauthorized")` on connect, an error entry in an ack otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import socketio
from socketio.packet import Packet

from tracker.auth import ADMIN, Origin
from tracker.core import Core
from tracker.errors import Busy, Forbidden, InvalidInput, NotFound, TooManyFailures, Unauthorized
from tracker.message_payloads import parse_device_send, parse_send
from tracker.metrics import Metrics
from tracker.model import Device, Viewer
from tracker.redis_rooms import RedisRooms
from tracker.room_index import LocalRooms
from tracker.rooms import device_room
from tracker.sessions import DEVICE, VIEWER
from tracker.subscriptions import Subscription, plan_subscription

T = TypeVar("T")
log = logging.getLogger("tracker.sockets")

DEVICE_NS = "/device"
VIEWER_NS = "/viewer"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a batch of 1000 fixes with 2 KiB attrs each fits


class _Json:
    """orjson behind the `dumps`/`loads` interface python-socketio expects.

    Python clients (the stdlib `json`) send NaN and Infinity, which orjson refuses as input; the
    stdlib parses those, so that validation can reject the fix and name the field instead of the
    event being dropped without an ack.
    """

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return json.loads(s)


class _Packet(Packet):  # type: ignore[misc]
    """Socket.IO packets encoded by `_Json`. The server gets this class (`serializer=`), not `json=`,
    which python-socketio would set on its shared `Packet` (and Engine.IO's), turning every Socket.IO
    client in the process to orjson: a Python client beside an app in the same process (the in-process
    tests) could no longer send NaN or integers beyond 64 bits."""

    json = _Json


def _token(auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    return None


def _origin(edge: str, environ: dict[str, Any]) -> Origin:
    """Where a connect came from: the ASGI scope's client (python-socketio's REMOTE_ADDR is a constant)."""
    client = environ.get("asgi.scope", {}).get("client")
    return Origin(edge, client[0] if client else None)


async def _admitted(lookup: Awaitable[T]) -> T:
    """Who the connect's token names; an unknown token refuses the connection (the client sees
    `unauthorized`; an address that keeps failing, `too many failed attempts`)."""
    try:
        return await lookup
    except TooManyFailures:
        raise socketio.exceptions.ConnectionRefusedError("too many failed attempts") from None
    except Unauthorized:
        raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None


def _refusal(error: str, retry: bool) -> dict[str, Any]:
    """The ack of a fix event that stored nothing: `retry` says whether the same batch may succeed later."""
    return {"accepted": 0, "duplicates": 0, "rejected": [], "error": error, "retry": retry}


def busy_ack(exc: Busy) -> dict[str, Any]:
    """A `retry` ack that also says how long to wait (`retry_after_ms`, an extension of the contract)."""
    ack = _refusal(str(exc), retry=True)
    ack["retry_after_ms"] = round(exc.retry_after_s * 1000)
    return ack


class DeviceNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Devices stream fixes here, each as itself: the device comes from the token, never the payload."""

    def __init__(self, core: Callable[[], Core], metrics: Metrics) -> None:
        super().__init__(DEVICE_NS)
        self._core = core
        self._metrics = metrics
        self._devices: dict[str, Device] = {}

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = _token(auth)
        device = await _admitted(self._core().auth.device(token, _origin(DEVICE_NS, environ)))
        # Counted with the registration, before any await: `on_disconnect` undoes both, also when
        # something below fails after the connection was accepted.
        self._devices[sid] = device
        self._core().presence.connected(device.id)
        self._metrics.connected_devices.inc()
        self._core().sessions.opened(DEVICE, device.id, sid, str(token))
        await self.enter_room(sid, device_room(device.id))
        core = self._core()
        if core.settings.redis_url:  # processes share devices: another one may have moved this one on
            await core.geofences.take([device.id])
        log.info("device connected device=%s fleet=%s", device.id, device.fleet)
        # Last, with no await after it: the pump's first emit must follow the CONNECT packet, which
        # python-socketio queues as soon as this handler returns.
        core.messages.attach(device, sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        device = self._devices.pop(sid, None)
        if device is None:
            return
        self._core().sessions.closed(sid)
        self._core().messages.detach(device.id, sid)
        self._core().presence.disconnected(device.id)
        self._metrics.connected_devices.dec()
        log.info("device disconnected device=%s", device.id)

    async def on_fix(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Store a fix event and ack it after COMMIT. Over websocket, overload and the connection's bound
        of events in flight were checked on the frame, before this (`tracker.socket_gate`)."""
        device = self._devices.get(sid)
        if device is None:
            return _refusal("not connected as a device", retry=True)
        try:
            # The connection took the device's fence state when it connected: no refresh per event.
            done = await self._core().ingestor.accept(device, data, refresh_state=False)
        except Busy as exc:
            return busy_ack(exc)
        except InvalidInput as exc:
            return _refusal(str(exc), retry=False)
        except Exception:  # a bug must still answer the device, which then retries
            log.exception("fix event failed device=%s", device.id)
            return _refusal("internal error; retry", retry=True)
        result = done.result
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": done.rejected,
            "flagged": done.flagged,
        }

    async def on_send(self, sid: str, data: Any = None) -> dict[str, Any]:
        """A device's own message: acked with its id once committed; the same `client_id` again answers the
        same id."""
        device = self._devices.get(sid)
        if device is None:
            return {"ok": False, "error": "not connected as a device", "retry": True}
        try:
            body, client_id = parse_device_send(data)
            message = await self._core().messages.receive(device, body, client_id)
        except InvalidInput as exc:
            return {"ok": False, "error": str(exc), "retry": False}
        except Busy as exc:  # beyond the device's message rate: nothing was stored
            return {
                "ok": False,
                "error": str(exc),
                "retry": True,
                "retry_after_ms": round(exc.retry_after_s * 1000),
            }
        except Exception:  # storage down or a bug: nothing was stored, or it was and a retry finds it
            log.exception("send failed device=%s", device.id)
            return {"ok": False, "error": "the message could not be stored; retry", "retry": True}
        return {"ok": True, "id": message.id}


class ViewerNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Dispatchers subscribe to fleets, devices or boxes and receive coalesced positions."""

    def __init__(self, core: Callable[[], Core], metrics: Metrics) -> None:
        super().__init__(VIEWER_NS)
        self._core = core
        self._metrics = metrics
        self._viewers: dict[str, Viewer] = {}

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and "share" in auth:  # a share link: its one device, nothing else
            await _admitted(self._core().shares.admit(sid, auth["share"], _origin(VIEWER_NS, environ)))
            return
        token = _token(auth)
        viewer = await _admitted(self._core().auth.viewer(token, _origin(VIEWER_NS, environ)))
        self._viewers[sid] = viewer
        if viewer is not ADMIN:  # the admin token comes from the settings: nothing to revoke
            self._core().sessions.opened(VIEWER, viewer.name, sid, str(token), viewer.expires_ts)
        self._metrics.connected_viewers.inc()
        log.info("viewer connected viewer=%s", viewer.name)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._core().shares.closed(sid)
        if self._viewers.pop(sid, None) is not None:
            self._core().sessions.closed(sid)
            self._metrics.connected_viewers.dec()

    async def _plan(self, sid: str, data: Any, leaving: bool) -> Subscription | dict[str, Any]:
        """The subscription a payload asks for, or the error ack to answer with."""
        viewer = self._viewers.get(sid)
        if viewer is None:
            return {"ok": False, "error": "not connected as a viewer"}
        core = self._core()
        try:
            return await plan_subscription(
                viewer, data, core.index, core.db, leaving=leaving, shared=core.sync is not None
            )
        except (InvalidInput, Forbidden) as exc:
            return {"ok": False, "error": str(exc)}

    async def on_subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        shares = self._core().shares
        if shares.holds(sid):
            return await shares.subscribe(sid, data)
        plan = await self._plan(sid, data, leaving=False)
        if isinstance(plan, dict):
            return plan
        for room in plan.rooms:
            await self.enter_room(sid, room)
        await self.emit("positions", [p.to_json() for p in plan.snapshot], to=sid)
        return {"ok": True}

    async def on_send(self, sid: str, data: Any = None) -> dict[str, Any]:
        viewer = self._viewers.get(sid)
        if viewer is None:
            return {"ok": False, "error": "not connected as a viewer"}
        try:
            device_id, body = parse_send(data)
            core = self._core()
            device = await core.auth.visible_device(viewer, device_id)
            message = await core.messages.send(viewer, device, body)
        except (InvalidInput, Forbidden, NotFound) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "id": message.id}

    async def on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        plan = await self._plan(sid, data, leaving=True)
        if isinstance(plan, dict):
            return plan
        for room in plan.rooms:
            await self.leave_room(sid, room)
        return {"ok": True}


def build_server(redis_url: str | None, cors_origins: str) -> socketio.AsyncServer:
    """The Socket.IO server; with a Redis URL, rooms are shared between processes (`tracker.redis_rooms`);
    either way a client's rooms are indexed (`tracker.room_index`)."""
    manager = RedisRooms(redis_url) if redis_url else LocalRooms()
    origins: str | list[str] = (
        "*" if cors_origins.strip() == "*" else [o.strip() for o in cors_origins.split(",")]
    )
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        serializer=_Packet,
        cors_allowed_origins=origins,
        max_http_buffer_size=MAX_MESSAGE_BYTES,
    )


class ViewerRooms:
    """The broadcaster's transport: the `/viewer` namespace's rooms."""

    def __init__(self, sio: socketio.AsyncServer, shared: bool, *, here_only: bool = False) -> None:
        self._sio = sio
        self._shared = shared  # with Redis, listeners may be in another process
        self._here_only = here_only

    def here(self) -> ViewerRooms:
        """The same rooms, but emits reach this process's viewers only (not through Redis): for moves that
        only this process missed (`tracker.livesync`'s catch-up)."""
        return ViewerRooms(self._sio, shared=False, here_only=True)

    def listening(self, room: str) -> bool:
        return self._shared or bool(self._sio.manager.rooms.get(VIEWER_NS, {}).get(room))

    async def emit(self, event: str, data: Any, room: str | list[str]) -> None:
        await self._sio.emit(event, data, to=room, namespace=VIEWER_NS, ignore_queue=self._here_only)

    async def disconnect(self, conn: str) -> None:
        """Close one viewer connection (its token was revoked or expired)."""
        await self._sio.disconnect(conn, namespace=VIEWER_NS)


class DeviceRooms:
    """The notifier's way to devices: each device's connections share the room `device:<id>`."""

    def __init__(self, sio: socketio.AsyncServer, shared: bool) -> None:
        self._sio = sio
        self._shared = shared

    def listening(self, room: str) -> bool:
        return self._shared or bool(self._sio.manager.rooms.get(DEVICE_NS, {}).get(room))

    async def emit(self, event: str, data: Any, room: str | list[str]) -> None:
        await self._sio.emit(event, data, to=room, namespace=DEVICE_NS)

    async def disconnect(self, conn: str) -> None:
        """Close one device connection (its token was revoked or re-keyed)."""
        await self._sio.disconnect(conn, namespace=DEVICE_NS)

    async def deliver(
        self, conn: str, payload: dict[str, Any], on_ack: Callable[..., Awaitable[None]]
    ) -> None:
        """A `message` to one connection, whose Socket.IO ack calls `on_ack`."""
        await self._sio.emit("message", payload, to=conn, namespace=DEVICE_NS, callback=on_ack)
