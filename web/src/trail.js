// The selected device's trail as the details panel shows it: the runs `/trail` returned, extended by the live
// positions and trimmed to the last hours, with its fix count and length kept current. A position that comes
// more than the server's `gap_s` after the one before starts a new run, as the server breaks its trails, so
// no line is drawn across a silence (a phone switched off, a restart).

const EARTH_RADIUS_M = 6371008.8; // mean radius: within 0.5 % of the server's WGS84 lengths, enough for "X km"

/** Great-circle distance in metres between two [lon, lat] positions. */
export function haversineM(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b[1] - a[1]) * rad;
  const dLon = (b[0] - a[0]) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a[1] * rad) * Math.cos(b[1] * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)));
}

export class LiveTrail {
  /** From a `/trail` GeoJSON Feature (geometry null, a LineString or a MultiLineString, flat `times`). */
  constructor(feature) {
    const p = feature.properties;
    this.gapMs = (p.gap_s || 0) * 1000;
    this.distanceM = p.distance_m;
    this.runs = []; // [{ coords: [[lon, lat], ...], times: [ts, ...] }], oldest first
    const g = feature.geometry;
    const lines = !g ? [] : g.type === "LineString" ? [g.coordinates] : g.coordinates;
    let at = 0;
    for (const line of lines) {
      const times = p.times.slice(at, at + line.length);
      at += line.length;
      // A lone fix comes as a line repeating it: keep it once.
      const lone = line.length === 2 && times[0] === times[1];
      this.runs.push({ coords: lone ? [line[0]] : line.slice(), times: lone ? [times[0]] : times });
    }
  }

  /** How many fixes the trail holds. */
  get fixes() {
    return this.runs.reduce((n, r) => n + r.times.length, 0);
  }

  /** The newest fix's time, or null. */
  get lastTs() {
    const run = this.runs.at(-1);
    return run ? run.times.at(-1) : null;
  }

  /** Adds a live fix; false (nothing changed) unless it is newer than the newest one. */
  append(lon, lat, ts) {
    const last = this.lastTs;
    if (last != null && ts <= last) return false;
    const run = this.runs.at(-1);
    if (!run || (this.gapMs > 0 && ts - last > this.gapMs)) {
      this.runs.push({ coords: [[lon, lat]], times: [ts] });
    } else {
      this.distanceM += haversineM(run.coords.at(-1), [lon, lat]);
      run.coords.push([lon, lat]);
      run.times.push(ts);
    }
    return true;
  }

  /** Drops the fixes older than `fromTs`; true when some went. */
  trim(fromTs) {
    let dropped = false;
    while (this.runs.length) {
      const run = this.runs[0];
      let k = 0;
      while (k < run.times.length && run.times[k] < fromTs) k++;
      if (k === 0) break;
      dropped = true;
      const steps = Math.min(k, run.coords.length - 1); // the steps out of the dropped fixes
      for (let i = 0; i < steps; i++) this.distanceM -= haversineM(run.coords[i], run.coords[i + 1]);
      if (k === run.times.length) {
        this.runs.shift();
        continue;
      }
      run.coords.splice(0, k);
      run.times.splice(0, k);
      break;
    }
    if (!this.runs.length) this.distanceM = 0;
    this.distanceM = Math.max(0, this.distanceM);
    return dropped;
  }

  /** What the map draws: a MultiLineString, a line per run (a lone fix repeated), or null without fixes. */
  feature() {
    if (!this.runs.length) return null;
    const lines = this.runs.map((r) => (r.coords.length === 1 ? [r.coords[0], r.coords[0]] : r.coords));
    return { type: "Feature", geometry: { type: "MultiLineString", coordinates: lines }, properties: {} };
  }
}
