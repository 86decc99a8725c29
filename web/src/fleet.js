// Every device the page knows, with its newest position and its status. Positions arrive in coalesced
// batches; applying one only updates records and remembers which changed. Drawing happens once per frame
// (redraw.js), so a burst of events costs the map one update, and a quiet fleet costs nothing.

export const MOVING_MIN_SPEED = 1.0; // m/s: below this a device counts as stopped
export const STALE_AFTER_MS = 2 * 60_000; // no fix for this long: not moving any more, whatever it last said
export const OFFLINE_AFTER_MS = 10 * 60_000; // no fix for this long: offline
const STATUS_EVERY_MS = 5000; // statuses age (moving -> stopped -> offline) this often

/** "moving", "stopped" or "offline" for a device's newest fix at time `now`. */
export function statusOf(rec, now) {
  if (rec.ts == null) return "offline";
  const age = now - rec.ts;
  if (age > OFFLINE_AFTER_MS) return "offline";
  if (age <= STALE_AFTER_MS && rec.speed != null && rec.speed >= MOVING_MIN_SPEED) return "moving";
  return "stopped";
}

export class Fleet {
  constructor() {
    this.agedAt = 0; // frame time of the last refreshStatuses() by ageStatuses()
    this.reset();
  }

  /** Forget every device (a new fleet selection). */
  reset() {
    this.byId = new Map();
    this.nextFeatureId = 1;
    this.added = []; // records not yet on the map
    this.changed = new Set(); // records on the map whose position or status changed
    this.structureVersion = 0; // bumps when devices are added (the list re-sorts)
    this.version = 0; // bumps on any change (the list redraws)
  }

  _record(id, fleet) {
    let rec = this.byId.get(id);
    if (rec === undefined) {
      rec = { fid: this.nextFeatureId++, id, fleet, name: null, lat: null, lon: null, ts: null, speed: null,
        heading: null, cell: null, status: "offline", queued: false, onMap: false };
      this.byId.set(id, rec);
      this.structureVersion++;
    }
    return rec;
  }

  /** Devices as `GET /api/devices` lists them: names, and a position when the socket has none newer. */
  addListed(devices, now) {
    for (const d of devices) {
      const rec = this._record(d.id, d.fleet);
      rec.name = d.name || null;
      if (d.last && (rec.ts == null || d.last.ts > rec.ts)) this._move(rec, d.last, now);
    }
    this.version++;
  }

  /** A `positions` event; returns how many records it changed. */
  applyPositions(positions, now) {
    let n = 0;
    for (const p of positions) {
      const rec = this._record(p.device, p.fleet);
      if (rec.ts != null && p.ts < rec.ts) continue; // an older fix than the one shown
      rec.cell = p.cell ?? null;
      this._move(rec, p, now);
      n++;
    }
    if (n) this.version++;
    return n;
  }

  _move(rec, p, now) {
    rec.lat = p.lat;
    rec.lon = p.lon;
    rec.ts = p.ts;
    rec.speed = p.speed ?? null;
    rec.heading = p.heading ?? null;
    rec.status = statusOf(rec, now);
    if (rec.onMap) this.changed.add(rec);
    else if (!rec.queued) {
      rec.queued = true;
      this.added.push(rec);
    }
  }

  /** Re-derive statuses as time passes (a device that stopped reporting goes stopped, then offline). */
  refreshStatuses(now) {
    let n = 0;
    for (const rec of this.byId.values()) {
      const status = statusOf(rec, now);
      if (status !== rec.status) {
        rec.status = status;
        if (rec.onMap) this.changed.add(rec);
        n++;
      }
    }
    if (n) this.version++;
    return n;
  }

  /**
   * refreshStatuses(now) at most every STATUS_EVERY_MS of `frameTime` (the redraw loop's clock): statuses
   * age in minutes, so walking every record on each redraw would be wasted.
   */
  ageStatuses(frameTime, now) {
    if (frameTime - this.agedAt <= STATUS_EVERY_MS) return 0;
    this.agedAt = frameTime;
    return this.refreshStatuses(now);
  }

  /** What the map must draw since the last call: records to add, and records that changed. */
  take() {
    const added = this.added;
    const changed = [...this.changed];
    this.added = [];
    this.changed.clear();
    for (const rec of added) {
      rec.queued = false;
      rec.onMap = true;
    }
    return { added, changed };
  }

  get size() {
    return this.byId.size;
  }

  get(id) {
    return this.byId.get(id);
  }

  fleets() {
    return [...new Set([...this.byId.values()].map((r) => r.fleet))].sort();
  }
}
