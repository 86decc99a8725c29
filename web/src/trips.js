// Trips on the map: the selected device's open trip in the details panel (status, ETA as a clock time and
// "in N min", distance to go, the caller's ref) with its destination drawn (a point and its radius, or the
// fence outlined), and which devices are on a trip, for the list. Status changes come as live `trip`
// events. The ETA moves with every fix but is not an event: while the selected device sends fixes, its
// trip is read again from `/api/trips/{id}` (at most every REFRESH_MS), which answers its newest progress.
// Hooks for tests: `#details-trip` carries `data-trip-id`, `data-trip-status` and `data-eta-ts`; a list
// row of a device on a trip carries `data-trip-status`.
import { NONE, clock, km } from "./format.js";

const OPEN = new Set(["started", "approaching", "arrived"]);
const REFRESH_MS = 2000;
const PAGES = 20; // open trips read for the list: at most this many pages of 1000
const NOTHING = { type: "FeatureCollection", features: [] };
const SOURCE = "trip-destination";
const TICK_MS = 1000; // "in N min" is written again this often

/** How far along a status is: a read that answers an earlier one than an event said is stale. */
function rank(status) {
  return OPEN.has(status) ? ["started", "approaching", "arrived"].indexOf(status) : 3;
}

/** How far off a time (ms) is: "in 7 min", "in 40 s", "now", "3 min late". */
export function until(ts, now) {
  const s = Math.round((ts - now) / 1000);
  if (Math.abs(s) < 30) return "now";
  const span = Math.abs(s) < 60 ? `${Math.abs(s)} s` : `${Math.round(Math.abs(s) / 60)} min`;
  return s > 0 ? `in ${span}` : `${span} late`;
}

/** A circle of `radiusM` metres around a point as a 64-gon (a sphere is close enough at these sizes). */
function circle(lon, lat, radiusM) {
  const ring = [];
  const dLat = (radiusM / 6371008.8) * (180 / Math.PI);
  const dLon = dLat / Math.max(Math.cos((lat * Math.PI) / 180), 1e-6);
  for (let i = 0; i <= 64; i++) {
    const a = (i / 64) * 2 * Math.PI;
    ring.push([lon + dLon * Math.cos(a), lat + dLat * Math.sin(a)]);
  }
  return { type: "Polygon", coordinates: [ring] };
}

export class TripView {
  /** `onActive(device)` says a device's trip status (as `activeStatus` answers it) changed. */
  constructor(api, mapView, onActive) {
    this.api = api;
    this.map = mapView;
    this.onActive = onActive;
    this.id = null; // the selected device
    this.trip = null; // its trip as shown (the API's trip, updated by events)
    this.active = new Map(); // device -> status of its open trip
    this.fences = new Map(); // fence id -> geometry, to outline a fence destination
    this.readAt = 0;
    this.renderedAt = 0;
    this.timer = null;
    this.element = document.getElementById("details-trip");
    mapView.ready.then(() => this._addLayers());
  }

  /** The status of a device's open trip, or undefined. */
  activeStatus(device) {
    return this.active.get(device);
  }

  /** The fences in force (`/api/geofences`): a trip to a fence outlines it. */
  setFences(collection) {
    this.fences = new Map(collection.features.map((f) => [f.properties.id, f.geometry]));
    this._draw();
  }

