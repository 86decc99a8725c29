// One device's trail as the replay moves along it: the `/trail?max_points=` Feature flattened into typed
// arrays, and where the device was at any time of the window. Pure: no map, no DOM.
//
// Between two fixes of a run the device moves at constant speed along the straight line (the server kept the
// fixes that make this closest to the full trail); across a silence (a new run) it stays where it was last
// seen, shown as offline; before its first fix of the window it is not shown; after its last it stays there.
import { haversineM } from "./trail.js";

const MOVING_MIN_SPEED = 1.0; // m/s, as fleet.js: slower is "stopped"

export class ReplayTrack {
  constructor(id, feature) {
    this.id = id;
    const p = feature.properties;
    const g = feature.geometry;
    const lines = !g ? [] : g.type === "LineString" ? [g.coordinates] : g.coordinates;
    const n = p.times.length;
    this.times = new Float64Array(n);
    this.lon = new Float64Array(n);
    this.lat = new Float64Array(n);
    this.runStart = new Uint8Array(n); // 1 where a run (after a silence) begins
    let at = 0;
    for (const line of lines) {
      this.runStart[at] = 1;
      for (const [lon, lat] of line) {
        this.times[at] = p.times[at];
        this.lon[at] = lon;
        this.lat[at] = lat;
        at++;
      }
    }
    this.fixes = p.fixes ?? p.points;
    this.points = n;
    this.distanceM = p.distance_m;
    this.feature = feature;
  }

  /** Index of the last point at or before `ts` (-1 before the first). */
  _index(ts) {
    let lo = 0;
    let hi = this.points - 1;
    if (hi < 0 || ts < this.times[0]) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.times[mid] <= ts) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Where the device was at `ts`: { lon, lat, heading (degrees or null), status } with status "moving",
   * "stopped" or "offline" (silent: between runs or after its last fix); null before its first fix.
   */
  at(ts) {
    const i = this._index(ts);
    if (i < 0) return null;
    const last = i === this.points - 1;
    if (last || this.runStart[i + 1]) {
      return { lon: this.lon[i], lat: this.lat[i], heading: this._heading(i), status: last && ts === this.times[i]
        ? "stopped" : "offline" };
    }
    const t0 = this.times[i];
    const t1 = this.times[i + 1];
    const f = t1 > t0 ? (ts - t0) / (t1 - t0) : 0;
    const a = [this.lon[i], this.lat[i]];
    const b = [this.lon[i + 1], this.lat[i + 1]];
    const speed = t1 > t0 ? haversineM(a, b) / ((t1 - t0) / 1000) : 0;
    return {
      lon: a[0] + f * (b[0] - a[0]),
      lat: a[1] + f * (b[1] - a[1]),
      heading: this._heading(i),
      status: speed >= MOVING_MIN_SPEED ? "moving" : "stopped",
    };
  }

  /** The direction of travel (degrees from north) of the segment from point i on, else of the one before. */
  _heading(i) {
    for (const j of [i, i - 1]) {
      if (j < 0 || j + 1 >= this.points || this.runStart[j + 1]) continue;
      const dx = (this.lon[j + 1] - this.lon[j]) * Math.cos((this.lat[j] * Math.PI) / 180);
      const dy = this.lat[j + 1] - this.lat[j];
      if (dx || dy) return ((Math.atan2(dx, dy) * 180) / Math.PI + 360) % 360;
    }
    return null;
  }
}
