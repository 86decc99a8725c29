"""CPU by process kind for the page: Playwright's driver and Chromium's processes (browser, renderer,
gpu-process, ...) below this one, read from /proc; and a worker's own RSS."""

from __future__ import annotations

import os
from pathlib import Path

from tracker.tools.bench.procfs import descendants, process_table, rss_bytes


def chromium_kind(pid: int, comm: str) -> str:
    """`driver` (Playwright's node), or Chromium's process type: browser, renderer, gpu-process, ..."""
    if comm.startswith("node"):
        return "driver"
    try:  # Chromium's children rewrite their command line as one string: split on spaces too
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return "other"
    for arg in args:
        if arg.startswith(b"--type="):
            return arg[7:].decode(errors="replace")
    return "browser"


def browser_cpu(exclude: set[int]) -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU s) of this process's descendants (Playwright, Chromium) but those in `exclude`
    and theirs."""
    table = process_table()
    found: dict[int, tuple[str, float]] = {}
    for pid in descendants(os.getpid(), table, skip=exclude):
        _, comm, cpu = table[pid]
        found[pid] = (chromium_kind(pid, comm), cpu)
    return found


def cpu_by_kind(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per kind between two `browser_cpu` readings (a process born in between counts whole)."""
    kinds: dict[str, float] = {}
    for pid, (kind, cpu) in after.items():
        start = before[pid][1] if pid in before else 0.0
        kinds[kind] = kinds.get(kind, 0.0) + cpu - start
    return kinds


def rss_mb() -> float | None:
    """This process's resident memory in MiB, None when /proc cannot tell."""
    found = rss_bytes()
    return None if found is None else found / 2**20
