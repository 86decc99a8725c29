"""`tracker demo`, as the README's first command runs it: embedded PostGIS, the server, the fleet rules
and simulated couriers from sample_tracks/, for a short run; then what a newcomer does next (add a device
of their own, start a second demo by mistake, stop it, start it again)."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import ROOT, Client, free_port, web_client

from tracker.cli import accounts_database
from tracker.embedded_db import EmbeddedPostgres
from tracker.errors import EmbeddedDatabaseError
from tracker.geo import distances_from_m
from tracker.postgres_install import find_bin_dir
from tracker.settings import load_settings
from tracker.tools.couriers import moving, nearest, rotated, start_index, underway
from tracker.tools.demo import plan
from tracker.tools.trackfile import read_track

try:
    find_bin_dir(None)
    HAVE_POSTGRES = True
except EmbeddedDatabaseError:
    HAVE_POSTGRES = False


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A folder the `postgres` OS user can traverse, for the demo's own cluster."""
    path = Path(tempfile.mkdtemp(prefix="tracker-demo-"))
    path.chmod(0o755)
    try:
        yield path / "pg"
    finally:
        pg_ctl = str(find_bin_dir(None) / "pg_ctl") if HAVE_POSTGRES else "pg_ctl"
        user = "postgres" if os.geteuid() == 0 else None
        for pid_file in path.rglob("postmaster.pid"):  # safety net; the demo should have stopped it
            stop = [pg_ctl, "stop", "-m", "immediate", "-w", "-D", str(pid_file.parent)]
            subprocess.run(stop, capture_output=True, cwd=pid_file.parent, user=user, group=user)
        shutil.rmtree(path, ignore_errors=True)


