"""Which rooms each Socket.IO client is in, so that a disconnect costs its own rooms, not the server's.

python-socketio's manager keeps only room -> clients. To find a leaving client's rooms, its
`basic_disconnect` copies the namespace's whole room table and tests every room (5.18.1, the newest):
every client has a room of its own and a device room, so at 10,000 devices one disconnect walks about
20,000 rooms. When the server stops, uvicorn closes every socket and the 10,000 disconnects cost
O(clients x rooms): 22 of the 24 s a SIGTERM took at 10,000 devices were spent there (py-spy dumps
every second during `tracker bench storm --restarts sigterm`), and under churn each reconnect stalls
the loop for a few milliseconds.

`RoomIndex` keeps the reverse map (namespace, sid) -> rooms beside python-socketio's own, through the
three methods every room change goes through (`basic_enter_room`, `basic_leave_room`, `basic_close_room`
calls the second), and answers `basic_disconnect` and `get_rooms` from it. It is mixed into both managers
the server uses: `LocalRooms` (one process) and `tracker.redis_rooms.RedisRooms`.
"""

from __future__ import annotations

from typing import Any

import socketio


class RoomIndex:
    """A mixin for a python-socketio client manager: the rooms of each client, kept as they change."""

    rooms: dict[str, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._member_of: dict[tuple[str, str], set[str | None]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self._member_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        member_of = self._member_of.get((namespace, sid))
        if member_of is not None:
            member_of.discard(room)
            if not member_of:
                del self._member_of[(namespace, sid)]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        """The rooms `sid` is in, without the namespace's room of every client."""
        return [room for room in self._member_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """Forget `sid` in `namespace`: what the upstream method does, with the rooms read from the index."""
        if namespace not in self.rooms:
            return
        for room in list(self._member_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]


class LocalRooms(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    """The client manager of a process that shares its rooms with no other."""
