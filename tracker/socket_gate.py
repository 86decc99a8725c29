"""The admission gate: fix events refused at the websocket, before python-socketio spends anything on them.

Offered more events than it can parse, a Socket.IO server cannot answer in time by refusing in its
handlers: a refusal there has already cost the whole stack (Engine.IO and Socket.IO decoding, a task per
event, the ack through the socket's writer task), which is most of what taking the event costs, and it
waits its turn in the event loop behind every event read before it. Measured with `tracker bench fleet
--overload` (2,000 devices offered twice the capacity), refusals made in the handler came back after
6-17 s and the backlog grew for as long as the overload lasted.

So this ASGI middleware sits in front of python-socketio on every websocket connection. It reads each
text frame as Socket.IO's wire format (`42/device,<ack id>["fix",...]`, Engine.IO v4 message, Socket.IO v5
event) and answers a fix event itself, with the contract's `retry` ack written straight to the socket,
while the process is overloaded (loop lag, shutdown) or while the connection already has its bound of
fix events unanswered (`Ingestor.check_connection`; per connection, so shedding is fair across devices).
Everything else passes through untouched, and the acks going out retire the events in flight. A refused
frame skips the decoding, the task and the writer, and is answered at once rather than behind the
backlog; it still costs the frame read and the frame written, the larger part at 10,000 connections,
which is why the waits refusals name grow with the overload (`tracker.admission`).

Engine.IO long-polling connections are not gated here (they are HTTP requests); their fix events meet
the same process checks in the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tracker.errors import Busy
from tracker.sockets import busy_ack

DEVICE_EVENT = "42/device,"  # Engine.IO message + Socket.IO EVENT on /device, with an ack id next
DEVICE_ACK = "43/device,"  # the server's ack of one
DEVICE_CONNECT = "40/device,"  # the namespace was joined (outgoing), or asked for (incoming)
FIX_EVENT = '["fix"'

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def refusal_frame(ack_id: str, exc: Busy) -> str:
    """The text frame of the `retry` ack to the fix event `ack_id`, as python-socketio would write it."""
    return DEVICE_ACK + ack_id + orjson.dumps([busy_ack(exc)]).decode()


class _Connection:
    """One websocket's fix events in flight, by ack id, and the wrapped ASGI channels."""

    __slots__ = ("gate", "receive_raw", "send_raw", "inflight")

    def __init__(self, gate: AdmissionGate, receive: Receive, send: Send) -> None:
        self.gate = gate
        self.receive_raw = receive
        self.send_raw = send
        self.inflight: set[str] = set()

    async def receive(self) -> dict[str, Any]:
        """The next message for python-socketio; fix events refused here are answered, not passed on."""
        while True:
            message = await self.receive_raw()
            text = message.get("text")
            if text is None or not text.startswith(DEVICE_EVENT):
                return message
            end = text.find("[", 10)
            ack_id = text[10:end]
            if not ack_id.isdigit() or not text.startswith(FIX_EVENT, end):
                return message  # not a fix, or no ack asked for: nothing to answer with
            try:
                self.gate.check(len(self.inflight))
            except Busy as exc:
                await self.send_raw({"type": "websocket.send", "text": refusal_frame(ack_id, exc)})
                continue
            self.inflight.add(ack_id)
            return message

    async def send(self, message: dict[str, Any]) -> None:
        """Pass a message out; an ack retires its event, a namespace (re)join forgets the old ones."""
        text = message.get("text")
        if text is not None and text.startswith("4"):
            if text.startswith(DEVICE_ACK):
                self.inflight.discard(text[10 : text.find("[", 10)])
            elif text.startswith(DEVICE_CONNECT):
                self.inflight.clear()
        await self.send_raw(message)


class AdmissionGate:
    """ASGI middleware over the Socket.IO app: gates every websocket under `path`.

    `check(inflight)` raises Busy when a connection with `inflight` fix events unanswered may not send
    another (`Ingestor.check_connection`).
    """

    def __init__(self, app: Any, check: Callable[[int], None], path: str = "/socket.io") -> None:
        self._app = app
        self.check = check
        self._path = path

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not scope["path"].startswith(self._path):
            await self._app(scope, receive, send)
            return
        conn = _Connection(self, receive, send)
        await self._app(scope, conn.receive, conn.send)
