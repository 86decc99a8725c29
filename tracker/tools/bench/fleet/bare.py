"""The baseline of `tracker bench fleet`: a bare python-socketio server, the ceiling of the tracker's stack.

It holds the same sockets as the tracker (python-socketio's ASGI app under uvicorn with the tracker's
`UVICORN_OPTIONS`), and its `/device` namespace accepts every connection and answers every `fix` at once
with `{"accepted": n, "duplicates": 0, "rejected": []}`: no validation, no database, no broadcast. What
the tracker does beyond it (auth, validation, PostGIS commit, fences, live positions) is the difference
between the two in the same run.

The GC thresholds and first freeze of the tracker (`GcPolicy.apply()`) are applied here too, so that the
baseline is the best bare python-socketio does on this machine rather than one stalled by the default
collector. `--gc policy` also runs the tracker's periodic freeze (`GcPolicy.run`); while that step still
collected before freezing it stalled the bare server about every 5 s at 10,000 devices (ack p99 700 ms
against 17 ms with `apply` alone), which is why `apply` is the default here.

Run as `python -m tracker.tools.bench.fleet.bare --port P` (the bench starts it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

from tracker.gc_policy import GcPolicy

GC_MODES = ("policy", "apply", "default")


def gc_policy_name() -> str:
    """Where the baseline's collector policy comes from."""
    return "tracker.gc_policy"


def _start_gc_policy(tasks: set[asyncio.Task[None]], gc_mode: str) -> None:
    """Apply the tracker's GC policy (and, with `gc_mode` "policy", run its periodic freeze); "default"
    leaves CPython's collector as it is."""
    if gc_mode == "default":
        return
    policy = GcPolicy()
    policy.apply()
    if gc_mode == "policy":
        tasks.add(asyncio.get_running_loop().create_task(policy.run(), name="gc"))


def create_app(gc_mode: str = "apply") -> Any:
    """The ASGI app: python-socketio with a `/device` namespace that accepts everything."""
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi")
    tasks: set[asyncio.Task[None]] = set()

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    async def fix(sid: str, data: Any) -> dict[str, Any]:
        return {"accepted": len(data) if isinstance(data, list) else 1, "duplicates": 0, "rejected": []}

    sio.on("connect", connect, namespace="/device")
    sio.on("fix", fix, namespace="/device")

    def startup() -> None:
        _start_gc_policy(tasks, gc_mode)

    def shutdown() -> None:
        for task in tasks:
            task.cancel()

    return socketio.ASGIApp(sio, on_startup=startup, on_shutdown=shutdown)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the bare app on 127.0.0.1 (or `--host`) at `--port` until SIGTERM."""
    import uvicorn

    from tracker.app import UVICORN_OPTIONS

    parser = argparse.ArgumentParser(prog="python -m tracker.tools.bench.fleet.bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--gc",
        choices=GC_MODES,
        default="apply",
        help="apply: tracker.gc_policy.apply() (thresholds, one freeze after start-up); policy: that and "
        "its periodic freeze; default: CPython's",
    )
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.gc), host=args.host, port=args.port, log_level="warning", **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
