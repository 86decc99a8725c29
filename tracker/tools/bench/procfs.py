"""What /proc and getrusage say about processes: CPU seconds, resident memory, open descriptors,
process trees, and the whole machine's busy and stolen CPU.

Policy: a process that is gone, or a file that cannot be read, gives None (or counts nothing in a sum),
never an error: benches read these while processes come and go. CPU is utime + stime; a process tree is
a root and every descendant alive now; RSS summed over processes counts shared pages once per process,
an upper bound.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of process `pid` in seconds, or None when it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is the state, the 3rd field of the file
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_s(pids: Iterable[int]) -> float:
    """User + system CPU seconds of `pids` (those that have exited count nothing)."""
    return sum(proc_cpu_s(pid) or 0.0 for pid in pids)


def self_cpu_s() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, steal) jiffies of all CPUs since boot; busy excludes idle, iowait and steal."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return user + nice + system + irq + softirq, steal


def process_table() -> dict[int, tuple[int, str, float]]:
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


def descendants(
    root: int, table: dict[int, tuple[int, str, float]] | None = None, skip: Iterable[int] = ()
) -> list[int]:
    """Every descendant of `root` in `table` (default: read now), not entering the subtrees of `skip`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in (process_table() if table is None else table).items():
        children.setdefault(ppid, []).append(pid)
    left_out = set(skip)
    found: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in left_out:
            continue
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def tree_pids(root: int) -> list[int]:
    """`root` and every descendant of it that is alive now."""
    return [root, *descendants(root)]


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of one process (default: this one), None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and its descendants, summed."""
    return sum(rss_bytes(pid) or 0 for pid in tree_pids(root))


def open_fds(pid: int) -> int | None:
    """Open file descriptors of one process (entries of /proc/<pid>/fd), None when it cannot be read."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def tree_open_fds(root: int) -> int:
    """Open file descriptors of `root` and its descendants, summed."""
    return sum(open_fds(pid) or 0 for pid in tree_pids(root))
