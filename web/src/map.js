// The map: a configurable base style (OpenStreetMap raster tiles by default), the operator's overlay (the demo's
// simulated streets), the fences, the selected device's trail, and the devices as one custom WebGL layer
// (devicelayer.js), never one DOM marker per device. When tiles can't be reached, Natural Earth land and borders
// (world-atlas, fetched from this server only then) stand in for them. Tiles are asked for only once the map has
// framed the fleet (or the dispatcher moved it), never for the whole world first.
import * as maplibregl from "maplibre-gl";
import { feature, mesh } from "topojson-client";
import { DeviceLayer } from "./devicelayer.js";
import { PALETTE, STATUS_COLOURS, fleetIndex } from "./colours.js";

const NOTHING = { type: "FeatureCollection", features: [] };
const MAX_FENCE_LABELS = 300;
const REFIT_AFTER_MS = 3000;
const TILES_AFTER_MS = 3000; // with no device to frame by then, the tiles come anyway
const PLAIN = "#e9ecef";
const WATER = "#c9d8e4";

/** The default style: a plain background, Natural Earth (empty until needed), raster tiles when a tile URL is
 *  configured (hidden until the map is framed), and the overlay. */
function baseStyle(config) {
  const style = {
    version: 8,
    sources: {
      // Credited only while drawn: the attribution lists the sources of visible layers.
      "world-land": { type: "geojson", data: NOTHING, attribution: "Natural Earth" },
      "world-borders": { type: "geojson", data: NOTHING },
    },
    layers: [
      { id: "background", type: "background", paint: { "background-color": PLAIN } },
      { id: "world-land", type: "fill", source: "world-land", layout: { visibility: "none" },
        paint: { "fill-color": "#f4f1ea" } },
      { id: "world-borders", type: "line", source: "world-borders", layout: { visibility: "none" },
        paint: { "line-color": "#9a8f97", "line-width": 1, "line-dasharray": [4, 2] } },
    ],
  };
  if (config.tiles) {
    style.sources.base = {
      type: "raster",
      tiles: [config.tiles],
      tileSize: 256,
      maxzoom: 19,
      attribution: config.attribution || "",
    };
    style.layers.push({ id: "base", type: "raster", source: "base", layout: { visibility: "none" } });
  }
  return style;
}

/** The overlay's source and layers (lines by width: `properties.main` wider; areas lightly filled). */
function addOverlay(map, url) {
  map.addSource("overlay", { type: "geojson", data: new URL(url, window.location.href).href });
  map.addLayer({ id: "overlay-fill", type: "fill", source: "overlay", filter: ["==", ["geometry-type"], "Polygon"],
    paint: { "fill-color": "#64748b", "fill-opacity": 0.08 } });
  map.addLayer({ id: "overlay-line", type: "line", source: "overlay", layout: { "line-join": "round", "line-cap": "round" },
    paint: { "line-color": "#7c8796", "line-opacity": 0.75,
      "line-width": ["interpolate", ["linear"], ["zoom"], 11, ["case", ["get", "main"], 1.5, 0.5],
        16, ["case", ["get", "main"], 6, 3]] } });
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
      // Unreachable tiles or style: the page keeps working, on Natural Earth.
      if (tileErrors++ === 0) console.warn("map:", event.error?.message || event.error);
      if (!this.map.isStyleLoaded() && config.style && !this.fellBack) {
        this.fellBack = true;
        this.map.setStyle(baseStyle({}));
        this.map.once("style.load", () => this._showWorld());
      } else if (event.sourceId === "base") {
        this._showWorld();
      }
    });
    this.map.on("dragstart", () => {
      this.userMoved = true;
      this._showTiles();
    });
    this.ready = new Promise((resolve) => this.map.once("style.load", resolve)).then(() => {
      if (!config.style && !config.tiles) this._showWorld();
      setTimeout(() => this._showTiles(), TILES_AFTER_MS);
      this._addLayers(config, onSelect, describe);
    });
  }

  /** Shows the raster tiles (once): after the first framing, a move by the dispatcher, or a few seconds. */
  _showTiles() {
    if (this.tilesShown || !this.map.getLayer("base")) return;
    this.tilesShown = true;
    this.map.setLayoutProperty("base", "visibility", "visible");
  }

  /** Draws Natural Earth land and borders under everything (once): the tiles can't be reached. */
  _showWorld() {
    if (this.world || !this.map.getSource("world-land")) return;
    for (const layer of ["world-land", "world-borders"]) this.map.setLayoutProperty(layer, "visibility", "visible");
    this.world = fetch(__WORLD_URL__)
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`${r.status} for the world map`))))
      .then((topo) => {
        // The background turns to water once the land is drawn over it, not before (no blue flash).
        const drawn = (event) => {
          if (event.sourceId !== "world-land" || !this.map.isSourceLoaded("world-land")) return;
          this.map.off("sourcedata", drawn);
          this.map.setPaintProperty("background", "background-color", WATER);
        };
        this.map.on("sourcedata", drawn);
        this.map.getSource("world-land").setData(feature(topo, topo.objects.land));
        this.map.getSource("world-borders").setData(mesh(topo, topo.objects.countries, (a, b) => a !== b));
      })
      .catch((err) => console.warn("world map:", err.message));
  }

  _addLayers(config, onSelect, describe) {
    const map = this.map;
    if (config.overlay) addOverlay(map, config.overlay);
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
    this._showTiles();
  }

  flyTo(lon, lat) {
    this.userMoved = true;
    this._showTiles();
    this.map.easeTo({ center: [lon, lat], zoom: Math.max(this.map.getZoom(), 14), duration: 400 });
  }
}