def _lines(stream: object) -> tuple[queue.Queue[str], threading.Thread]:
    """The stream's lines as they come, read by a thread (a pipe has no bounded readline)."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            out.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return out, reader


def test_every_planned_vehicle_drives_from_the_start() -> None:
    """Half of a shift is standing (loading, customers): each demo vehicle starts where it drives."""
    vehicles = plan(ROOT / "sample_tracks", 30)
    assert len({(v.file, v.start) for v in vehicles}) == 30  # copies of a file start in parts of their own
    lively = 0
    for v in vehicles:
        track = read_track(v.file)
        track = rotated(track, underway(track, v.start, v.span))
        driving = moving(track)
        assert driving[0], v
        first_minutes = (track.ts - track.ts[0]) < 180_000
        dt = np.diff(track.ts, append=track.ts[-1])
        lively += int(dt[first_minutes & driving].sum() > dt[first_minutes].sum() / 2)
    assert lively >= 27, lively


def test_a_vehicle_with_a_last_position_goes_on_from_the_nearest_point_of_its_track() -> None:
    """A restarted demo picks each vehicle up where it was; a position off its track (another track file
    under the same name) starts it where it drives instead."""
    v = plan(ROOT / "sample_tracks", 1)[0]
    track = read_track(v.file)
    k = len(track) * 2 // 3
    lat, lon = float(track.lat[k]) + 0.0002, float(track.lon[k])  # 22 m north of a fix
    resumed = start_index(track, v.start, v.span, (lat, lon))
    assert (
        distances_from_m(lat, lon, track.lat[resumed : resumed + 1], track.lon[resumed : resumed + 1])[0] < 30
    )
    assert nearest(track, lat + 0.05, lon) is None  # 5.5 km away: not where this track goes
    assert start_index(track, v.start, v.span, (lat + 0.05, lon)) == underway(track, v.start, v.span)
    assert start_index(track, v.start, v.span, None) == underway(track, v.start, v.span)


@pytest.mark.skipif(not HAVE_POSTGRES, reason="no PostgreSQL server binaries")
def test_accounts_go_to_the_running_demo_unless_serve_runs_or_told(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_DATA_DIR", str(data_dir))  # `tracker serve`'s; the demo's is beside it
    demo_dir = data_dir.with_name("demo")
    default = load_settings()
    assert accounts_database(default) == default  # no demo running: serve's, as ever
    with EmbeddedPostgres(demo_dir):
        assert accounts_database(default).data_dir == demo_dir
        told = load_settings(data_dir=str(data_dir.with_name("mine")))
        assert accounts_database(told) == told
        assert accounts_database(load_settings(database_url="postgresql:///x")).data_dir == data_dir
        with EmbeddedPostgres(data_dir):  # serve's runs too: it stays the default
            assert accounts_database(default) == default
    assert accounts_database(default) == default


def _demo(port: int, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    with log.open("ab") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "tracker", "demo", "--port", str(port), "--devices", "8", "--speed", "30"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines, _ = _lines(demo.stdout)
    return demo, lines


def _banner(demo: subprocess.Popen[str], lines: queue.Queue[str], log: Path) -> str:
    deadline = time.monotonic() + 120  # initdb and the first start of the cluster take a while
    banner = ""
    while "stop with Ctrl-C" not in banner:
        assert demo.poll() is None, f"demo exited with {demo.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no banner within 120 s:\n{log.read_text()[-3000:]}"
        try:
            banner += lines.get(timeout=0.5)
        except queue.Empty:
            pass
    return banner


def _stop(demo: subprocess.Popen[str], sig: int) -> None:
    demo.send_signal(sig)
    try:
        demo.wait(timeout=60)
    except subprocess.TimeoutExpired:
        demo.kill()
        demo.wait()
    assert demo.stdout is not None
    demo.stdout.close()


@pytest.mark.skipif(not HAVE_POSTGRES, reason="no PostgreSQL server binaries")
@pytest.mark.timeout(300)
async def test_the_demo_serves_the_map_and_moves_devices(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATA_DIR"] = str(data_dir)  # `tracker serve`'s cluster; the demo's is beside it
    demo_dir = data_dir.with_name("demo")
    log = tmp_path / "demo.log"
    demo, lines = _demo(port, env, log)
    try:
        banner = _banner(demo, lines, log)
        match = re.search(r"map:\s+(http://\S+)/\?token=(\S+)", banner)
        assert match, banner
        base, token = match.groups()
        assert base == f"http://127.0.0.1:{port}"
        assert "8 simulated devices" in banner and "couriers" in banner and "vans" in banner
        assert "tracker device add van-7 --fleet couriers\n" in banner, banner

        # A second demo on the same port says so in one line, and leaves the first one alone.
        second = subprocess.run(
            [sys.executable, "-m", "tracker", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second
        assert f"tracker: cannot listen on 127.0.0.1:{port}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.splitlines()) == 1, second.stderr

        async with web_client(base_url=base) as http:
            # The banner waits for the vehicles, so that their connection logs do not push it off screen.
            h = {"Authorization": f"Bearer {token}"}
            assert (
                sum(d["online"] for d in (await http.get("/api/devices", headers=h)).json()["devices"]) == 8
            )
            page = await http.get("/", params={"token": token})
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert '"overlay":"/map/overlay.geojson"' in page.text
            r = await http.get("/api/geofences", headers={"Authorization": f"Bearer {token}"})
            assert {f["properties"]["id"] for f in r.json()["features"]} >= {
                "depot-wedding",
                "government-quarter",
            }
            streets = (await http.get("/map/overlay.geojson")).json()
            assert [f["properties"]["main"] for f in streets["features"]] == [False, True]
            assert len(streets["features"][1]["geometry"]["coordinates"]) > 100

        # Devices move: each device's positions come with newer timestamps, at 30x speed within seconds.
        viewer = Client("/viewer")
        await viewer.sio.connect(
            base, namespaces=["/viewer"], auth={"token": token}, transports=["websocket"]
        )
        try:
            for fleet in ("couriers", "vans"):
                assert (await viewer.call("subscribe", {"fleet": fleet}))["ok"]
            newest: dict[str, list[int]] = {}
            moved: set[str] = set()
            stop_at = asyncio.get_running_loop().time() + 60
            while len(moved) < 6 and asyncio.get_running_loop().time() < stop_at:
                for p in await viewer.next("positions", timeout=30):
                    seen = newest.setdefault(p["device"], [])
                    if seen and p["ts"] > seen[-1]:
                        moved.add(p["device"])
                    seen.append(p["ts"])
            assert len(moved) >= 6, newest
            assert {d.split("-")[0] for d in moved} <= {"courier", "van"}
        finally:
            await viewer.sio.disconnect()

        # The README's next step: a device of one's own, registered while the demo runs, streams to it.
        added = subprocess.run(
            [sys.executable, "-m", "tracker", "device", "add", "van-7", "--fleet", "couriers"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        assert f"the demo is running: using its database ({demo_dir})" in added.stderr
        device = Client("/device")
        await device.sio.connect(
            base, namespaces=["/device"], auth={"token": added.stdout.strip()}, transports=["websocket"]
        )
        ack = await device.call("fix", {"lat": 52.52, "lon": 13.405, "ts": int(time.time() * 1000)})
        assert ack["accepted"] == 1, ack
        await device.close()

        async with web_client(base_url=base) as http:
            h = {"Authorization": f"Bearer {token}"}
            devices = (await http.get("/api/devices", headers=h)).json()["devices"]
            assert len(devices) == 9 and sum(d["online"] for d in devices) == 8
            assert (await http.get("/favicon.ico")).headers["content-type"] == "image/svg+xml"
    finally:
        # Ctrl-C, as a terminal that sends it to the demo alone (not its process group) would.
        _stop(demo, signal.SIGINT)
    text = log.read_text()
    assert "Traceback" not in text and "Warning" not in text, text[-3000:]
    assert "reconnecting" not in text, text[-3000:]
    assert demo.returncode == 130, demo.returncode
    assert not (demo_dir / "postmaster.pid").exists(), "the demo left its PostGIS cluster running"

    stopped_ms = int(time.time() * 1000)

    # Started again, it keeps its viewer token: a bookmarked map URL still works. Each vehicle goes on
    # from where it was, so that its trail does not jump across town over the short silence.
    demo, lines = _demo(port, env, log)
    try:
        assert f"?token={token}\n" in _banner(demo, lines, log)
        jumps = await _restart_jumps(base, token, stopped_ms, [v.id for v in plan(ROOT / "sample_tracks", 8)])
        # It goes on from the very fix it sent last (started afresh: 70-190 m away after a first run this
        # short, kilometres after minutes).
        assert len(jumps) == 8 and max(jumps.values()) < 25, jumps
    finally:
        _stop(demo, signal.SIGTERM)
    assert (demo_dir.with_name("demo-viewer.token").stat().st_mode & 0o777) == 0o600
    assert not (demo_dir / "postmaster.pid").exists(), "the demo left its PostGIS cluster running"


async def _restart_jumps(base: str, token: str, stopped_ms: int, devices: list[str]) -> dict[str, float]:
    """Per device, metres from its last fix before `stopped_ms` to its first after, once it has one."""
    jumps: dict[str, float] = {}
    h = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 60
    async with web_client(base_url=base, headers=h) as http:
        while len(jumps) < len(devices) and time.monotonic() < deadline:
            for d in set(devices) - set(jumps):
                url = f"/api/devices/{d}/positions"
                after = (await http.get(url, params={"from": stopped_ms, "limit": 1})).json()["features"]
                if not after:
                    continue
                window = {"from": stopped_ms - 600_000, "to": stopped_ms, "limit": 10_000}
                before = (await http.get(url, params=window)).json()["features"]
                assert before, d
                (lon0, lat0), (lon1, lat1) = (
                    before[-1]["geometry"]["coordinates"],
                    after[0]["geometry"]["coordinates"],
                )
                jumps[d] = float(distances_from_m(lat0, lon0, np.array([lat1]), np.array([lon1]))[0])
            await asyncio.sleep(0.5)
    return jumps
