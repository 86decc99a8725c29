"""What every bench report is made of: its error, its progress lines, the machine facts, rounded figures
and percentiles, and the JSON it ends as.

Policy: progress goes to stderr as `bench: ...` lines, the report to stdout (and to `--out`); a figure is
rounded as it goes into the report, and a figure that could not be measured is None, never 0. Each
bench states the machine it ran on, because its numbers mean little without it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tracker.errors import TrackerError

DEFAULT_BASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class BenchError(TrackerError, RuntimeError):
    """The benchmark could not run: the database, the server or the load generator failed."""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def machine_facts() -> dict[str, Any]:
    """What every benchmark report says about the machine it ran on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_report(report: dict[str, Any], out: str | None) -> str:
    """The report as indented JSON, also written to the file `out` when given."""
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
        progress(f"report written to {out}")
    return text


def rounded(x: float | None, digits: int = 3) -> float | None:
    """`x` rounded to `digits`, None staying None."""
    return None if x is None else round(x, digits)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
