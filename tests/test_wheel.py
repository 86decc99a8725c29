"""The installable package: the wheel built from this tree (setup.py's build step bundles the built map, the
sample tracks and their fleet rules), installed with its dependencies into a fresh virtualenv, runs
`tracker demo` from a folder outside the checkout. This is what a newcomer's `pip install` gets: a missing
dependency, file or entry point fails here, not on their machine."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from harness import ROOT, create_database, drop_database, free_port, web_client

from tracker import __version__
from tracker.store.database import migration_names

pytestmark = pytest.mark.timeout(600)  # the first test builds and installs; pip may have to download
SOURCES = [
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "CHANGELOG.md",
    "tracker",
    "sample_tracks",
    "geofences",
    "web/dist",
]


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the files it is made of (the checkout stays untouched)."""
    assert (ROOT / "web" / "dist" / "index.html").is_file(), "build the map first: npm --prefix web run build"
    src = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "_bundled", ".built-*")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src)
    (built,) = out.glob("tracker-*.whl")
    return built


def clean_env(home: Path, bin_dir: Path | None = None) -> dict[str, str]:
    """The environment of a shell that never saw this checkout or its virtualenv."""
    drop = ("TRACKER_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["HOME"] = str(home)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its dependencies; its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    home = tmp_path_factory.mktemp("home")
    _run(sys.executable, "-m", "venv", "--clear", venv, env=clean_env(home))
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, env=clean_env(home))
    return venv / "bin"


def test_the_wheel_carries_the_map_the_tracks_the_rules_and_every_migration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = "tracker/_bundled/"
    assert f"{bundled}web/index.html" in names
    assert any(re.fullmatch(rf"{bundled}web/assets/main-\w+\.js", n) for n in names)
    for folder in ("sample_tracks", "geofences"):
        files = {p.name for p in (ROOT / folder).iterdir() if p.is_file()}
        assert {n.rsplit("/", 1)[1] for n in names if n.startswith(f"{bundled}{folder}/")} == files
    assert {f"tracker/store/migrations/{m}" for m in migration_names()} <= names
    assert "tracker/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "web/")) or ".built-" in n]
    assert wheel.name.startswith(f"tracker-{__version__}-")


def test_the_installed_command_says_its_version(installed: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path, installed)
    assert _run(installed / "tracker", "--version", cwd=tmp_path, env=env).strip() == f"tracker {__version__}"
    where = _run(installed / "python", "-c", "import tracker; print(tracker.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(installed.parent)), where  # the wheel's package, not the checkout's


@pytest.fixture
async def database(pg_base: str) -> AsyncIterator[str]:
    url = await create_database(pg_base, "wheel")
    yield url
    await drop_database(pg_base, url)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; each one still running is stopped (SIGTERM, then SIGKILL) at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.stdout is not None:
            p.stdout.close()


async def test_the_installed_demo_serves_the_map_the_rules_and_moving_couriers(
    installed: Path, database: str, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    elsewhere = tmp_path / "elsewhere"  # no sample_tracks/ or geofences/ here: the wheel's are used
    elsewhere.mkdir()
    port = free_port()
    log = tmp_path / "demo.log"
    command = [str(installed / "tracker"), "demo", "--port", str(port), "--devices", "4", "--speed", "30"]
    with log.open("w") as err:
        demo = subprocess.Popen(
            [*command, "--database-url", database],
            cwd=elsewhere,
            env=clean_env(tmp_path, installed),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    processes.append(demo)
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in demo.stdout or []:
            out.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    banner = ""
    deadline = time.monotonic() + 60
    while "map:" not in banner:
        assert demo.poll() is None, f"demo exited with {demo.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no map URL within 60 s:\n{log.read_text()[-3000:]}"
        try:
            banner += out.get(timeout=0.5)
        except queue.Empty:
            pass
    match = re.search(r"map:\s+(http://\S+)/\?token=(\S+)", banner)
    assert match, banner
    base, token = match.groups()

    rules = yaml.safe_load((ROOT / "geofences" / "berlin.yaml").read_text())
    async with web_client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        page = await http.get("/")
        assert page.status_code == 200 and 'id="tracker-config"' in page.text, page.text[:500]
        script = re.search(r'src="(/assets/main-\w+\.js)"', page.text)
        assert script, page.text[:1000]
        asset = await http.get(script[1])
        assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
        fences = (await http.get("/api/geofences")).json()["features"]
        assert {f["properties"]["id"] for f in fences} == {f["id"] for f in rules["fences"]}

        # The couriers (a process of their own, replaying the wheel's tracks) report within seconds.
        deadline = time.monotonic() + 45
        while True:
            devices = (await http.get("/api/devices")).json()["devices"]
            if len(devices) == 4 and all(d["last"] for d in devices):
                break
            assert demo.poll() is None, f"demo exited with {demo.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{devices}\n{log.read_text()[-3000:]}"
            await asyncio.sleep(0.5)

    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=60) is not None
    reader.join(timeout=10)
