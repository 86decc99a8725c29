"""Delimited text: CSV (comma, semicolon or tab, a header naming the columns) and GeoLife PLT (six header
lines, then comma-separated fields in a fixed order). Errors carry the file's line number."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from tracker.tools.trackfile.track import Points, TrackFileError
from tracker.tools.trackfile.values import (
    ALIASES,
    LAT_NAMES,
    LON_NAMES,
    TIME_NAMES,
    datetime_ms,
    number,
    optional_number,
    time_of,
)

FEET = 0.3048


def read_csv(path: Path, text: str) -> Points:
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]

    def column(names: tuple[str, ...], what: str, required: bool) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        if required:
            raise TrackFileError(
                f"{path}:1: no {what} column: expected one of {', '.join(names)}; "
                f"the header has {', '.join(header) or 'nothing'}"
            )
        return None

    time_at = column(TIME_NAMES, "time", True)
    lat_at = column(LAT_NAMES, "latitude", True)
    lon_at = column(LON_NAMES, "longitude", True)
    assert time_at is not None and lat_at is not None and lon_at is not None
    optional_at = {
        name: at for name, aliases in ALIASES.items() if (at := column(aliases, name, False)) is not None
    }
    out = Points(path)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) < len(header):
            raise TrackFileError(f"{where}: {len(row)} fields where the header names {len(header)}")
        out.add(
            where,
            time_of(where, header[time_at], row[time_at].strip()),
            number(where, header[lat_at], row[lat_at].strip() or None),
            number(where, header[lon_at], row[lon_at].strip() or None),
            {name: optional_number(where, header[at], row[at]) for name, at in optional_at.items()},
        )
    return out


def read_plt(path: Path, text: str) -> Points:
    """GeoLife: 6 header lines, then `lat,lon,0,altitude_ft,days_since_1899,YYYY-MM-DD,HH:MM:SS` (UTC);
    an altitude of -777 means none."""
    lines = text.splitlines()
    if len(lines) < 6 or not lines[0].lower().startswith("geolife"):
        raise TrackFileError(
            f"{path}:1: not a GeoLife PLT file (6 header lines starting 'Geolife trajectory')"
        )
    out = Points(path)
    for line_no, line in enumerate(lines[6:], start=7):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        fields = line.split(",")
        if len(fields) < 7:
            raise TrackFileError(
                f"{where}: expected 7 fields (lat,lon,0,altitude_ft,days,date,time); got {len(fields)}"
            )
        try:
            when = datetime.fromisoformat(f"{fields[5].strip()}T{fields[6].strip()}+00:00")
        except ValueError:
            raise TrackFileError(
                f"{where}: date and time must be YYYY-MM-DD,HH:MM:SS; got {fields[5]},{fields[6]}"
            ) from None
        feet = number(where, "altitude", fields[3].strip())
        out.add(
            where,
            datetime_ms(when),
            number(where, "latitude", fields[0].strip()),
            number(where, "longitude", fields[1].strip()),
            {"altitude": None if feet == -777 else feet * FEET},
        )
    return out
