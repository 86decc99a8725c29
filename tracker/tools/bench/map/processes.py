"""CPU and memory by process, from /proc and getrusage: Playwright's and Chromium's processes by kind,
and the worker processes' own CPU and RSS."""

from __future__ import annotations

import os
from pathlib import Path

from tracker.tools.bench.base import CLK_TCK


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds) of every process readable in /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        comm = head.partition("(")[2]
        table[int(entry.name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def _chromium_kind(pid: int, comm: str) -> str:
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


def _browser_cpu(exclude: set[int]) -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU s) of this process's descendants (Playwright, Chromium) but those in `exclude`."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, tuple[str, float]] = {}
    stack = list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        if pid in exclude:
            continue
        _, comm, cpu = table[pid]
        found[pid] = (_chromium_kind(pid, comm), cpu)
        stack.extend(children.get(pid, []))
    return found


def _tree_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per kind between two `_browser_cpu` readings (a process born in between counts whole)."""
    kinds: dict[str, float] = {}
    for pid, (kind, cpu) in after.items():
        start = before[pid][1] if pid in before else 0.0
        kinds[kind] = kinds.get(kind, 0.0) + cpu - start
    return kinds


def _rss_mb() -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None