  /** Every (re)subscription: which devices are on a trip now (the open trips the token may see). */
  async backfill() {
    const now = Date.now();
    const active = new Map();
    let cursor = null;
    for (let i = 0; i < PAGES; i++) {
      const page = await this.api.get("/api/trips", { from: now, to: now + 1, limit: 1000, cursor });
      for (const t of page.trips) if (OPEN.has(t.status)) active.set(t.device, t.status);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    const changed = new Set([...this.active.keys(), ...active.keys()]);
    this.active = active;
    for (const device of changed) this.onActive(device);
    if (this.id) this._load(this.id);
  }

  /** Show the open trip of device `id` (null: none). */
  show(id) {
    this.id = id;
    this._set(null);
    if (id) this._load(id);
  }

  async _load(id) {
    try {
      const now = Date.now();
      const page = await this.api.get("/api/trips", { device: id, from: now, to: now + 1, limit: 1000 });
      if (this.id !== id) return;
      const open = page.trips.filter((t) => OPEN.has(t.status));
      this._set(open.length ? open[open.length - 1] : null);
    } catch (err) {
      if (this.id === id) console.warn("trips:", err.message);
    }
  }

  /** A `trip` event: a trip of a device of the watched fleets changed its status. */
  event(e) {
    const was = this.active.get(e.device);
    if (OPEN.has(e.status)) this.active.set(e.device, e.status);
    else if (was !== undefined) this._recheck(e.device);
    if (was !== this.active.get(e.device)) this.onActive(e.device);
    if (e.device !== this.id) return;
    if (this.trip && this.trip.id === e.trip) {
      if (rank(e.status) >= rank(this.trip.status)) {
        this._set({ ...this.trip, status: e.status, eta_ts: e.eta_ts, remaining_m: e.remaining_m });
      }
    } else if (OPEN.has(e.status)) {
      this._read(e.trip);
    }
  }

  /** A trip of `device` ended: it may have another one open, so ask. */
  async _recheck(device) {
    this.active.delete(device);
    try {
      const page = await this.api.get("/api/trips", { device, from: Date.now(), to: Date.now() + 1 });
      const open = page.trips.filter((t) => OPEN.has(t.status));
      if (!open.length || this.active.has(device)) return;
      this.active.set(device, open[open.length - 1].status);
      this.onActive(device);
    } catch (err) {
      console.warn("trips:", err.message);
    }
  }

  /** Positions arrived: when the selected device on a trip moved, read its trip's new ETA (throttled). */
  positions(positions) {
    if (!this.trip || !OPEN.has(this.trip.status) || this.timer) return;
    if (!positions.some((p) => p.device === this.id)) return;
    const wait = Math.max(0, this.readAt + REFRESH_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.trip) this._read(this.trip.id);
    }, wait);
  }

  async _read(tripId) {
    const id = this.id;
    this.readAt = Date.now();
    try {
      const trip = await this.api.get(`/api/trips/${encodeURIComponent(tripId)}`);
      if (this.id !== id || trip.device !== id) return;
      // An event may have moved the shown trip past what this read saw: keep the later status.
      if (this.trip && this.trip.id === trip.id && rank(trip.status) < rank(this.trip.status)) return;
      this._set(trip);
    } catch (err) {
      console.warn("trip:", err.message);
    }
  }

  _set(trip) {
    this.trip = trip;
    this.render();
    this._draw();
  }

  /** Called each frame: writes "in N min" again every TICK_MS. */
  tick() {
    if (this.trip && Date.now() - this.renderedAt >= TICK_MS) this.render();
  }

  /** The trip's lines in the panel. */
  render() {
    this.renderedAt = Date.now();
    const el = this.element;
    const t = this.trip;
    el.hidden = !t;
    if (!t) {
      for (const k of ["tripId", "tripStatus", "etaTs"]) delete el.dataset[k];
      el.replaceChildren();
      return;
    }
    el.dataset.tripId = t.id;
    el.dataset.tripStatus = t.status;
    el.dataset.etaTs = t.eta_ts == null ? "" : String(t.eta_ts);
    const now = Date.now();
    const open = OPEN.has(t.status);
    const rows = [
      ["Trip", `${t.status}${t.ref ? ` · ${t.ref}` : ""}`],
      ["ETA", !open || t.status === "arrived" || t.eta_ts == null ? NONE : `${clock(t.eta_ts)} (${until(t.eta_ts, now)})`],
      ["To go", open && t.remaining_m != null && t.status !== "arrived" ? km(t.remaining_m) : NONE],
    ];
    el.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = k;
        dd.textContent = v;
        return [dt, dd];
      }),
    );
  }

  _addLayers() {
    const map = this.map.map;
    map.addSource(SOURCE, { type: "geojson", data: NOTHING });
    const below = map.getLayer("selected") ? "selected" : undefined;
    map.addLayer({ id: "trip-area", type: "fill", source: SOURCE, filter: ["==", ["geometry-type"], "Polygon"],
      paint: { "fill-color": "#16a34a", "fill-opacity": 0.15 } }, below);
    map.addLayer({ id: "trip-outline", type: "line", source: SOURCE, filter: ["==", ["geometry-type"], "Polygon"],
      paint: { "line-color": "#15803d", "line-width": 2.5 } }, below);
    map.addLayer({ id: "trip-point", type: "circle", source: SOURCE, filter: ["==", ["geometry-type"], "Point"],
      paint: { "circle-radius": 6, "circle-color": "#16a34a", "circle-stroke-color": "#fff", "circle-stroke-width": 2 } },
    below);
    this._draw();
  }

  /** The destination of the shown open trip on the map (nothing without one). */
  _draw() {
    const source = this.map.map.getSource(SOURCE);
    if (!source) return;
    const t = this.trip;
    const features = [];
    if (t && OPEN.has(t.status)) {
      const d = t.destination;
      const props = { trip: t.id };
      if (d.fence) {
        const geometry = this.fences.get(d.fence);
        if (geometry) features.push({ type: "Feature", geometry, properties: { ...props, fence: d.fence } });
      } else {
        features.push({ type: "Feature", geometry: circle(d.lon, d.lat, d.radius_m), properties: props });
        features.push({ type: "Feature", geometry: { type: "Point", coordinates: [d.lon, d.lat] }, properties: props });
      }
    }
    source.setData({ type: "FeatureCollection", features });
  }
}
