"""`tracker replay` end to end: real tracks streamed over Socket.IO into a real server, then read back over
HTTP; the CLI as a subprocess; lost acks, a killed server and a rate limit, with every fix stored once."""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import (
    REALDATA,
    ROOT,
    Client,
    Server,
    add_device,
    create_database,
    drop_database,
    free_port,
    now_ms,
    start_server,
    uid,
    viewer_client,
    web_client,
)
from viewers import device_and_viewer

from tracker.errors import Unauthorized
from tracker.tools.replay import Replayer, ReplayStats, ServerUnreachable
from tracker.tools.trackfile import TrackFile, read_track

TRACKS = REALDATA / "tracks"
PLT_1HZ = TRACKS / "geolife/020/20111130151807.plt"  # 327 fixes, 1 s apart
PLT_LONG_1HZ = TRACKS / "geolife/008/20081024132624.plt"  # 1098 fixes, 1 s apart
PLT_LONG = TRACKS / "geolife/001/20081024234405.plt"  # 7075 fixes, mostly 5 s apart
GPX = TRACKS / "gpxpy/cerknicko-jezero.gpx"  # 296 fixes in 8 segments, with elevations
GPX_SPEEDS = TRACKS / "gps-wizard/GT31_1Hz_GEORG30MICHA_932000175_20220411_111600.gpx"  # speed, course
SAMPLE_TRACKS = ROOT / "sample_tracks"
DEADLINE_S = 60.0

pytestmark = pytest.mark.skipif(not TRACKS.is_dir(), reason=f"no real tracks at {TRACKS}")


# --- helpers -----------------------------------------------------------------------------------------


