"""The embedded PostGIS cluster, run for real with the machine's PostgreSQL binaries (no mocks)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tracker.embedded_db import EmbeddedPostgres, default_data_dir, server_settings
from tracker.errors import EmbeddedDatabaseError
from tracker.postgres_install import find_bin_dir

pytestmark = pytest.mark.timeout(120)

try:
    find_bin_dir(None)
    HAVE_POSTGRES = True
except EmbeddedDatabaseError:
    HAVE_POSTGRES = False
needs_postgres = pytest.mark.skipif(not HAVE_POSTGRES, reason="no PostgreSQL server binaries")
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder the `postgres` OS user can traverse (pytest's tmp_path is under a root-only one)."""
    path = Path(tempfile.mkdtemp(prefix="tracker-pg-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        # Safety net: never leave a server running, whatever a test did.
        pg_ctl = str(find_bin_dir(None) / "pg_ctl") if HAVE_POSTGRES else "pg_ctl"
        user = "postgres" if IS_ROOT else None
        for pid_file in path.rglob("postmaster.pid"):
            stop = [pg_ctl, "stop", "-m", "immediate", "-w", "-D", str(pid_file.parent)]
            subprocess.run(stop, capture_output=True, cwd=pid_file.parent, user=user, group=user)
        shutil.rmtree(path, ignore_errors=True)


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _query(url: str, sql: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


@needs_postgres
def test_first_start_creates_cluster_with_postgis_and_stop_ends_it(workdir: Path) -> None:
    db = EmbeddedPostgres(workdir / "pg")
    try:
        url = db.start()
        assert db.created and db.started
        assert url == db.url == f"postgresql://tracker@/tracker?host={workdir / 'pg'}&port=5432"
        assert _query(url, "SELECT postgis_version()")
        assert _query(url, "SHOW listen_addresses") == ""  # socket only, no TCP port
        for name, value in server_settings().items():  # tuned for the load, durability untouched
            if value.endswith("B"):  # PostgreSQL shows sizes in its own unit: compare bytes
                same = f"SELECT pg_size_bytes(current_setting('{name}')) = pg_size_bytes('{value}')"
                assert _query(url, same), name
            else:
                assert _query(url, f"SHOW {name}") == value, name
        assert _query(url, "SHOW synchronous_commit") == "on" and _query(url, "SHOW fsync") == "on"
    finally:
        db.stop()
    assert not db.started
    assert not (workdir / "pg" / "postmaster.pid").exists()
    with pytest.raises(OSError):
        _query(url, "SELECT 1")
    db.stop()  # idempotent


@needs_postgres
def test_second_start_reuses_cluster_and_keeps_data(workdir: Path) -> None:
    first = EmbeddedPostgres(workdir / "pg")
    try:
        url = first.start()
        _query(url, "CREATE TABLE kept AS SELECT 42 AS answer")
    finally:
        first.stop()
    second = EmbeddedPostgres(workdir / "pg")
    with second as url2:
        assert not second.created and second.started
        assert _query(url2, "SELECT answer FROM kept") == 42
    assert not second.started
    assert not (workdir / "pg" / "postmaster.pid").exists()


@needs_postgres
def test_server_already_running_is_reused_and_left_running(workdir: Path) -> None:
    owner = EmbeddedPostgres(workdir / "pg")
    try:
        url = owner.start()
        guest = EmbeddedPostgres(workdir / "pg")
        assert guest.start() == url
        assert not guest.started and not guest.created
        guest.stop()
        assert _query(url, "SELECT 1") == 1
    finally:
        owner.stop()


@needs_postgres
def test_killed_server_leaves_nothing_that_blocks_a_restart(workdir: Path) -> None:
    crashed = EmbeddedPostgres(workdir / "pg")
    url = crashed.start()
    _query(url, "CREATE TABLE kept AS SELECT 7 AS answer")
    pid = int((workdir / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)  # its stale postmaster.pid stays; it may linger as a zombie
    deadline = time.monotonic() + 10
    while _process_state(pid) not in ("Z", "gone") and time.monotonic() < deadline:
        time.sleep(0.05)
    crashed.stop()  # the server is gone: nothing to do, and no 60 s wait on a zombie
    again = EmbeddedPostgres(workdir / "pg")
    with again as url2:
        assert again.started and not again.created
        assert _query(url2, "SELECT answer FROM kept") == 7


@needs_postgres
def test_other_database_name_is_created(workdir: Path) -> None:
    with EmbeddedPostgres(workdir / "pg", database='odd "name"') as url:
        assert _query(url, "SELECT current_database()") == 'odd "name"'
        assert _query(url, "SELECT postgis_version()")


def test_missing_binaries_say_what_to_install(workdir: Path) -> None:
    empty = workdir / "bin"
    empty.mkdir()
    with pytest.raises(EmbeddedDatabaseError, match="apt-get install") as err:
        EmbeddedPostgres(workdir / "pg", bin_dir=empty).start()
    assert str(empty) in str(err.value)


@needs_postgres
def test_missing_postgis_says_what_to_install(workdir: Path) -> None:
    # Binaries linked into a folder with no PostGIS share dir beside it (and no pg_config).
    fake_bin = workdir / "usr" / "lib" / "postgresql" / "15" / "bin"
    fake_bin.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "postgres"):
        (fake_bin / tool).symlink_to(find_bin_dir(None) / tool)
    with pytest.raises(EmbeddedDatabaseError, match=r"apt-get install -y postgresql-\d+-postgis-3"):
        EmbeddedPostgres(workdir / "pg", bin_dir=fake_bin).start()


@needs_postgres
@pytest.mark.skipif(not IS_ROOT, reason="the unreachable-folder check applies when running as root")
def test_folder_the_server_user_cannot_reach_is_named(workdir: Path) -> None:
    locked = workdir / "locked"
    locked.mkdir(mode=0o700)
    locked.chmod(0o700)
    with pytest.raises(EmbeddedDatabaseError, match="/var/lib/tracker") as err:
        EmbeddedPostgres(locked / "pg").start()
    assert f"cannot enter {locked} " in str(err.value)


@needs_postgres
@pytest.mark.skipif(not IS_ROOT, reason="the OS user is chosen only when running as root")
def test_unknown_os_user_is_named(workdir: Path) -> None:
    with pytest.raises(EmbeddedDatabaseError, match="no-such-tracker-user"):
        EmbeddedPostgres(workdir / "pg", os_user="no-such-tracker-user").start()


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_DATA_DIR", "/srv/tracker-pg")
    assert default_data_dir() == Path("/srv/tracker-pg")
    monkeypatch.delenv("TRACKER_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", "/home/u/.data")
    expected = Path("/var/lib/tracker/postgres") if IS_ROOT else Path("/home/u/.data/tracker/postgres")
    assert default_data_dir() == expected
