"""Track files in, time-ordered point columns out: GPX, CSV, GeoJSON (or a JSON array of fixes) and GeoLife
PLT, chosen by the file's extension. Pure: no network, no database.

Policy:
- Points come out sorted by time; of points sharing one exact timestamp only the first in file order is
  kept (the server would store just one of them anyway) and the rest are counted in `duplicates`.
- A time is integer milliseconds, or seconds when the number is below 1e11 (that is before 1973 in ms,
  so a plausible recording time in seconds), or ISO 8601 with an offset. A time without an offset is
  refused, except in GPX and PLT, whose times are UTC by definition.
- GPX points without `<time>` are skipped and counted in `untimed`: GPX makes times optional, and
  recorders write untimed copies of tracks beside timed ones. Times are never invented; a file with no
  timed point, or whose clock was stuck (fewer than half its points have distinct times), is refused.
- Values are checked against the device protocol's bounds here, so that a bad row is reported with its
  place in the file instead of as a rejection by the server later.
- Errors are `TrackFileError` (an `InvalidInput`): `file:line: problem` where a line is known (CSV, PLT),
  else `file: where: problem`.

The pieces: `track` (the TrackFile and the points it is built from), `values` (numbers, times and the
names a column may carry), one reader per format family: `gpx`, `delimited` (CSV and GeoLife PLT),
`geojson` (GeoJSON and JSON arrays of fixes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tracker.tools.trackfile.delimited import FEET, read_csv, read_plt
from tracker.tools.trackfile.geojson import read_json
from tracker.tools.trackfile.gpx import read_gpx
from tracker.tools.trackfile.track import FloatArray, IntArray, Points, TrackFile, TrackFileError, iso

__all__ = ["FEET", "SUFFIXES", "FloatArray", "IntArray", "TrackFile", "TrackFileError", "iso", "read_track"]

READERS: dict[str, Callable[[Path, str], Points]] = {
    ".gpx": read_gpx,
    ".csv": read_csv,
    ".geojson": read_json,
    ".json": read_json,
    ".plt": read_plt,
}
SUFFIXES = tuple(READERS)


def read_track(path: str | Path) -> TrackFile:
    """Read a track file by its extension; raises TrackFileError naming the file (and line) at fault."""
    path = Path(path)
    suffix = path.suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        raise TrackFileError(
            f"{path}: unknown track format {suffix or '(no extension)'!r}; use one of {', '.join(SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackFileError(f"{path}: cannot read the file: {exc}") from None
    if not text.strip():
        raise TrackFileError(f"{path}: the file is empty")
    return reader(path, text).finish()
