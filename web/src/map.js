// The map: a configurable base style (OpenStreetMap raster tiles by default, over a plain background that
// stays when tiles can't be reached), the fences, the selected device's trail, and the devices as one
// WebGL symbol layer fed from a GeoJSON source. Devices are updated with `updateData` diffs (only what
// moved), never one DOM marker per device, and at most one diff is in flight: while MapLibre's worker is
// busy, changes keep accumulating in the Fleet and go out together in the next diff.
import * as maplibregl from "maplibre-gl";
import { PALETTE, fleetIndex } from "./fleet.js";

const STATUS_COLOURS = { moving: "#16a34a", stopped: "#d97706", offline: "#9ca3af" };
const NO_DEVICES = { type: "FeatureCollection", features: [] };
const MAX_FENCE_LABELS = 300;

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

/** A marker image drawn on a canvas: an arrow pointing north (rotated by heading on the map) or a dot. */
function markerImage(shape, colour) {
  const ratio = 2;
  const size = shape === "arrow" ? 26 : 16;
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.lineJoin = "round";
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#ffffff";
  ctx.fillStyle = colour;
  ctx.beginPath();
  if (shape === "arrow") {
    ctx.moveTo(13, 2);
    ctx.lineTo(22, 23);
    ctx.lineTo(13, 18);
    ctx.lineTo(4, 23);
    ctx.closePath();
  } else {
    ctx.arc(8, 8, 6, 0, 2 * Math.PI);
  }
  ctx.fill();
  ctx.stroke();
  return ctx.getImageData(0, 0, size * ratio, size * ratio);
}

function deviceFeature(rec) {
  const properties = { id: rec.id, status: rec.status, fc: fleetIndex(rec.fleet) };
  if (rec.heading != null) properties.heading = rec.heading;
  return { type: "Feature", id: rec.fid, geometry: { type: "Point", coordinates: [rec.lon, rec.lat] }, properties };
}

function deviceDiff(rec) {
  const diff = {
    id: rec.fid,
    newGeometry: { type: "Point", coordinates: [rec.lon, rec.lat] },
    addOrUpdateProperties: [{ key: "status", value: rec.status }],
  };
  if (rec.heading != null) diff.addOrUpdateProperties.push({ key: "heading", value: rec.heading });
  else diff.removeProperties = ["heading"];
  return diff;
}

function iconImage(mode) {
  const shape = ["case", ["has", "heading"], "arrow", "dot"];
  return mode === "fleet"
    ? ["concat", shape, "-f", ["to-string", ["get", "fc"]]]
    : ["concat", shape, "-", ["get", "status"]];
}

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
    this.colourMode = "status";
    this.busy = false;
    this.fenceLabels = [];
    this.userMoved = false;
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
    for (const [status, colour] of Object.entries(STATUS_COLOURS)) {
      map.addImage(`arrow-${status}`, markerImage("arrow", colour), { pixelRatio: 2 });
      map.addImage(`dot-${status}`, markerImage("dot", colour), { pixelRatio: 2 });
    }
    PALETTE.forEach((colour, i) => {
      map.addImage(`arrow-f${i}`, markerImage("arrow", colour), { pixelRatio: 2 });
      map.addImage(`dot-f${i}`, markerImage("dot", colour), { pixelRatio: 2 });
    });

    map.addSource("fences", { type: "geojson", data: NO_DEVICES });
    map.addLayer({ id: "fences-fill", type: "fill", source: "fences",
      paint: { "fill-color": "#3b82f6", "fill-opacity": 0.1 } });
    map.addLayer({ id: "fences-line", type: "line", source: "fences",
      paint: { "line-color": "#2563eb", "line-width": 1.5, "line-opacity": 0.8, "line-dasharray": [3, 2] } });

    map.addSource("trail", { type: "geojson", data: NO_DEVICES });
    map.addLayer({ id: "trail", type: "line", source: "trail", layout: { "line-join": "round", "line-cap": "round" },
      paint: { "line-color": "#1d4ed8", "line-width": 3.5, "line-opacity": 0.85 } });

    map.addSource("devices", { type: "geojson", data: NO_DEVICES, maxzoom: 14, buffer: 32 });
    map.addLayer({ id: "selected", type: "circle", source: "devices", filter: ["==", ["get", "id"], ""],
      paint: { "circle-radius": 15, "circle-color": "rgba(37, 99, 235, 0.15)", "circle-stroke-color": "#1d4ed8",
        "circle-stroke-width": 2 } });
    map.addLayer({ id: "devices", type: "symbol", source: "devices",
      layout: {
        "icon-image": iconImage(this.colourMode),
        "icon-rotate": ["coalesce", ["get", "heading"], 0],
        "icon-rotation-alignment": "map",
        "icon-allow-overlap": true,
        "icon-ignore-placement": true,
        "icon-size": ["interpolate", ["linear"], ["zoom"], 3, 0.45, 10, 0.7, 15, 1],
      } });

    const popup = new maplibregl.Popup({ closeButton: false, closeOnClick: false, offset: 12 });
    map.on("mousemove", "devices", (e) => {
      map.getCanvas().style.cursor = "pointer";
      const f = e.features[0];
      popup.setLngLat(f.geometry.coordinates).setDOMContent(describe(f.properties.id)).addTo(map);
    });
    map.on("mouseleave", "devices", () => {
      map.getCanvas().style.cursor = "";
      popup.remove();
    });
    map.on("click", "devices", (e) => onSelect(e.features[0].properties.id, false));
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

  /** Draws what changed; returns false (and draws nothing) while the previous diff is still being applied. */
  updateDevices(added, changed) {
    const diff = {};
    if (added.length) diff.add = added.map(deviceFeature);
    if (changed.length) diff.update = changed.map(deviceDiff);
    this.busy = true;
    return this.map.getSource("devices").updateData(diff).finally(() => (this.busy = false));
  }

  clearDevices() {
    this.map.getSource("devices").setData(NO_DEVICES);
  }

  setColourMode(mode) {
    this.colourMode = mode;
    this.map.setLayoutProperty("devices", "icon-image", iconImage(mode));
  }

  select(id) {
    this.map.setFilter("selected", ["==", ["get", "id"], id || ""]);
  }

  setTrail(feature) {
    this.trail = feature;
    this.map.getSource("trail").setData(feature || NO_DEVICES);
  }

  /** Appends a live position to the shown trail (the selected device moved). */
  extendTrail(lon, lat) {
    if (!this.trail) return;
    this.trail.geometry.coordinates.push([lon, lat]);
    this.map.getSource("trail").setData(this.trail);
  }

  /** Frames the given records once, unless the dispatcher already moved the map. */
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

export { STATUS_COLOURS };
