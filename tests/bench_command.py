"""`tracker bench ...` as the bench tests run it: the real command as a subprocess, its scratch database on
the test PostgreSQL server, its report read back from both stdout and `--out`, which must agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import ROOT


def run_bench(
    bench: str, pg_base: str, tmp_path: Path, *, timeout: float = 120, **flags: object
) -> dict[str, Any]:
    """Run `python -m tracker bench BENCH` with `flags` (`warmup=1` is `--warmup 1`, `closed_loop=True` is
    `--closed-loop`) on the server of `pg_base`; assert it exits 0 and prints the report it wrote to
    `tmp_path/report.json`; return that report."""
    out = tmp_path / "report.json"
    argv = [sys.executable, "-m", "tracker", "bench", bench]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    argv += ["--database-url", pg_base, "--out", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    return report
