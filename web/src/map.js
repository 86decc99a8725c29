// The map: a configurable base style (OpenStreetMap raster tiles by default, over a plain background that
// stays when tiles can't be reached), the fences, the selected device's trail, and the devices as one
// custom WebGL layer (devicelayer.js), never one DOM marker per device.
import * as maplibregl from "maplibre-gl";
import { DeviceLayer } from "./devicelayer.js";
import { PALETTE, STATUS_COLOURS, fleetIndex } from "./colours.js";

const NOTHING = { type: "FeatureCollection", features: [] };
const MAX_FENCE_LABELS = 300;
const REFIT_AFTER_MS = 3000;

/** The default style: a plain background, with raster tiles on top when a tile URL is configured. */
function baseStyle(config) {
  const style = {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#e9ecef" } }],
  };
  if (config.tiles) {
    style.sources.base = {
      type: "raster",
      tiles: [config.tiles],
      tileSize: 256,
      maxzoom: 19,
      attribution: config.attribution || "",
    };
    style.layers.push({ id: "base", type: "raster", source: "base" });
  }
  return style;
}

// The layer's colours are the status colours, then the palette: a status's index is its place in the first.
const STATUS_INDEX = Object.fromEntries(Object.keys(STATUS_COLOURS).map((status, i) => [status, i]));

/** The centre of a fence's bounding box: where its label goes. */
function labelPoint(geometry) {
  const rings = geometry.type === "Polygon" ? [geometry.coordinates[0]] : geometry.coordinates.map((p) => p[0]);
  let w = Infinity, s = Infinity, e = -Infinity, n = -Infinity;
  for (const ring of rings) {
    for (const [x, y] of ring) {
      w = Math.min(w, x); e = Math.max(e, x); s = Math.min(s, y); n = Math.max(n, y);
    }
  }
  return [(w + e) / 2, (s + n) / 2];
}

export class MapView {
  constructor(container, config, { onSelect, describe }) {
    maplibregl.setWorkerUrl(__WORKER_URL__);
    this.devices = new DeviceLayer("devices", [...Object.values(STATUS_COLOURS), ...PALETTE]);
    this.selectedId = null;
    this.fenceLabels = [];
    this.userMoved = false;
    this.fittedAt = null; // when frameFleet() first framed the devices
    this.refitted = false;
    this.map = new maplibregl.Map({
      container,
      style: config.style || baseStyle(config),
      center: config.center || [0, 20],
      zoom: config.zoom ?? 1.5,
      attributionControl: { compact: false },
      fadeDuration: 0,
    });
    this.map.addControl(new maplibregl.NavigationControl({ visualizePitch: false }), "top-right");
    this.map.addControl(new maplibregl.ScaleControl(), "bottom-right");
    let tileErrors = 0;
    this.map.on("error", (event) => {
      // Unreachable tiles or style: the page keeps working on the plain background.
      if (tileErrors++ === 0) console.warn("map:", event.error?.message || event.error);
      if (!this.map.isStyleLoaded() && config.style && !this.fellBack) {
        this.fellBack = true;
        this.map.setStyle(baseStyle({}));
      }
    });
    this.map.on("dragstart", () => (this.userMoved = true));
    this.ready = new Promise((resolve) => this.map.once("style.load", resolve)).then(() => this._addLayers(onSelect, describe));
  }