async def stored(server: Server, viewer: str, device: str) -> list[dict[str, Any]]:
    """Every stored fix of `device` (oldest first) via `/positions`, all pages."""
    features: list[dict[str, Any]] = []
    cursor = None
    window = {"from": 946_684_800_001, "to": now_ms() + 600_000, "limit": 10_000}
    async with web_client(base_url=server.url, timeout=30) as http:
        while True:
            r = await http.get(
                f"/api/devices/{device}/positions",
                params=window | ({"cursor": cursor} if cursor else {}),
                headers={"Authorization": f"Bearer {viewer}"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            features += body["features"]
            cursor = body["next_cursor"]
            if cursor is None:
                return features


def assert_stored_as(features: list[dict[str, Any]], track: TrackFile, times: list[int]) -> None:
    """`features` are exactly the fixes of `track`, at `times`, with their coordinates and values."""
    assert [f["properties"]["ts"] for f in features] == times
    assert [f["geometry"]["coordinates"] for f in features] == [
        [lon, lat] for lon, lat in zip(track.lon.tolist(), track.lat.tolist(), strict=True)
    ]
    for name, column in track.optional.items():
        for feature, value in zip(features, column.tolist(), strict=True):
            got = feature["properties"][name]
            assert got is None if math.isnan(value) else got == pytest.approx(value), (name, got, value)


def retimed(track: TrackFile, speed: float) -> list[int]:
    """The replay's time offsets of `track`'s fixes, for tracks whose steps stay apart at `speed`."""
    rel = [math.floor((t - int(track.ts[0])) / speed) for t in track.ts.tolist()]
    assert all(b > a for a, b in zip(rel, rel[1:], strict=False))
    return rel


def assert_replayed(
    features: list[dict[str, Any]], track: TrackFile, replayer: Replayer, speed: float
) -> None:
    """`features` are exactly `track` as `replayer` played it at `speed`, retimed from its start."""
    assert_stored_as(features, track, [replayer.schedule.start_ms + r for r in retimed(track, speed)])


async def replaying(
    url: str, token: str, track: TrackFile, acks: int
) -> tuple[Replayer, asyncio.Task[ReplayStats]]:
    """A replay of `track` to `url` at 25x, running, once at least `acks` of its fixes are accepted."""
    replayer = Replayer(url, token, [track], speed=25)
    task = asyncio.create_task(replayer.run())
    await wait_until(lambda: replayer.stats.accepted >= acks, "the first acks")
    return replayer, task


async def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll `condition` (a function, or a coroutine function) until it is true, for at most `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not ((await result) if inspect.isawaitable(result := condition()) else result):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def cli(*args: str, timeout: float = DEADLINE_S) -> tuple[int, str, str]:
    """Run `python -m tracker replay ARGS`; return (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker", "replay", *args, cwd=ROOT, stdout=-1, stderr=-1, env=os.environ
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def plt_head(tmp_path: Path, source: Path, n: int) -> Path:
    """The first `n` fixes of a GeoLife file as a file of its own (header kept)."""
    lines = source.read_text().splitlines(keepends=True)
    path = tmp_path / f"head-{n}-{source.name}"
    path.write_text("".join(lines[: 6 + n]))
    return path


# --- the library -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "n"), [(PLT_1HZ, 327), (GPX, 296), (GPX_SPEEDS, 300)])
async def test_backlog_stores_exactly_the_fixes_retimed_to_end_just_before_now(
    server: Server, path: Path, n: int
) -> None:
    track = read_track(path).head(n)
    device, token, viewer = await device_and_viewer(server)
    before = now_ms()
    replayer = Replayer(server.url, token, [track], backlog=True)
    stats = await asyncio.wait_for(replayer.run(), DEADLINE_S)
    after = now_ms()
    assert (stats.sent, stats.accepted, stats.duplicates, stats.rejected, stats.retried) == (n, n, 0, 0, 0)
    start = replayer.schedule.start_ms
    times = [start + r for r in retimed(track, 1.0)]
    assert before - 1000 <= times[-1] <= after - 1000  # the last fix lands one second before now
    assert_stored_as(await stored(server, viewer, device), track, times)


async def test_speed_plays_the_track_compressed_as_the_fixes_fall_due(server: Server) -> None:
    speed = 60.0
    track = read_track(PLT_LONG_1HZ).head(301)  # 300 s of track: 5 s at 60x
    device, token, viewer = await device_and_viewer(server)
    before = now_ms()
    replayer = Replayer(server.url, token, [track], speed=speed)
    stats = await asyncio.wait_for(replayer.run(), DEADLINE_S)
    rel = retimed(track, speed)
    assert stats.accepted == len(track) and stats.rejected == 0
    assert stats.seconds >= rel[-1] / 1000 * 0.95  # paced, not sent in one burst
    start = replayer.schedule.start_ms
    assert before <= start <= before + 2000
    assert_stored_as(await stored(server, viewer, device), track, [start + r for r in rel])


async def test_several_files_play_one_after_another_as_one_device(server: Server) -> None:
    first, second = read_track(PLT_1HZ).head(40), read_track(GPX).head(30)
    device, token, viewer = await device_and_viewer(server)
    replayer = Replayer(server.url, token, [first, second], backlog=True)
    stats = await asyncio.wait_for(replayer.run(), DEADLINE_S)
    assert stats.accepted == 70
    start = replayer.schedule.start_ms
    one = [start + r for r in retimed(first, 1.0)]
    two = [one[-1] + 1000 + r for r in retimed(second, 1.0)]  # one second after the first file ends
    features = await stored(server, viewer, device)
    assert_stored_as(features[:40], first, one)
    assert_stored_as(features[40:], second, two)


async def test_loop_continues_each_round_after_the_last_until_cancelled(server: Server) -> None:
    track = read_track(PLT_1HZ).head(10)  # 9 s of track
    device, token, viewer = await device_and_viewer(server)
    replayer = Replayer(server.url, token, [track], speed=100, loop=True)
    task = asyncio.create_task(replayer.run())
    await wait_until(lambda: replayer.stats.accepted >= 25, "two and a half rounds")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = replayer.stats
    assert stats.total is None and stats.rejected == 0 and stats.duplicates == 0
    features = await stored(server, viewer, device)
    assert len(features) == stats.accepted  # every acked fix stored; nothing sent unacked
    times = [f["properties"]["ts"] for f in features]
    rel = retimed(track, 100)
    period = rel[-1] + 10  # a round, then 1 s of track time at 100x
    start = replayer.schedule.start_ms
    assert times == [start + (i // 10) * period + rel[i % 10] for i in range(len(times))]
    lons = [f["geometry"]["coordinates"][0] for f in features]
    assert lons == [track.lon[i % 10] for i in range(len(times))]


async def test_a_refused_token_and_an_unreachable_server_are_clear_errors(server: Server) -> None:
    track = read_track(PLT_1HZ).head(5)
    with pytest.raises(Unauthorized, match=r"refused the device token \(unauthorized\)"):
        await Replayer(server.url, "not-a-token", [track]).run()
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=f"cannot connect to {url}"):
        await Replayer(url, "any", [track]).run()


# --- the CLI -----------------------------------------------------------------------------------------


async def test_cli_replays_files_and_prints_a_summary(server: Server, tmp_path: Path) -> None:
    plt = plt_head(tmp_path, PLT_1HZ, 100)
    device, token, viewer = await device_and_viewer(server)
    status, out, err = await cli(str(plt), str(GPX), "--url", server.url, f"--token={token}", "--backlog")
    assert status == 0, err
    assert re.fullmatch(
        r"sent 396 fixes: 396 accepted, 0 duplicates, 0 rejected; 0 batches retried; 0 messages; "
        r"\d+\.\d s\n",
        out,
    ), out
    assert f"{plt}: 100 points over 1.6 min from 2011-11-30T15:18:07.000Z" in err
    assert len(await stored(server, viewer, device)) == 396


async def test_cli_exits_1_with_a_clear_message_for_a_wrong_token_or_a_broken_file(
    server: Server, tmp_path: Path
) -> None:
    status, out, err = await cli(str(PLT_1HZ), "--url", server.url, "--token", "wrong", "--quiet")
    assert (status, out, err) == (
        1,
        "",
        f"tracker: the server at {server.url} refused the device token (unauthorized)\n",
    )
    broken = tmp_path / "broken.csv"
    broken.write_text("ts,lat,lon\n1764151200000,52.5,13.4\n1764151201000,52.5,east\n")
    _, token = await add_device(server, uid("fleet"))
    status, out, err = await cli(str(broken), "--url", server.url, f"--token={token}")
    assert (status, out, err) == (1, "", f"tracker: {broken}:3: lon must be a number; got 'east'\n")


async def test_cli_reports_rejected_fixes_and_exits_1(server: Server, tmp_path: Path) -> None:
    future = now_ms() + 86_400_000  # a day ahead: the server refuses these with --keep-times
    path = tmp_path / "future.csv"
    path.write_text("ts,lat,lon\n" + "".join(f"{future + i * 1000},52.5,13.4\n" for i in range(3)))
    device, token, viewer = await device_and_viewer(server)
    status, out, err = await cli(
        str(path), "--url", server.url, f"--token={token}", "--keep-times", "--backlog"
    )
    assert status == 1
    assert out.startswith("sent 3 fixes: 0 accepted, 0 duplicates, 3 rejected;")
    assert "tracker: 3 fixes rejected; first: fix ts=" in err and "ahead of the server clock" in err
    assert await stored(server, viewer, device) == []


async def test_cli_stops_cleanly_on_sigterm(server: Server) -> None:
    device, token, viewer = await device_and_viewer(server)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "replay",
        str(PLT_1HZ),
        "--url",
        server.url,
        f"--token={token}",
        "--speed",
        "5",
        cwd=ROOT,
        stdout=-1,
        stderr=-1,
    )

    async def some_stored() -> bool:
        if process.returncode is not None:
            out, err = await process.communicate()
            raise AssertionError(f"replay ended early with {process.returncode}: {out!r} {err!r}")
        return len(await stored(server, viewer, device)) >= 5

    await wait_until(some_stored, "the first fixes")
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 128 + signal.SIGTERM, err
    summary = re.fullmatch(
        r"sent (\d+) fixes: (\d+) accepted, 0 duplicates, 0 rejected; .* s \(stopped\)\n", out.decode()
    )
    assert summary, out
    accepted = int(summary[2])
    assert 5 <= accepted < 327 and int(summary[1]) == accepted  # the last ack was waited for
    assert len(await stored(server, viewer, device)) == accepted


# --- retries -----------------------------------------------------------------------------------------


class Relay:
    """A TCP relay between a replayer and a server, which a test can point elsewhere (or nowhere), cut,
    or have swallow the server's bytes (so that acks are lost on the way)."""

    def __init__(self, target: Server | None) -> None:
        self.target = target
        self.swallow = False
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Close every relayed connection."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self.target
        if target is None:
            writer.close()
            return
        host, _, port = target.url.removeprefix("http://").partition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_server: bool) -> None:
        try:
            while data := await src.read(65536):
                if not (from_server and self.swallow):
                    dst.write(data)
                    await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
            self._writers.discard(dst)


async def test_a_batch_whose_ack_is_lost_is_sent_again_and_stored_once(server: Server) -> None:
    track = read_track(PLT_1HZ).head(150)
    device, token, viewer = await device_and_viewer(server)
    async with Relay(server) as relay:
        replayer, task = await replaying(relay.url, token, track, 20)
        relay.swallow = True

        async def stored_but_not_acked() -> bool:
            return len(await stored(server, viewer, device)) > replayer.stats.acked

        await wait_until(stored_but_not_acked, "a batch stored whose ack was swallowed")
        lost = len(await stored(server, viewer, device)) - replayer.stats.acked
        relay.cut()
        relay.swallow = False
        stats = await asyncio.wait_for(task, DEADLINE_S)
    # The lost batch went again, unchanged: the server counted it as duplicates, and nothing else.
    assert lost >= 1 and stats.retried >= 1 and stats.duplicates == lost
    assert stats.accepted + stats.duplicates == len(track) and stats.rejected == 0
    assert_replayed(await stored(server, viewer, device), track, replayer, 25)


@pytest.fixture
async def private_db(pg_base: str) -> AsyncIterator[str]:
    url = await create_database(pg_base, "replay")
    yield url
    await drop_database(pg_base, url)


async def test_replay_carries_on_through_a_server_killed_and_restarted(
    private_db: str, tmp_path: Path
) -> None:
    track = read_track(PLT_1HZ).head(200)  # 8 s at 25x
    first = await asyncio.to_thread(start_server, private_db, tmp_path / "a")
    try:
        device, token, viewer = await device_and_viewer(first)
        async with Relay(first) as relay:
            replayer, task = await replaying(relay.url, token, track, 40)
            relay.target = None
            await asyncio.to_thread(first.stop, signal.SIGKILL)
            relay.cut()
            acked_before = replayer.stats.acked
            second = await asyncio.to_thread(start_server, private_db, tmp_path / "b")
            relay.target = second
            try:
                stats = await asyncio.wait_for(task, DEADLINE_S)
                features = await stored(second, viewer, device)
            finally:
                await asyncio.to_thread(second.stop)
    finally:
        await asyncio.to_thread(first.stop)
    assert acked_before < len(track)  # the server died mid-replay
    assert stats.accepted + stats.duplicates == len(track) and stats.rejected == 0
    assert_replayed(features, track, replayer, 25)


async def test_a_rate_limited_batch_is_retried_with_backoff(private_db: str, tmp_path: Path) -> None:
    limits = {"TRACKER_DEVICE_RATE": "400", "TRACKER_DEVICE_BURST": "1000"}
    limited = await asyncio.to_thread(start_server, private_db, tmp_path, limits)
    try:
        track = read_track(PLT_LONG).head(1500)  # 1000 at once, the rest at 400/s
        device, token, viewer = await device_and_viewer(limited)
        replayer = Replayer(limited.url, token, [track], backlog=True, batch=500)
        stats = await asyncio.wait_for(replayer.run(), DEADLINE_S)
        features = await stored(limited, viewer, device)
    finally:
        await asyncio.to_thread(limited.stop)
    assert stats.retried >= 1 and stats.accepted == 1500 and stats.duplicates == 0 and stats.rejected == 0
    assert_replayed(features, track, replayer, 1.0)


# --- messages ----------------------------------------------------------------------------------------


async def test_a_message_to_the_device_is_acked_counted_and_handed_over(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token, viewer = await device_and_viewer(server, fleet)
    received: list[dict[str, Any]] = []
    replayer = Replayer(server.url, token, [read_track(PLT_1HZ)], speed=2, on_message=received.append)
    task = asyncio.create_task(replayer.run())
    try:
        await wait_until(lambda: replayer.stats.accepted >= 1, "the replay to start")
        dispatcher = await viewer_client(server, viewer, clients)
        ack = await dispatcher.call("send", {"device": device, "body": {"text": "come back"}})
        assert ack["ok"] is True, ack
        await wait_until(lambda: len(received) == 1, "the message")
        assert received[0]["id"] == ack["id"] and received[0]["body"] == {"text": "come back"}
        assert replayer.stats.messages == 1

        async def state() -> str:
            async with web_client(base_url=server.url) as http:
                r = await http.get(
                    f"/api/devices/{device}/messages", headers={"Authorization": f"Bearer {viewer}"}
                )
            return str(r.json()["messages"][0]["state"])

        deadline = asyncio.get_running_loop().time() + 10
        while await state() != "acked" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert await state() == "acked"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- every sample track ------------------------------------------------------------------------------


def _sample_tracks() -> list[Path]:
    if not SAMPLE_TRACKS.is_dir():
        return []
    return [p for p in sorted(SAMPLE_TRACKS.iterdir()) if p.suffix in (".gpx", ".csv", ".geojson")]


def _fleet(path: Path) -> str:
    for prefix, fleet in (("courier-", "couriers"), ("van-", "vans")):
        if path.name.startswith(prefix):
            return fleet
    return uid("fleet")


@pytest.mark.parametrize("path", _sample_tracks(), ids=lambda p: p.name)
async def test_every_sample_track_replays(server: Server, path: Path) -> None:
    track = read_track(path)
    device, token, viewer = await device_and_viewer(server, _fleet(path))
    replayer = Replayer(server.url, token, [track], backlog=True)
    stats = await asyncio.wait_for(replayer.run(), DEADLINE_S)
    assert stats.accepted == len(track) and stats.rejected == 0, stats.errors
    rel = (track.ts - track.ts[0]).tolist()
    times = [replayer.schedule.start_ms + r for r in rel]
    assert_stored_as(await stored(server, viewer, device), track, times)
    assert bool(np.all(np.diff(track.ts) > 0))
