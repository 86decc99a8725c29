"""`tracker demo`, as the README's first command runs it: embedded PostGIS, the server, the fleet rules
and simulated couriers from sample_tracks/, for a short run."""

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

import httpx
import pytest
from harness import ROOT, Client, free_port

from tracker.errors import EmbeddedDatabaseError
from tracker.postgres_install import find_bin_dir

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


@pytest.mark.skipif(not HAVE_POSTGRES, reason="no PostgreSQL server binaries")
@pytest.mark.timeout(240)
async def test_the_demo_serves_the_map_and_moves_devices(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATA_DIR"] = str(data_dir)
    log = tmp_path / "demo.log"
    with log.open("wb") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "tracker", "demo", "--port", str(port), "--devices", "8", "--speed", "30"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines, reader = _lines(demo.stdout)
    try:
        deadline = time.monotonic() + 120  # initdb and the first start of the cluster take a while
        banner = ""
        while "map:" not in banner:
            assert demo.poll() is None, f"demo exited with {demo.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no map URL within 120 s:\n{log.read_text()[-3000:]}"
            try:
                banner += lines.get(timeout=0.5)
            except queue.Empty:
                pass
        match = re.search(r"map:\s+(http://\S+)/\?token=(\S+)", banner)
        assert match, banner
        base, token = match.groups()
        assert base == f"http://127.0.0.1:{port}"
        assert "8 simulated devices" in banner and "couriers" in banner and "vans" in banner

        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get("/", params={"token": token})
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            r = await http.get("/api/geofences", headers={"Authorization": f"Bearer {token}"})
            assert {f["properties"]["id"] for f in r.json()["features"]} >= {
                "depot-wedding",
                "government-quarter",
            }

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
            while len(moved) < 4 and asyncio.get_running_loop().time() < stop_at:
                for p in await viewer.next("positions", timeout=30):
                    seen = newest.setdefault(p["device"], [])
                    if seen and p["ts"] > seen[-1]:
                        moved.add(p["device"])
                    seen.append(p["ts"])
            assert len(moved) >= 4, newest
            assert {d.split("-")[0] for d in moved} <= {"courier", "van"}
        finally:
            await viewer.sio.disconnect()

        async with httpx.AsyncClient(base_url=base) as http:
            h = {"Authorization": f"Bearer {token}"}
            devices = (await http.get("/api/devices", headers=h)).json()["devices"]
            assert len(devices) == 8 and sum(d["online"] for d in devices) == 8
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        reader.join(timeout=10)  # the pipe is at its end once the demo exited
        assert demo.stdout is not None
        demo.stdout.close()
    text = log.read_text()
    assert "Traceback" not in text and "Warning" not in text, text[-3000:]
    assert not (data_dir / "postmaster.pid").exists(), "the demo left its PostGIS cluster running"