  _addLayers(onSelect, describe) {
    const map = this.map;
    map.addSource("fences", { type: "geojson", data: NOTHING });
    map.addLayer({ id: "fences-fill", type: "fill", source: "fences",
      paint: { "fill-color": "#3b82f6", "fill-opacity": 0.1 } });
    map.addLayer({ id: "fences-line", type: "line", source: "fences",
      paint: { "line-color": "#2563eb", "line-width": 1.5, "line-opacity": 0.8, "line-dasharray": [3, 2] } });

    map.addSource("trail", { type: "geojson", data: NOTHING });
    map.addLayer({ id: "trail", type: "line", source: "trail", layout: { "line-join": "round", "line-cap": "round" },
      paint: { "line-color": "#1d4ed8", "line-width": 3.5, "line-opacity": 0.85 } });

    map.addSource("selected", { type: "geojson", data: NOTHING });
    map.addLayer({ id: "selected", type: "circle", source: "selected",
      paint: { "circle-radius": 15, "circle-color": "rgba(37, 99, 235, 0.15)", "circle-stroke-color": "#1d4ed8",
        "circle-stroke-width": 2 } });
    map.addLayer(this.devices);

    const popup = new maplibregl.Popup({ closeButton: false, closeOnClick: false, offset: 12 });
    let hovered = null;
    map.on("mousemove", (e) => {
      const id = this.devices.pick(e.point);
      if (id === hovered) return;
      hovered = id;
      map.getCanvas().style.cursor = id ? "pointer" : "";
      if (id) {
        const [lon, lat] = this.devices.position(id);
        popup.setLngLat([lon, lat]).setDOMContent(describe(id)).addTo(map);
      } else {
        popup.remove();
      }
    });
    map.on("click", (e) => {
      const id = this.devices.pick(e.point);
      if (id) onSelect(id, false);
    });
  }

  setFences(collection) {
    this.map.getSource("fences").setData(collection);
    for (const m of this.fenceLabels) m.remove();
    this.fenceLabels = [];
    for (const f of collection.features.slice(0, MAX_FENCE_LABELS)) {
      const el = document.createElement("div");
      el.className = "fence-label";
      el.textContent = f.properties.name || f.properties.id;
      el.dataset.fenceId = f.properties.id;
      this.fenceLabels.push(new maplibregl.Marker({ element: el }).setLngLat(labelPoint(f.geometry)).addTo(this.map));
    }
  }

  /** Draws what changed (records from Fleet.take()); cheap: a few numbers per moved device. */
  updateDevices(added, changed) {
    for (const list of [added, changed]) {
      for (const r of list) {
        this.devices.set(r.id, r.lon, r.lat, r.heading, STATUS_INDEX[r.status], fleetIndex(r.fleet));
        if (r.id === this.selectedId) this._showSelected(r.lon, r.lat);
      }
    }
    this.devices.flush();
  }

  /** Forgets the devices (a new fleet selection), and frames the next ones afresh. */
  clearDevices() {
    this.devices.clear();
    this.fittedAt = null;
    this.refitted = false;
  }

  setColourMode(mode) {
    this.devices.setMode(mode);
  }

  select(id) {
    this.selectedId = id || null;
    const at = id ? this.devices.position(id) : null;
    this._showSelected(...(at || []));
  }

  _showSelected(lon, lat) {
    const data = lon == null ? NOTHING : { type: "Point", coordinates: [lon, lat] };
    this.map.getSource("selected")?.setData(data);
  }

  setTrail(feature) {
    this.trail = feature;
    this.map.getSource("trail").setData(feature || NOTHING);
  }

  /** Appends a live position to the shown trail (the selected device moved). */
  extendTrail(lon, lat) {
    if (!this.trail) return;
    this.trail.geometry.coordinates.push([lon, lat]);
    this.map.getSource("trail").setData(this.trail);
  }

  /**
   * Frames the devices (records, any iterable) when they are first drawn, and once more a few seconds later
   * (devices that reported since), unless the dispatcher moved the map meanwhile. Called on every redraw.
   */
  frameFleet(records, now) {
    if (this.refitted || (this.fittedAt !== null && now - this.fittedAt < REFIT_AFTER_MS)) return;
    if (this.fittedAt === null) this.fittedAt = now;
    else this.refitted = true;
    this.fitTo([...records]);
  }

  /** Frames the given records, unless the dispatcher already moved the map. */
  fitTo(records) {
    if (this.userMoved) return;
    const placed = records.filter((r) => r.lat != null);
    if (!placed.length) return;
    const bounds = new maplibregl.LngLatBounds();
    for (const r of placed) bounds.extend([r.lon, r.lat]);
    this.map.fitBounds(bounds, { padding: 60, maxZoom: 15, duration: 0 });
  }

  flyTo(lon, lat) {
    this.userMoved = true;
    this.map.easeTo({ center: [lon, lat], zoom: Math.max(this.map.getZoom(), 14), duration: 400 });
  }
}
