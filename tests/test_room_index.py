"""`tracker.room_index` keeps python-socketio's rooms exactly as the upstream manager does: random
sequences of connects, joins, leaves, room closes and disconnects leave both managers with the same rooms,
callbacks and pending lists, and the index answers each client's rooms as the upstream scan does."""

from __future__ import annotations

from typing import Any

import socketio
from hypothesis import given, settings
from hypothesis import strategies as st
from socketio.base_manager import BaseManager

from tracker.room_index import LocalRooms

NAMESPACES = ["/device", "/viewer"]
SIDS = [f"s{i}" for i in range(6)]
ROOMS = ["fleet:a", "fleet:b", "device:1", "all"]

operation = st.one_of(
    st.tuples(st.just("connect"), st.sampled_from(SIDS), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("connected"), st.sampled_from(SIDS), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("enter"), st.sampled_from(SIDS), st.sampled_from(NAMESPACES), st.sampled_from(ROOMS)),
    st.tuples(st.just("leave"), st.sampled_from(SIDS), st.sampled_from(NAMESPACES), st.sampled_from(ROOMS)),
    st.tuples(st.just("close"), st.sampled_from(ROOMS), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("callback"), st.sampled_from(SIDS)),
    st.tuples(st.just("pre_disconnect"), st.sampled_from(SIDS), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("disconnect"), st.sampled_from(SIDS), st.sampled_from(NAMESPACES)),
)


def apply(manager: socketio.AsyncManager, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "connect":
        _, sid, ns = op
        if manager.eio_sid_from_sid(sid, ns) is None:
            manager.basic_enter_room(sid, ns, None, eio_sid=f"e-{sid}")
            manager.basic_enter_room(sid, ns, sid, eio_sid=f"e-{sid}")
            manager.pending_connect.setdefault(ns, []).append(sid)
    elif kind == "connected":
        _, sid, ns = op
        if manager.is_pre_connected(sid, ns):
            BaseManager.connect(manager, sid, ns)  # AsyncManager.connect only awaits this
    elif kind == "enter":
        _, sid, ns, room = op
        if manager.eio_sid_from_sid(sid, ns) is not None:
            manager.basic_enter_room(sid, ns, room)
    elif kind == "leave":
        _, sid, ns, room = op
        manager.basic_leave_room(sid, ns, room)
    elif kind == "close":
        _, room, ns = op
        manager.basic_close_room(room, ns)
    elif kind == "callback":
        manager._generate_ack_id(op[1], lambda *a: None)
    elif kind == "pre_disconnect":
        _, sid, ns = op
        if manager.is_connected(sid, ns):
            manager.pre_disconnect(sid, ns)
    else:
        _, sid, ns = op
        manager.basic_disconnect(sid, ns)


def state(manager: socketio.AsyncManager) -> Any:
    rooms = {ns: {room: dict(members) for room, members in t.items()} for ns, t in manager.rooms.items()}
    return rooms, sorted(manager.callbacks), manager.pending_connect, manager.pending_disconnect


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_the_index_keeps_rooms_as_upstream_does(ops: list[tuple[Any, ...]]) -> None:
    upstream, indexed = socketio.AsyncManager(), LocalRooms()
    for op in ops:
        apply(upstream, op)
        apply(indexed, op)
        assert state(indexed) == state(upstream), op
    for ns in NAMESPACES:
        for sid in SIDS:
            assert sorted(indexed.get_rooms(sid, ns)) == sorted(upstream.get_rooms(sid, ns))
    # a client gone from every room is gone from the index too: nothing grows with churn
    for ns in NAMESPACES:
        for sid in SIDS:
            indexed.basic_disconnect(sid, ns)
    assert all(None not in table or not table[None] for table in indexed.rooms.values())
    assert indexed._member_of == {}
