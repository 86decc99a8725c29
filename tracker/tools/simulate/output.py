"""Writing simulated tracks: GPX 1.1 (gpxpy), CSV and GeoJSON, and the folder's README.

Policy: numbers are written as rounded in the `SimTrack` (lat/lon 6 decimals, speed 0.1 m/s, heading whole
degrees, accuracy 0.1 m), so every format carries the same values. A folder is rewritten as a whole: earlier
`courier-*`/`van-*` track files in it are removed first, so a smaller fleet leaves no stale files.
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gpxpy.gpx

from tracker.tools.simulate.recorder import (
    ACCURACY_PER_SIGMA,
    GAP_RATE_PER_H,
    GAP_S,
    JUMP_ACCURACY_M,
    JUMP_M,
    JUMP_RATE,
    NOISE_TAU_S,
    SIGMA_M,
    STOP_INTERVAL_S,
    TUNNEL_MARGIN_M,
    SimTrack,
)
from tracker.tools.simulate.vehicles import (
    BIKE,
    COURIER_DUTY,
    DAY_START,
    LONG_LOAD_MIN,
    MOVING_INTERVAL_S,
    RETURN_STOP_MIN,
    SCOOTER,
    VAN,
    VAN_DUTY,
    Kind,
)

log = logging.getLogger("tracker.tools.simulate")

GPXTPX = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_gpx(track: SimTrack) -> str:
    """GPX 1.1 (gpxpy): one trk/trkseg; speed (m/s) and course (degrees) as Garmin TrackPointExtension v2."""
    gpx = gpxpy.gpx.GPX()
    gpx.creator = "tracker simulate"
    gpx.nsmap["gpxtpx"] = GPXTPX
    trk = gpxpy.gpx.GPXTrack(name=track.vehicle.device)
    seg = gpxpy.gpx.GPXTrackSegment()
    for ts, lat, lon, speed, heading in zip(
        track.ts.tolist(),
        track.lat.tolist(),
        track.lon.tolist(),
        track.speed.tolist(),
        track.heading.tolist(),
        strict=True,
    ):
        point = gpxpy.gpx.GPXTrackPoint(latitude=lat, longitude=lon, time=_utc(ts))
        ext = ET.Element(f"{{{GPXTPX}}}TrackPointExtension")
        ET.SubElement(ext, f"{{{GPXTPX}}}speed").text = f"{speed:.1f}"
        ET.SubElement(ext, f"{{{GPXTPX}}}course").text = str(heading)
        point.extensions.append(ext)
        seg.points.append(point)
    trk.segments.append(seg)
    gpx.tracks.append(trk)
    xml: str = gpx.to_xml(version="1.1", prettyprint=False)
    return xml


def to_csv(track: SimTrack) -> str:
    """`ts,lat,lon,speed,heading,accuracy`: ms, degrees with 6 decimals, m/s, degrees, metres."""
    rows = [
        f"{ts},{lat:.6f},{lon:.6f},{speed:.1f},{heading},{acc:.1f}\n"
        for ts, lat, lon, speed, heading, acc in zip(
            track.ts.tolist(),
            track.lat.tolist(),
            track.lon.tolist(),
            track.speed.tolist(),
            track.heading.tolist(),
            track.accuracy.tolist(),
            strict=True,
        )
    ]
    return "ts,lat,lon,speed,heading,accuracy\n" + "".join(rows)


def to_geojson(track: SimTrack) -> str:
    """A Feature with a LineString, shaped like the server's `/trail`, plus parallel speeds/headings."""
    feature = {
        "type": "Feature",
        "geometry": {
            "type": "LineString",
            "coordinates": [
                [lon, lat] for lon, lat in zip(track.lon.tolist(), track.lat.tolist(), strict=True)
            ],
        },
        "properties": {
            "device": track.vehicle.device,
            "fleet": track.vehicle.fleet,
            "from": int(track.ts[0]),
            "to": int(track.ts[-1]),
            "points": len(track.ts),
            "times": track.ts.tolist(),
            "speeds": track.speed.tolist(),
            "headings": track.heading.tolist(),
            "accuracies": track.accuracy.tolist(),
        },
    }
    return json.dumps(feature, separators=(",", ":")) + "\n"


