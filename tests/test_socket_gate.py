"""The admission gate reads Socket.IO frames on the websocket: fix events it refuses never reach the app,
everything else passes through untouched, and the app's acks retire the events in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tracker.errors import Busy
from tracker.socket_gate import AdmissionGate

FIX = '42/device,{id}["fix",{{"lat":1,"lon":2,"ts":3}}]'


class Wire:
    """Both ends of one websocket around the gate: frames in from the client, frames out to it, and
    the frames the app behind the gate received."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.to_client: list[str] = []
        self.to_app: asyncio.Queue[str] = asyncio.Queue()
        self.app_send: Any = None

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.app_send = send
        while True:
            message = await receive()
            await self.to_app.put(message["text"])

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.to_client.append(message["text"])

    def client_sends(self, text: str) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": text})


async def _run(busy: list[Busy | None], inflight_max: int = 2) -> tuple[Wire, asyncio.Task[None], list[int]]:
    refused: list[int] = []

    def check(inflight: int) -> None:
        if busy[0] is not None:
            raise busy[0]
        if inflight >= inflight_max:
            refused.append(inflight)
            raise Busy(f"{inflight} fix events of this connection wait for their acks; retry")

    wire = Wire()
    gate = AdmissionGate(wire.app, check)
    task = asyncio.ensure_future(gate({"type": "websocket", "path": "/socket.io/"}, wire.receive, wire.send))
    return wire, task, refused


async def test_fix_events_over_the_connection_bound_are_refused_at_the_frame() -> None:
    wire, task, refused = await _run([None])
    try:
        wire.client_sends(FIX.format(id=1))
        wire.client_sends(FIX.format(id=2))
        wire.client_sends(FIX.format(id=3))  # a third while two wait: refused by the gate
        wire.client_sends('42/device,4["hello",1]')  # not a fix: passes
        wire.client_sends('42/device,["fix",{"lat":1}]')  # no ack id: nothing to answer with, passes
        got = [await asyncio.wait_for(wire.to_app.get(), 5) for _ in range(4)]
        assert got == [
            FIX.format(id=1),
            FIX.format(id=2),
            '42/device,4["hello",1]',
            '42/device,["fix",{"lat":1}]',
        ]
        assert len(wire.to_client) == 1 and wire.to_client[0].startswith("43/device,3[")
        ack = orjson.loads(wire.to_client[0][len("43/device,3") :])[0]
        assert ack["accepted"] == 0 and ack["retry"] is True and ack["retry_after_ms"] > 0
        assert "2 fix events of this connection wait for their acks" in ack["error"]
        assert refused == [2]

        # The app's ack of event 1 retires it: the next fix passes.
        await wire.app_send({"type": "websocket.send", "text": '43/device,1[{"accepted":1}]'})
        wire.client_sends(FIX.format(id=5))
        assert await asyncio.wait_for(wire.to_app.get(), 5) == FIX.format(id=5)
        # Joining the namespace again forgets what the old session had in flight.
        await wire.app_send({"type": "websocket.send", "text": '40/device,{"sid":"x"}'})
        wire.client_sends(FIX.format(id=1))
        wire.client_sends(FIX.format(id=2))
        assert [await asyncio.wait_for(wire.to_app.get(), 5) for _ in range(2)] == [
            FIX.format(id=1),
            FIX.format(id=2),
        ]
    finally:
        task.cancel()


async def test_an_overloaded_process_refuses_every_fix_and_passes_the_rest() -> None:
    busy: list[Busy | None] = [Busy("server overloaded: it runs 300 ms behind; retry", 1.5)]
    wire, task, _ = await _run(busy)
    try:
        wire.client_sends(FIX.format(id=7))
        wire.client_sends('42/viewer,8["subscribe",{"fleet":"a"}]')
        assert await asyncio.wait_for(wire.to_app.get(), 5) == '42/viewer,8["subscribe",{"fleet":"a"}]'
        ack = orjson.loads(wire.to_client[0][len("43/device,7") :])[0]
        assert ack == {
            "accepted": 0,
            "duplicates": 0,
            "rejected": [],
            "error": "server overloaded: it runs 300 ms behind; retry",
            "retry": True,
            "retry_after_ms": 1500,
        }
        busy[0] = None  # the loop caught up
        wire.client_sends(FIX.format(id=9))
        assert await asyncio.wait_for(wire.to_app.get(), 5) == FIX.format(id=9)
    finally:
        task.cancel()


async def test_http_and_other_paths_are_not_wrapped() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: dict[str, Any]) -> None:
        return None

    gate = AdmissionGate(app, lambda inflight: None)
    await gate({"type": "http", "path": "/socket.io/"}, receive, send)
    await gate({"type": "websocket", "path": "/other"}, receive, send)
    assert seen == [(receive, send), (receive, send)]
