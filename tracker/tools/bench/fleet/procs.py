"""CPU and memory of a server and its children, read from /proc.

A server is counted as its whole process tree: with `tracker serve --workers N` the port is served by
several processes (and whatever they start beside them), and what the fleet costs is their sum. RSS is
summed too, so pages shared between the processes are counted once per process: an upper bound.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tracker.tools.bench.base import proc_cpu_s


def tree_pids(root: int) -> list[int]:
    """`root` and every descendant of it that is alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(text.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def cpu_s(pids: Iterable[int]) -> float:
    """User + system CPU seconds of `pids` (those that have exited count nothing)."""
    return sum(proc_cpu_s(pid) or 0.0 for pid in pids)


def rss_bytes(pid: int) -> int:
    """Resident memory of one process, 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and its descendants, summed."""
    return sum(rss_bytes(pid) for pid in tree_pids(root))
