"""`tracker bench map`: the dispatcher map in headless Chromium while thousands of devices move.

Two feeds of the page, each with the real `tracker serve` on a scratch database serving the page, the HTTP
API and the viewer's Socket.IO connection, and a viewer of all fleets registered through the admin API:

- `server` ("through the server"): N devices (4 fleets) are registered; a load generator in its own
  process (`--worker`: settings on stdin, one JSON line per command on stdout) holds N Socket.IO device
  connections and, on command, lets the first k of them send one fix per period each, staggered, moving
  around central Berlin. It never waits for an ack before the next tick, but a device with unacked fixes,
  or any device while too many are unacked, skips its tick (counted): an overloaded server shows as a
  lower acked rate, not as a queue without end. Every device is placed once before the page opens. What
  the page receives is what the server's ingest and broadcaster can carry next to Chromium.
- `redis` ("page at target rate"): only the source of `positions` events is synthetic. The server runs
  with `TRACKER_REDIS_URL` on a private `redis-server` started for the run on a free port (so the
  synthetic load never reaches another tracker's Redis) and a known `TRACKER_REDIS_NAMESPACE`, whose
  Socket.IO channel the feed emits on. A feed process (`--feed-worker`) emits through python-socketio's
  write-only `AsyncRedisManager` (its documented "emit from an external process"), every broadcast
  interval, ONE `positions` event to room `all` of `/viewer` (where a viewer of all fleets watching the
  whole world is) holding the newest position of each of the k devices that moved in that interval, in the
  contract's shape; devices walk as the load generator's do. After the page is live the feed emits one
  round of all N devices (the page frames them), then the runs as above.

Chromium (`tracker/tools/browser.py`) opens the map with the viewer's token, requests off the server's origin
(map tiles) blocked. Per window: frames counted with requestAnimationFrame, main-thread script time from
the DevTools Performance domain, the page's own `window.tracker.stats()`, the CPU of each process. The
baseline is the same page in the same run with nothing sent: an idle window before the runs and one right
after each loaded window. With `--clusters`, each loaded window is followed by one more with the same
devices sending and the map zoomed out to `CLUSTER_ZOOM` (the whole city in a few clusters, counted every
half second from the moving devices), reported as `clustered` with its ratios to the loaded window at the
framed (street-level, exact devices) view: what clustering costs or saves.

The pieces: `run` (the whole run and the report), `measure` (one feed: its page and windows), `sources`
(registering devices, starting the load generator or the feed), `page` (Chromium), `figures` and `summary`
(readings into the report and the table on stderr), `processes` (CPU by process), `workers`,
`load_generator`, `feed`, `walk` and `redis_server` (the child processes and what they run).
"""

from __future__ import annotations

import shutil

from tracker.tools.bench.flags import check_range, int_list
from tracker.tools.bench.map.run import run
from tracker.tools.bench.map.settings import FEEDS, MapSettings
from tracker.tools.bench.map.summary import print_summary
from tracker.tools.bench.report import DEFAULT_BASE_URL, BenchError, write_report
from tracker.tools.browser import require_playwright

__all__ = ["bench_map", "parse_counts", "parse_feeds"]


def bench_map(
    database_url: str | None,
    devices: str,
    seconds: float,
    warmup: float,
    rate: float,
    screenshot: str | None,
    out: str | None,
    feed: str = ",".join(FEEDS),
    clusters: bool = False,
) -> str:
    """Run the map benchmark; return its JSON report (also written to `out` when given)."""
    counts = parse_counts(devices)
    feeds = parse_feeds(feed)
    check_range("--seconds", seconds, 1, 600)
    check_range("--warmup", warmup, 0, 600)
    check_range("--rate", rate, 0.01, 10, " fixes/s per device")
    require_playwright()
    if "redis" in feeds and shutil.which("redis-server") is None:
        raise BenchError(
            "the redis feed starts a private redis-server, which is not on PATH: install it "
            "(apt-get install -y redis-server) or pass --feed server"
        )
    settings = MapSettings(counts, seconds, warmup, rate, screenshot, feeds, clusters)
    report = run(database_url or DEFAULT_BASE_URL, settings)
    text = write_report(report, out)
    print_summary(report)
    return text


def parse_counts(text: str) -> list[int]:
    """`"1000,10000"` -> [1000, 10000]; each between 1 and 20000."""
    return int_list("--devices", text, 1, 20_000, "1000,10000", "counts")


def parse_feeds(text: str) -> list[str]:
    """`"server,redis"` -> ["server", "redis"] (run in this order, whatever the order given)."""
    given = {part.strip() for part in text.split(",") if part.strip()}
    if not given or given - set(FEEDS):
        raise BenchError(f"--feed takes server, redis or both, comma-separated; got {text!r}")
    return [f for f in FEEDS if f in given]
