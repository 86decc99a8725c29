"""Property tests: whatever a device sends, it gets an answer, and only InvalidInput-type errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import Server, add_device, now_ms, uid
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tracker.errors import InvalidInput
from tracker.validation import REAL_MAX, nul_at, parse_batch

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
# PostgreSQL refused these (`real` columns, jsonb), and the device was told to retry them for good.
@example({"lat": 52.5, "lon": 13.4, "ts": NOW, "altitude": 1e300})
@example({"lat": 52.5, "lon": 13.4, "ts": NOW, "attrs": {"note": "a\x00b"}})
def test_any_payload_is_parsed_or_refused_with_invalid_input(payload: Any) -> None:
    try:
        good, rejected = parse_batch(payload, "d", "f", NOW)
    except InvalidInput:
        return
    count = 1 if isinstance(payload, dict) else len(payload)
    assert len(good) + len(rejected) == count
    assert all(isinstance(r["error"], str) and r["error"] for r in rejected)
    for f in good:  # what validation keeps, PostgreSQL can store
        assert -90 <= f.lat <= 90 and -180 <= f.lon <= 180
        optional = (f.speed, f.heading, f.accuracy, f.altitude, f.battery)
        assert all(v is None or abs(v) <= REAL_MAX for v in optional)
        assert f.attrs is None or nul_at(f.attrs, "attrs") is None


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


@given(st.text(max_size=40) | st.integers() | st.floats() | json_values)
@settings(max_examples=500, deadline=None)
def test_any_time_parameter_is_milliseconds_in_range_or_invalid_input(value: Any) -> None:
    from tracker.parse import MAX_TIME_MS, time_ms

    try:
        ms = time_ms(value, "from")
    except InvalidInput:
        return
    assert 0 <= ms <= MAX_TIME_MS


# Every GET endpoint with parameters, and the parameters it reads (plus one it doesn't).
ENDPOINTS = {
    "/api/devices/{device}/positions": ["from", "to", "limit", "cursor"],
    "/api/devices/{device}/trail": ["from", "to", "simplify", "format"],
    "/api/devices/{device}/stops": ["from", "to", "radius_m", "min_duration_s"],
    "/api/devices/{device}/trips": ["from", "to", "radius_m", "min_duration_s"],
    "/api/area": ["bbox", "fence", "from", "to"],
    "/api/nearby": ["lat", "lon", "radius_m", "limit"],
    "/api/events": ["device", "fence", "rule", "type", "from", "to", "limit", "cursor"],
    "/api/geofences/{device}/inside": ["from"],
}
values = (
    st.text(max_size=30)
    | st.integers(-(10**25), 10**25).map(str)
    | st.floats().map(str)
    | st.sampled_from(["13.3,52.4,13.5,52.6", "1,2,3", "gpx", "csv", "enter", "nan", "inf", "-0", "1e999"])
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_random_query_parameters_never_give_a_server_error(server: Server, path: str) -> None:
    import httpx
    from harness import ADMIN_TOKEN

    device, _ = await add_device(server, uid("fleet"))
    params = st.dictionaries(st.sampled_from([*ENDPOINTS[path], "unknown"]), values, max_size=5)
    statuses: list[int] = []

    @given(params, st.sampled_from([device, "nope", "x" * 70, "ü"]))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def query(query: dict[str, str], who: str) -> None:
        r = httpx.get(
            server.url + path.format(device=who),
            params=query,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=20,
        )
        assert r.status_code < 500, (query, who, r.text)
        if r.headers.get("content-type", "").startswith(("application/json", "application/geo+json")):
            assert "error" in r.json() or r.status_code == 200
        statuses.append(r.status_code)

    await asyncio.to_thread(query)
    assert 400 in statuses or 404 in statuses
