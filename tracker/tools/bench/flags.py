"""Checking a bench's flags before anything starts: a BenchError names the flag, its range and what was
given, e.g. `--seconds must be between 1 and 600; got 0.5`.
"""

from __future__ import annotations

from tracker.tools.bench.report import BenchError


def check_range(flag: str, value: float, low: float, high: float, unit: str = "") -> None:
    """BenchError unless `low <= value <= high`; `unit` follows the range in the message."""
    if not low <= value <= high:
        raise BenchError(
            f"{flag} must be between {_shown(low)} and {_shown(high)}{unit}; got {_shown(value)}"
        )


def int_list(flag: str, text: str, low: int, high: int, example: str, noun: str) -> list[int]:
    """`"1000,10000"` -> [1000, 10000], each between `low` and `high`; `noun` names them in the message
    (`--fences counts must be between ...`), `example` shows the form."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"{flag} must be comma-separated integers such as {example}; got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise BenchError(f"{flag} {noun} must be between {low} and {high}; got {text!r}")
    return values


def _shown(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"
