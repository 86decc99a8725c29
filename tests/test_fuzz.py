"""Property tests: whatever a device sends, it gets an answer, and only InvalidInput-type errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import Server, add_device, now_ms, uid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.errors import InvalidInput
from tracker.validation import parse_batch

NOW = 1_795_000_000_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
numbers = st.integers(-(10**20), 10**20) | st.floats()
fixes = st.fixed_dictionaries(
    {},
    optional={
        "lat": numbers | json_values,
        "lon": numbers | json_values,
        "ts": st.integers(NOW - 10**12, NOW + 10**9) | st.text(max_size=30) | json_values,
        "speed": numbers,
        "heading": numbers,
        "accuracy": numbers,
        "altitude": numbers,
        "battery": numbers,
        "attrs": json_values,
    },
)
payloads = fixes | st.lists(fixes | json_values, max_size=8) | json_values


@given(payloads)
@settings(max_examples=600, deadline=None)
def test_any_payload_is_parsed_or_refused_with_invalid_input(payload: Any) -> None:
    try:
        good, rejected = parse_batch(payload, "d", "f", NOW)
    except InvalidInput:
        return
    count = 1 if isinstance(payload, dict) else len(payload)
    assert len(good) + len(rejected) == count
    assert all(isinstance(r["error"], str) and r["error"] for r in rejected)
    for f in good:
        assert -90 <= f.lat <= 90 and -180 <= f.lon <= 180


@pytest.mark.timeout(300)
async def test_the_server_acks_every_payload(server: Server) -> None:
    import socketio

    _, token = await add_device(server, uid("fleet"))
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(server.url, namespaces=["/device"], auth={"token": token}, transports=["websocket"])
    loop = asyncio.get_running_loop()
    answers: list[Any] = []

    @given(payloads)
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def send(payload: Any) -> None:
        if isinstance(payload, dict) and isinstance(payload.get("ts"), int):
            payload["ts"] = now_ms() - 1000  # often valid, so the write path runs too
        future = asyncio.run_coroutine_threadsafe(
            sio.call("fix", payload, namespace="/device", timeout=20), loop
        )
        answers.append(future.result(30))

    try:
        await asyncio.to_thread(send)
    finally:
        await sio.disconnect()
    assert answers and all(isinstance(a, dict) and "accepted" in a for a in answers)
