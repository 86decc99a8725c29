// Clusters at low zoom: below CITY_ZOOM the devices are counted per square of the screen grid, and a square
// holding two or more shows as one round marker with the count, its ring split by status colour; the devices
// in it are hidden in the device layer (one byte each), the lone ones stay. From CITY_ZOOM on every device
// is drawn as itself.
//
// Why a grid of our own, not MapLibre's clustered GeoJSON source or supercluster: both index every device
// again on each update (the GeoJSON source re-tiles all of them in its worker, which kept 10,000 moving
// devices under 6 frames per second), while the devices already sit in the device layer's typed arrays. One
// pass over them (about a millisecond for 10,000) at most every EVERY_MS while they move, and at once after
// a zoom or a pan, gives the counts; the squares are fixed in Web Mercator at each whole zoom level, so
// panning never reshuffles them. The markers are DOM elements (a few hundred at most, one per square on
// screen): the base style has no glyphs to draw numbers with, and they are the tests' hooks
// (`.cluster[data-count][data-moving][data-stopped][data-offline]`).
import * as maplibregl from "maplibre-gl";
import { STATUS_COLOURS } from "./colours.js";

export const CITY_ZOOM = 11; // from this zoom on, every device is drawn as itself
const CELL_PX = 72; // the side of a square, in CSS pixels at the whole zoom level
const EVERY_MS = 500; // moving devices regroup at most this often
const MAX_MARKERS = 600;
const STATUSES = Object.keys(STATUS_COLOURS); // a device's status byte is its index here
const KEY = 1 << 22; // cell keys: x * KEY + y (x, y < 2^(CITY_ZOOM + 9) / CELL_PX)

/** The ring of a cluster marker: each status's share of the count, in its colour. */
function ring(counts, total) {
  let at = 0;
  const stops = [];
  counts.forEach((n, i) => {
    if (!n) return;
    const to = at + (n / total) * 360;
    stops.push(`${STATUS_COLOURS[STATUSES[i]]} ${at}deg ${to}deg`);
    at = to;
  });
  return `conic-gradient(${stops.join(", ")})`;
}

export class Clusters {
  /** Groups the devices of `layer` (a DeviceLayer) on `map`. */
  constructor(map, layer) {
    this.map = map;
    this.layer = layer;
    this.markers = new Map(); // cell key -> { marker, el, text }
    this.active = false;
    this.enabled = true; // false while the replay is open
    this.doneAt = -Infinity;
    this.pending = false;
    this.summary = [];
    map.on("moveend", () => this.update(true));
  }

  /** Regroups now (`force`: after a move of the map) or, when devices moved, once EVERY_MS has passed. */
  update(force = false) {
    if (!this.enabled) return;
    const now = performance.now();
    if (!force && now - this.doneAt < EVERY_MS) {
      this.pending = true;
      return;
    }
    this.pending = false;
    this.doneAt = now;
    const zoom = Math.floor(this.map.getZoom());
    if (zoom >= CITY_ZOOM) {
      if (this.active) this._off();
      return;
    }
    this.active = true;
    this._group(zoom);
  }

  /** Off (every marker gone) while the replay is open, on again after. */
  setEnabled(on) {
    this.enabled = on;
    if (!on && this.active) this._off();
    if (on) this.update(true);
  }

  /** Called each frame: a regroup that was held back by EVERY_MS happens once it is due. */
  tick() {
    if (this.pending && performance.now() - this.doneAt >= EVERY_MS) this.update(true);
  }

  _off() {
    this.active = false;
    for (const m of this.markers.values()) m.marker.remove();
    this.markers.clear();
    this.summary = [];
    this.layer.showAll();
  }

  _group(zoom) {
    const { layer } = this;
    const n = layer.count;
    if (!n) {
      this._draw(new Map()); // the devices were cleared (another fleet chosen): their clusters go too
      return;
    }
    const scale = (512 * 2 ** zoom) / CELL_PX; // mercator -> cells
    const [rx, ry] = layer.ref;
    const cellOf = new Float64Array(n);
    const cells = new Map(); // key -> { n, x, y, counts: [moving, stopped, offline] }
    for (let i = 0; i < n; i++) {
      const mx = layer.offsets[2 * i] + rx;
      const my = layer.offsets[2 * i + 1] + ry;
      const key = Math.floor(mx * scale) * KEY + Math.floor(my * scale);
      cellOf[i] = key;
      let c = cells.get(key);
      if (c === undefined) {
        c = { n: 0, x: 0, y: 0, counts: [0, 0, 0] };
        cells.set(key, c);
      }
      c.n++;
      c.x += mx;
      c.y += my;
      c.counts[layer.styles[2 * i]]++;
    }
    for (let i = 0; i < n; i++) layer.setShown(i, cells.get(cellOf[i]).n < 2);
    layer.flush();
    this._draw(cells);
  }

  /** Markers for the squares of two or more devices on screen (and a margin); others go. */
  _draw(cells) {
    const bounds = this.map.getBounds();
    const pad = 0.25;
    const w = bounds.getWest(), e = bounds.getEast(), s = bounds.getSouth(), nn = bounds.getNorth();
    const dx = (e - w) * pad, dy = (nn - s) * pad;
    const seen = new Set();
    this.summary = [];
    for (const [key, c] of cells) {
      if (c.n < 2 || seen.size >= MAX_MARKERS) continue;
      const at = new maplibregl.MercatorCoordinate(c.x / c.n, c.y / c.n).toLngLat();
      if (at.lng < w - dx || at.lng > e + dx || at.lat < s - dy || at.lat > nn + dy) continue;
      seen.add(key);
      this.summary.push({ count: c.n, lon: at.lng, lat: at.lat, moving: c.counts[0], stopped: c.counts[1],
        offline: c.counts[2] });
      let m = this.markers.get(key);
      if (!m) {
        const el = document.createElement("div");
        el.className = "cluster";
        const text = document.createElement("span");
        el.append(text);
        el.addEventListener("click", (event) => {
          event.stopPropagation();
          this.map.easeTo({ center: m.marker.getLngLat(), zoom: Math.min(CITY_ZOOM, this.map.getZoom() + 2) });
        });
        m = { el, text, marker: new maplibregl.Marker({ element: el }).setLngLat(at).addTo(this.map), shown: "" };
        this.markers.set(key, m);
      } else {
        m.marker.setLngLat(at);
      }
      const shown = `${c.n}/${c.counts.join(",")}`;
      if (shown !== m.shown) {
        m.shown = shown;
        m.text.textContent = c.n >= 10_000 ? `${Math.round(c.n / 1000)}k` : String(c.n);
        const size = Math.round(26 + 8 * Math.log10(c.n));
        m.el.style.width = m.el.style.height = `${size}px`;
        m.el.style.background = ring(c.counts, c.n);
        Object.assign(m.el.dataset, { count: c.n, moving: c.counts[0], stopped: c.counts[1],
          offline: c.counts[2] });
      }
    }
    for (const [key, m] of this.markers) {
      if (!seen.has(key)) {
        m.marker.remove();
        this.markers.delete(key);
      }
    }
  }

  /** What is drawn (for tests and the console): [{ count, lon, lat, moving, stopped, offline }]. */
  list() {
    return this.summary;
  }
}