WRITERS = {"gpx": to_gpx, "csv": to_csv, "geojson": to_geojson}
_OURS = re.compile(r"^(courier|van)-\d+\.(gpx|csv|geojson)$")


def _kmh(kind: Kind) -> str:
    return f"{kind.side_speed[0] * 3.6:.0f}-{kind.main_speed[1] * 3.6:.0f} km/h"


def _fill(text: str, first: str = "", rest: str = "") -> str:
    return textwrap.fill(text, 110, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def _range(r: tuple[float, float]) -> str:
    return f"{r[0]:g}-{r[1]:g}"


_ROLES = {
    "quarter": "drives through the government quarter",
    "tunnel": "passes under the government quarter (tunnel gap)",
}


def readme(tracks: Sequence[SimTrack], command: str) -> str:
    """The folder's README: what, how generated, formats, what the files exercise, and a table of files."""
    rows = []
    for t in tracks:
        v = t.vehicle
        notes = [f"loads {t.load_s / 60:.0f} min at {v.base}"]
        if v.special:
            notes.append(_ROLES[v.special])
        minutes = (int(t.ts[-1]) - int(t.ts[0])) / 60000
        rows.append(
            f"| `{v.filename}` | {v.fleet} | {v.kind.name} | {_utc(int(t.ts[0])):%H:%M} | {minutes:.0f} min "
            f"| {len(t.ts)} | {t.distance_m / 1000:.1f} km | {t.customers} | {t.gaps} | {t.jumps} "
            f"| {'; '.join(notes)} |"
        )
    table = "\n".join(rows)
    cd, vd = COURIER_DUTY, VAN_DUTY
    end = DAY_START + timedelta(minutes=cd.start_within_min)
    moving = _fill(
        "A grid of streets about 200 m apart (jittered crossings, every fourth street a main road, three "
        "diagonal avenues, some side streets interrupted) carries the depot yards and the Alexanderplatz hub "
        f"of `geofences/berlin.yaml`. A shift starts at a depot or the hub between {DAY_START:%H:%M} and "
        f"{end:%H:%M} UTC and loads there ({_range(LONG_LOAD_MIN)} minutes for some, else couriers "
        f"{_range(cd.load_min)} and vans {_range(vd.load_min)}). Couriers visit {_range(cd.customers)} "
        "customers at street addresses of a district around their base and stop "
        f"{_range(cd.stop_min)} minutes at each; vans visit {_range(vd.customers)} anywhere in the middle "
        f"of town and stop {_range(vd.stop_min)} minutes. Nearest customer first; back at the base, a last "
        f"stop of {_range(RETURN_STOP_MIN)} minutes ends the shift. Vehicles drive along streets only, on "
        "shortest paths (bikes the shortest, others the quickest), accelerating, braking, slowing for turns "
        "and waiting at some red lights. Cruising speeds (side streets to main roads): cargo bikes "
        f"{_kmh(BIKE)}, scooters {_kmh(SCOOTER)}, vans {_kmh(VAN)}."
    )
    noise = "\n".join(
        _fill(item, "- ", "  ")
        for item in (
            f"Fixes: every {_range(MOVING_INTERVAL_S)} s while moving (each phone its own interval), every "
            f"{_range(STOP_INTERVAL_S)} s while standing; on whole seconds.",
            f"Noise: Gaussian, sigma {_range(SIGMA_M)} m per axis (per phone, drifting), correlated over "
            f"~{NOISE_TAU_S:g} s; `accuracy` is {ACCURACY_PER_SIGMA:g} x sigma, the 68 % radius. Speed "
            "carries 0.2 m/s of noise, heading 2 degrees.",
            f"Gaps: {GAP_RATE_PER_H:g} per hour of driving, {_range(GAP_S)} s without fixes between two "
            "fixes taken while rolling.",
            f"Jumps: {JUMP_RATE * 100:g} % of the fixes while moving are {_range(JUMP_M)} m off "
            f"(multipath), with an accuracy of {_range(JUMP_ACCURACY_M)} m.",
        )
    )
    return f"""# Sample tracks

Synthetic courier and van shifts in central Berlin (13.35-13.45 E, 52.49-52.55 N) on {DAY_START:%Y-%m-%d},
made by the project itself. They are not anybody's real movements: the streets are a generated grid, not
the real city's, and no person's data went into them. `tracker demo` replays every file here in a loop,
re-timed to now, with the fleet rules of `geofences/berlin.yaml`; `tracker replay FILE` plays one.

Generated with `{command}` (`--out DIR` writes elsewhere; default `sample_tracks`). The same seed gives
byte-identical files, and `tests/test_simulate.py` checks that these are them. Do not edit by hand: change
`tracker/tools/simulate/` and regenerate.

## Files and fleets

The file name says the fleet: `courier-NN.*` belongs to fleet `couriers`, `van-NN.*` to fleet `vans`; the
device id is the name without its suffix. Formats:

- GPX 1.1 (couriers): one `trk`/`trkseg`, a `<time>` (UTC) per `trkpt`; speed (m/s) and course (degrees) in
  `<extensions><gpxtpx:TrackPointExtension>`, Garmin's TrackPointExtension v2
  (`{GPXTPX}`). GPX has no field for the accuracy.
- CSV (vans): header `ts,lat,lon,speed,heading,accuracy`; `ts` in milliseconds since the epoch, lat/lon with
  6 decimals, speed in m/s with 1 decimal, heading in whole degrees (0-359), accuracy in metres.
- GeoJSON (the last courier and the last van): one Feature with a LineString, as the server's
  `/api/devices/{{id}}/trail` returns it: `properties.device`, `fleet`, `from`, `to`, `points`, `times` (ms,
  parallel to the coordinates), and parallel `speeds`, `headings` and `accuracies`.

## How they move

{moving}

{noise}

## What they exercise (geofences/berlin.yaml)

- `depot-arrival`, `depot-departure`, `long-stop-at-depot`: every shift starts and ends in a depot yard
  (`depot-kreuzberg`'s yard lies beside its courtyard hole) or in the hub circle; some load for more than
  15 minutes.
- `centre-speeding`: vans and scooter couriers go faster than 30 km/h on main roads in the Mitte zone.
- `restricted-entry`: `van-01` drives through the government quarter.
- `restricted-crossing`: `van-02` passes under it in a tunnel, without fixes within {TUNNEL_MARGIN_M:g} m of
  it, so the straight line between the fixes before and after crosses the fence.

| file | fleet | vehicle | start (UTC) | duration | fixes | distance | customers | gaps | jumps | notes |
|---|---|---|---|---|---|---|---|---|---|---|
{table}
"""


def write(tracks: Sequence[SimTrack], out: Path, command: str) -> list[Path]:
    """Write each track in its format and the README into `out`; earlier `courier-*`/`van-*` files go."""
    out.mkdir(parents=True, exist_ok=True)
    for old in sorted(out.iterdir()):
        if _OURS.match(old.name) and old.is_file():
            log.info("removing %s before writing the new tracks", old)
            old.unlink()
    paths = []
    for track in tracks:
        path = out / track.vehicle.filename
        path.write_text(WRITERS[track.vehicle.fmt](track), encoding="utf-8", newline="\n")
        paths.append(path)
    (out / "README.md").write_text(readme(tracks, command), encoding="utf-8", newline="\n")
    return paths
