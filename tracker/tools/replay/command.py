"""`tracker replay` on a terminal: each file described, a progress line while it runs, a summary, and
the exit status; SIGINT and SIGTERM stop the replay cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any, TextIO

from tracker.tools.replay.replayer import Replayer, ReplayStats, as_text
from tracker.tools.trackfile import read_track
from tracker.validation import MAX_BATCH

REDRAW_S = 0.1


def run_cli(args: argparse.Namespace) -> int:
    """`tracker replay`: 0 when every fix was stored, 1 when some were rejected, 128 + signal number
    when stopped by SIGINT or SIGTERM. Bad files and refused tokens raise TrackerError (exit 1)."""
    quiet: bool = getattr(args, "quiet", False)
    logging.basicConfig(format="tracker: %(message)s", level=logging.WARNING, stream=sys.stderr)
    tracks = [read_track(path) for path in args.files]
    if not quiet:
        for track in tracks:
            print(track.describe(), file=sys.stderr)
    total = None if getattr(args, "loop", False) else sum(len(t) for t in tracks)
    bar = ProgressLine(total, sys.stderr, shown=not quiet and sys.stderr.isatty())

    def progress(stats: ReplayStats) -> None:
        bar.update(stats.acked)

    def message(msg: dict[str, Any]) -> None:
        bar.write(f"message from {msg.get('from')}: {as_text(msg.get('body'))}", file=sys.stdout)

    replayer = Replayer(
        args.url,
        args.token,
        tracks,
        speed=args.speed,
        backlog=getattr(args, "backlog", False),
        loop=getattr(args, "loop", False),
        keep_times=getattr(args, "keep_times", False),
        batch=getattr(args, "batch", MAX_BATCH),
        on_progress=progress,
        on_message=message,
    )
    try:
        stopped_by = asyncio.run(_until_signal(replayer))
    finally:
        bar.close()
    stats = replayer.stats
    print(stats.summary() + (" (stopped)" if stopped_by else ""), flush=True)
    if stopped_by:
        return 128 + stopped_by
    if stats.rejected:
        print(f"tracker: {stats.rejected} fixes rejected; first: {'; '.join(stats.errors)}", file=sys.stderr)
        return 1
    return 0


async def _until_signal(replayer: Replayer) -> int:
    """Run the replayer; SIGINT or SIGTERM cancel it (a clean stop). Returns the signal number or 0."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(replayer.run())
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return received[0] if received else 0


class ProgressLine:
    """`1234/5000 fixes (25%), 310/s` redrawn in place on `stream` at most every REDRAW_S while `shown`
    (a terminal); lines written through `write` go above it."""

    def __init__(self, total: int | None, stream: TextIO, shown: bool) -> None:
        self.total, self.stream, self.shown = total, stream, shown
        self.done = 0
        self._started = self._drawn = time.monotonic()

    def update(self, done: int) -> None:
        self.done = done
        if self.shown and time.monotonic() - self._drawn >= REDRAW_S:
            self._draw()

    def write(self, line: str, file: TextIO) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")  # clear the progress line, print, draw it again below
            self.stream.flush()
        print(line, file=file, flush=True)
        if self.shown:
            self._draw()

    def close(self) -> None:
        if self.shown:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        elapsed = self._drawn - self._started
        count = (
            f"{self.done}/{self.total} fixes ({self.done / self.total:.0%})"
            if self.total
            else f"{self.done} fixes"
        )
        rate = f", {self.done / elapsed:.0f}/s" if elapsed > 0 else ""
        self.stream.write(f"\r\x1b[K{count}{rate}")
        self.stream.flush()
