"""Serving the app: one process, or N worker processes on one port (`tracker serve --workers N`).

Policy:
- N > 1 runs under uvicorn's own supervisor (`workers=N`), not one of ours: the parent binds the listening
  socket once and spawns N workers, each of which builds its app with `tracker.app:create_app_from_env`;
  it restarts a worker that dies, stops the parent when one fails to start, and on SIGTERM or Ctrl-C stops
  every worker (each drains its ingest queue, within the graceful timeout) before it returns. One socket
  shared by every worker, not SO_REUSEPORT (a socket per worker, connections spread by a hash of their
  addresses, which would need a supervisor of our own): measured with 3,000 websockets opened 1, 50 or
  1,000 at a time against 2 workers, the shared socket spread them 54/46, 50/50 and 50/50, SO_REUSEPORT
  51/49, 48/52 and 49/51. The kernel hands a new connection to a worker waiting in accept(), so a
  stalled worker takes none (with SO_REUSEPORT it keeps its share, and a dead worker's queued
  connections are reset); a small burst can land mostly on one worker (40 at once: 34/6).
- Workers get everything through `TRACKER_*` variables: the settings given by flags or the environment,
  the database URL (the embedded cluster's, which the parent started once) and the Redis URL, without
  which the workers would not share rooms: with none configured, a private `redis-server`
  (`tracker/private_redis.py`) started before the workers and stopped after them.
- Engine.IO long-polling needs every request of a session to reach one process, which one port shared by
  N processes cannot promise: with N > 1 it is refused (`tracker.app._WebSocketOnly`).
- Thousands of sockets need file descriptors: the soft limit is raised to the hard one at start-up.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

from tracker.errors import ConfigError, PrivateRedisError, TrackerError
from tracker.settings import Settings

log = logging.getLogger("tracker.supervisor")

APP_FACTORY = "tracker.app:create_app_from_env"
# How long the supervisor waits for a worker's health-check answer before it kills the worker as hung.
# uvicorn's default (5 s) is shorter than a worker's longest stall (a full collection over 10,000+
# connections, or the graceful drain), and a kill drops every connection of that worker.
HEALTHCHECK_TIMEOUT_S = 30
_NR_OPEN = "/proc/sys/fs/nr_open"


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it); return the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses more than fs.nr_open
        try:
            with open(_NR_OPEN) as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1_048_576
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def check(settings: Settings) -> None:
    """ConfigError, before anything starts, when N workers would have no way to share rooms."""
    if settings.workers > 1 and settings.redis_url is None:
        from tracker.private_redis import find_redis_server

        try:
            find_redis_server()
        except PrivateRedisError as exc:
            raise ConfigError(
                f"--workers {settings.workers}: the workers share Socket.IO rooms through Redis, and {exc} "
                "(or set TRACKER_REDIS_URL / --redis-url to a Redis server)"
            ) from None


def uvicorn_options(settings: Settings, log_config: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's keyword arguments for these settings, in one place for `serve` and `demo`."""
    from tracker.app import UVICORN_OPTIONS

    return {
        "host": settings.host,
        "port": settings.port,
        "backlog": settings.backlog,
        "limit_concurrency": settings.limit_concurrency,
        "log_config": log_config,
        **UVICORN_OPTIONS,
    }


def worker_env(settings: Settings, database_url: str, redis_url: str | None) -> dict[str, str]:
    """The `TRACKER_*` variables from which each worker rebuilds these settings (flags included)."""
    env = {
        f"TRACKER_{name.upper()}": str(getattr(settings, name))
        for name in settings.model_fields_set
        if getattr(settings, name) is not None
    }
    env["TRACKER_DATABASE_URL"] = database_url
    if redis_url is not None:
        env["TRACKER_REDIS_URL"] = redis_url
    return env


def serve(settings: Settings, database_url: str, log_config: dict[str, Any]) -> None:
    """Serve until SIGTERM or Ctrl-C: in this process, or in `settings.workers` worker processes."""
    import uvicorn

    options = uvicorn_options(settings, log_config)
    if settings.workers == 1:
        from tracker.app import create_app

        uvicorn.run(create_app(settings, database_url), **options)
        return
    check(settings)
    from tracker.private_redis import PrivateRedis

    private = PrivateRedis() if settings.redis_url is None else None
    redis_url = private.start() if private is not None else settings.redis_url
    try:
        os.environ.update(worker_env(settings, database_url, redis_url))
        config = uvicorn.Config(
            APP_FACTORY,
            factory=True,
            workers=settings.workers,
            timeout_worker_healthcheck=HEALTHCHECK_TIMEOUT_S,
            **options,
        )
        _run_workers(config)
    finally:
        if private is not None:
            private.stop()


def _run_workers(config: Any) -> None:
    """uvicorn's supervisor over `config.workers` processes, until it stops; TrackerError if a worker
    could not start (its own log lines say why)."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    try:
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        raise TrackerError(f"worker process {failed[0]} failed to start (see its log lines above)")
