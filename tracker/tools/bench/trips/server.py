"""`tracker bench trips`, whole server: a real `tracker serve` holding 10,000 active trips, with devices
sending single-fix events over Socket.IO as phones do, with and without trips of their own.

Policy: TRIPS - SENDERS idle devices with one active trip each are written to the scratch database
before the server starts (it loads every active trip), so the server holds about TRIPS trips throughout.
SENDERS devices connect once and send one fix per event in a closed loop (the next after the ack); in
B runs each sender has a trip of its own (POST /api/trips, cancelled before the next A run), in A runs
none. Runs go ABBA ABBA. The figure is the server's CPU per acked fix (its /proc times over the run), A
against B: this process is the load and takes most of the machine, so fixes/s follow its CPU too.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import socketio

from tracker.store import Database
from tracker.tools.bench.procfs import proc_cpu_s
from tracker.tools.bench.report import BenchError, progress
from tracker.tools.bench.server import FLEET, admin_headers, register_devices, start_server
from tracker.tools.server_process import ServerProcess

M_PER_DEG = 111_277.0
FIX_STEP_MS = 25


async def seed_idle_trips(db_url: str, count: int) -> None:
    """`count` idle devices (never sending) with one active trip each, written before the server starts."""
    db = await Database.connect(db_url)
    try:
        now = int(time.time() * 1000)
        await db.pool.execute(
            "INSERT INTO devices (id, fleet) SELECT 'idle-' || g, $2 FROM generate_series(0, $1 - 1) g",
            count,
            FLEET,
        )
        await db.pool.execute(
            """
            INSERT INTO trips (device_id, fleet, status, dest_lat, dest_lon, radius_m, approach_m, created_by,
                               created_ts, expires_ts)
            SELECT id, fleet, 'started', 53.0, 13.4, 50, 1000, 'bench', $1::bigint, $1::bigint + 86400000
            FROM devices WHERE id LIKE 'idle-%'
            """,
            now,
        )
    finally:
        await db.close()


def measure_server(db_url: str, folder: Path, trips: int, senders: int, seconds: float) -> dict[str, Any]:
    """Start the server on `db_url` (seeded with `trips - senders` idle trips) and run ABBA ABBA."""
    asyncio.run(seed_idle_trips(db_url, trips - senders))
    server = start_server(db_url, folder)
    try:
        ids = [f"sender-{i}" for i in range(senders)]
        tokens = asyncio.run(register_devices(server, ids))
        runs = asyncio.run(_runs(server, ids, tokens, seconds))
        server.check_alive()
        errors = server.log_error_lines()
    finally:
        server.stop()
    pairs = [(runs[k], runs[k + 1]) for k in range(0, len(runs), 2)]
    ratios = sorted(
        (b if b["own_trips"] else a)["server_cpu_us_per_fix"]
        / (a if b["own_trips"] else b)["server_cpu_us_per_fix"]
        for a, b in pairs
    )
    base = statistics.median(r["server_cpu_us_per_fix"] for r in runs if not r["own_trips"])
    with_trips = statistics.median(r["server_cpu_us_per_fix"] for r in runs if r["own_trips"])
    return {
        "trips_held": trips,
        "senders": senders,
        "seconds_per_run": seconds,
        "runs": runs,
        "server_cpu_us_per_fix_no_trips": round(base, 1),
        "server_cpu_us_per_fix_with_trips": round(with_trips, 1),
        "cpu_pair_ratios": [round(r, 3) for r in ratios],
        "trip_cpu_share": round(statistics.median(ratios) - 1, 3),
        "server_error_lines": errors,
        "note": "trip_cpu_share: extra server CPU per fix when every sender has a trip, median over pairs",
    }


async def _runs(
    server: ServerProcess, ids: list[str], tokens: list[str], seconds: float
) -> list[dict[str, Any]]:
    clients = []
    for token in tokens:
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(server.url, namespaces=["/device"], auth={"token": token}, transports=["websocket"])
        clients.append(sio)
    runs = []
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=admin_headers(server), timeout=30) as http:
            trip_ids: list[str] = []
            clock = [int(time.time() * 1000) - 2 * 3_600_000]  # fix times: two hours back, moving on
            for i, own in enumerate([False, True, True, False] * 2):
                if own and not trip_ids:
                    for device in ids:
                        r = await http.post(
                            "/api/trips", json={"device": device, "destination": {"lat": 53.0, "lon": 13.4}}
                        )
                        if r.status_code != 201:
                            raise BenchError(f"creating a trip failed: {r.status_code} {r.text:.200}")
                        trip_ids.append(r.json()["id"])
                if not own and trip_ids:
                    for trip in trip_ids:
                        await http.post(f"/api/trips/{trip}/cancel")
                    trip_ids = []
                progress(
                    f"server run {i + 1} of 8: {len(ids)} senders, {'a trip each' if own else 'no trip'}"
                )
                runs.append({"own_trips": own, **await _load(server, clients, seconds, clock)})
    finally:
        for sio in clients:
            await sio.disconnect()
    return runs


async def _load(
    server: ServerProcess, clients: list[socketio.AsyncClient], seconds: float, clock: list[int]
) -> dict[str, Any]:
    """Every client sends single-fix events in a closed loop for `seconds`; acked fixes and server CPU."""
    acked = 0
    stop = time.monotonic() + seconds

    async def device(k: int, sio: socketio.AsyncClient) -> None:
        nonlocal acked
        lon = 13.0 + k * 1e-3
        while time.monotonic() < stop:
            # FIX_STEP_MS of fix time per fix across all devices: each device's fixes come about every
            # senders x FIX_STEP_MS (5 s for 200), moving north at 10 m/s.
            clock[0] += FIX_STEP_MS
            lat = 52.5 + (clock[0] % 86_400_000) / 1000 * 10 / M_PER_DEG
            ack = await sio.call(
                "fix", {"lat": lat, "lon": lon, "ts": clock[0], "speed": 10.0}, namespace="/device"
            )
            acked += int(ack.get("accepted", 0))

    cpu = proc_cpu_s(server.pid)
    started = time.perf_counter()
    await asyncio.gather(*(device(k, sio) for k, sio in enumerate(clients)))
    wall = time.perf_counter() - started
    cpu_after = proc_cpu_s(server.pid)
    if cpu is None or cpu_after is None or not acked:
        raise BenchError("no server CPU time or no acked fix to measure")
    return {
        "acked_fixes": acked,
        "fixes_per_s": round(acked / wall),
        "server_cpu_s": round(cpu_after - cpu, 2),
        "server_cpu_us_per_fix": round((cpu_after - cpu) / acked * 1e6, 1),
    }
