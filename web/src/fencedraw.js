// Drawing a fence on the map: a polygon (click its corners; a double-click or Finish closes it) or a circle
// (click the centre, then a second click or the radius field sets the radius). The page shows the YAML of
// a `fences:` entry and an enter and an exit rule on it, to copy into geofences/ (the page never writes a
// file), and previews what that text would have fired over the last 24 hours through
// `POST /api/geofences/dry-run` (nothing is stored or delivered).
//
// Hand-written on MapLibre's own click events and one GeoJSON source rather than terra-draw or
// mapbox-gl-draw: the job is clicks and a ring, and their modes, selection and editing handles would be
// most of the bundle's new code for none of the YAML.
//
// The textarea is written from the drawing whenever the drawing or the id changes; the dispatcher may edit
// it in between, and Preview sends the text as it stands. Coordinates are [lon, lat], 6 decimals (10 cm).
//
// Hooks: `#fences[data-fence-state]` is `idle`, `drawing` or `done`; `[data-preview-state]` is
// `loading`, `done` or `error`; `#fence-events li[data-type][data-device][data-ts]`, `#fence-errors li`;
// `tracker.fence()` in the console gives the drawing.

const SOURCE = "fence-draft";
const NOTHING = { type: "FeatureCollection", features: [] };
const DAY_MS = 86_400_000;
const EARTH_RADIUS_M = 6_371_008.8; // the mean radius: circles are drawn on the sphere, the server measures on WGS84
const SAME_POINT_PX = 4; // a click this close to the last corner adds none (the double-click's two clicks)
const MAX_LISTED = 500;
const ID = /^[A-Za-z0-9_.:-]{1,64}$/;

function $(id) {
  return document.getElementById(id);
}

/** A coordinate rounded to 6 decimals, as a number (so `13.4`, not `13.400000`). */
function round6(x) {
  return Number(x.toFixed(6));
}

/** A [lon, lat] point as YAML flow, `[13.405, 52.52]`. */
function pointYaml([lon, lat]) {
  return `[${round6(lon)}, ${round6(lat)}]`;
}

/** Great-circle distance in metres between two [lon, lat] points. */
function distanceM([lon1, lat1], [lon2, lat2]) {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** A closed ring of `n` points `radiusM` around `[lon, lat]`, for drawing a circle fence. */
function circleRing([lon, lat], radiusM, n = 72) {
  const rad = Math.PI / 180;
  const d = radiusM / EARTH_RADIUS_M;
  const lat1 = lat * rad;
  const ring = [];
  for (let i = 0; i <= n; i++) {
    const bearing = ((i % n) / n) * 2 * Math.PI;
    const lat2 = Math.asin(Math.sin(lat1) * Math.cos(d) + Math.cos(lat1) * Math.sin(d) * Math.cos(bearing));
    const lon2 = lon * rad + Math.atan2(Math.sin(bearing) * Math.sin(d) * Math.cos(lat1),
      Math.cos(d) - Math.sin(lat1) * Math.sin(lat2));
    ring.push([lon2 / rad, lat2 / rad]);
  }
  return ring;
}

/** The YAML of one fence and an enter and an exit rule on it. */
export function fenceYaml(id, shape) {
  const lines = ["fences:", `  - id: ${id}`];
  if (shape.kind === "polygon") {
    const ring = [...shape.points, shape.points[0]];
    lines.push(`    polygon: [${ring.map(pointYaml).join(", ")}]`);
  } else {
    lines.push(`    circle: {center: ${pointYaml(shape.centre)}, radius_m: ${shape.radiusM}}`);
  }
  lines.push("rules:");
  for (const on of ["enter", "exit"]) {
    lines.push(`  - id: ${id}-${on}`, `    on: ${on}`, `    fences: [${id}]`);
  }
  return lines.join("\n") + "\n";
}

export class FenceDraw {
  /** `map`: the MapLibre map (its style loaded once `ready` resolves); `onOpen(open)` is told either way. */
  constructor({ api, map, ready, onOpen }) {
    this.api = api;
    this.map = map;
    this.onOpen = onOpen || (() => {});
    this.kind = "polygon";
    this.points = []; // polygon corners, [lon, lat]
    this.centre = null;
    this.radiusM = null;
    this.cursor = null; // [lon, lat] under the mouse while drawing, for the rubber band
    this.state = "idle";
    this.panel = $("fences");
    this.yaml = $("fence-yaml");
    this.idInput = $("fence-id");
    this.radiusInput = $("fence-radius");
    this.hint = $("fence-hint");
    ready.then(() => {
      map.addSource(SOURCE, { type: "geojson", data: NOTHING });
      map.addLayer({ id: "fence-draft-fill", type: "fill", source: SOURCE, filter: ["==", ["geometry-type"], "Polygon"],
        paint: { "fill-color": "#f97316", "fill-opacity": 0.18 } });
      const edge = ["all", ["!=", ["geometry-type"], "Point"], ["!", ["boolean", ["get", "band"], false]]];
      map.addLayer({ id: "fence-draft-line", type: "line", source: SOURCE, filter: edge,
        paint: { "line-color": "#ea580c", "line-width": 2 } });
      map.addLayer({ id: "fence-draft-band", type: "line", source: SOURCE, filter: ["boolean", ["get", "band"], false],
        paint: { "line-color": "#ea580c", "line-width": 2, "line-dasharray": [2, 2] } });
      map.addLayer({ id: "fence-draft-points", type: "circle", source: SOURCE, filter: ["==", ["geometry-type"], "Point"],
        paint: { "circle-radius": 4, "circle-color": "#fff", "circle-stroke-color": "#ea580c", "circle-stroke-width": 2 } });
    });
    this._wire();
  }

  _wire() {
    const map = this.map;
    map.on("click", (e) => this.panel.hidden || this._click(e));
    map.on("dblclick", (e) => {
      if (this.panel.hidden || this.kind !== "polygon" || this.state !== "drawing") return;
      e.preventDefault();
      this.finish();
    });
    map.on("mousemove", (e) => {
      if (this.panel.hidden || this.state !== "drawing") return;
      this.cursor = [e.lngLat.lng, e.lngLat.lat];
      this._draw();
    });
    for (const input of document.querySelectorAll('input[name="fence-kind"]')) {
      input.addEventListener("change", () => input.checked && this.start(input.value));
    }
    $("fence-finish").addEventListener("click", () => this.finish());
    $("fence-restart").addEventListener("click", () => this.start(this.kind));
    $("fence-close").addEventListener("click", () => this.close());
    $("fence-copy").addEventListener("click", () => this._copy());
    $("fence-preview").addEventListener("click", () => this.preview());
    this.idInput.addEventListener("input", () => this._writeYaml());
    this.radiusInput.addEventListener("input", () => {
      const r = Math.round(Number(this.radiusInput.value));
      if (this.kind !== "circle" || !this.centre || !(r > 0)) return;
      this.radiusM = r;
      this._setState("done");
    });
  }

  open() {
    this.panel.hidden = false;
    this.onOpen(true);
    this.start(this.kind);
  }

  close() {
    this.panel.hidden = true;
    this.map.getContainer().classList.remove("drawing-fence");
    this.map.doubleClickZoom.enable();
    if (this.map.getSource(SOURCE)) this.map.getSource(SOURCE).setData(NOTHING);
    this.onOpen(false);
  }

  /** Starts a new drawing of `kind` ("polygon" or "circle"), forgetting the last one. */
  start(kind) {
    this.kind = kind;
    this.points = [];
    this.centre = null;
    this.radiusM = null;
    this.cursor = null;
    this.radiusInput.value = "";
    this.radiusInput.disabled = kind !== "circle";
    $("fence-finish").hidden = kind !== "polygon";
    this.map.doubleClickZoom.disable(); // a double-click closes the polygon, not zoom
    this.map.getContainer().classList.add("drawing-fence");
    this._setState("drawing");
  }

  /** Closes the polygon (three corners at least). */
  finish() {
    if (this.kind !== "polygon" || this.state !== "drawing" || this.points.length < 3) return;
    this._setState("done");
  }

  _click(e) {
    if (this.state !== "drawing") return;
    const at = [e.lngLat.lng, e.lngLat.lat];
    if (this.kind === "polygon") {
      const last = this.points[this.points.length - 1];
      if (last) {
        const p = this.map.project(last);
        if (Math.hypot(p.x - e.point.x, p.y - e.point.y) < SAME_POINT_PX) return;
      }
      this.points.push(at);
      this._draw();
      this._hint();
    } else if (!this.centre) {
      this.centre = at;
      this._draw();
      this._hint();
    } else {
      this.radiusM = Math.max(1, Math.round(distanceM(this.centre, at)));
      this.radiusInput.value = String(this.radiusM);
      this._setState("done");
    }
  }

  _setState(state) {
    this.state = state;
    this.panel.dataset.fenceState = state;
    if (state === "done") {
      this.cursor = null;
      this.map.getContainer().classList.remove("drawing-fence");
    }
    this._draw();
    this._hint();
    this._writeYaml();
  }

  _hint() {
    const polygon = this.kind === "polygon";
    const drawing = this.state === "drawing";
    let text = "Edit the id or the text, copy it into a file in geofences/, or preview it.";
    if (drawing && polygon) {
      text = this.points.length < 3
        ? `Click the corners on the map (${this.points.length} so far, 3 at least).`
        : `${this.points.length} corners: double-click the last or press Finish.`;
    } else if (drawing) {
      text = this.centre ? "Click the edge, or type the radius in metres." : "Click the centre on the map.";
    }
    this.hint.textContent = text;
    $("fence-finish").disabled = !(drawing && polygon && this.points.length >= 3);
  }

  /** The drawing so far, or null before it has a shape. */
  shape() {
    if (this.state !== "done") return null;
    return this.kind === "polygon"
      ? { kind: "polygon", points: this.points }
      : { kind: "circle", centre: this.centre, radiusM: this.radiusM };
  }

  _writeYaml() {
    const shape = this.shape();
    const id = this.idInput.value.trim();
    this.idInput.setCustomValidity(ID.test(id) ? "" : "1-64 letters, digits or _.:-");
    this.yaml.value = shape ? fenceYaml(id, shape) : "";
    $("fence-copy").disabled = !shape;
    $("fence-preview").disabled = !shape;
  }

  _draw() {
    const source = this.map.getSource(SOURCE);
    if (!source) return;
    const features = [];
    const line = (coordinates, band) => features.push({ type: "Feature", properties: { band },
      geometry: { type: "LineString", coordinates } });
    if (this.kind === "polygon") {
      if (this.state === "done") {
        const ring = [...this.points, this.points[0]];
        features.push({ type: "Feature", properties: {}, geometry: { type: "Polygon", coordinates: [ring] } });
      } else if (this.points.length) {
        line(this.points, false);
        if (this.cursor) line([this.points[this.points.length - 1], this.cursor, this.points[0]], true);
      }
      for (const p of this.points) features.push({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: p } });
    } else if (this.centre) {
      const radius = this.radiusM ?? (this.cursor ? distanceM(this.centre, this.cursor) : 0);
      if (radius > 0) {
        const ring = circleRing(this.centre, radius);
        if (this.state === "done") {
          features.push({ type: "Feature", properties: {}, geometry: { type: "Polygon", coordinates: [ring] } });
        } else {
          line(ring, true);
        }
      }
      features.push({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: this.centre } });
    }
    source.setData({ type: "FeatureCollection", features });
  }

  async _copy() {
    this.yaml.select();
    try {
      await navigator.clipboard.writeText(this.yaml.value);
      $("fence-copy").textContent = "Copied";
    } catch {
      document.execCommand("copy"); // no clipboard API (plain http): the selected text
    }
    setTimeout(() => ($("fence-copy").textContent = "Copy"), 1500);
  }

  /** Posts the textarea's text to the dry-run over the last 24 hours and lists what it would have fired. */
  async preview() {
    const to = Date.now();
    this.panel.dataset.previewState = "loading";
    $("fence-summary").textContent = "Trying it on the last 24 hours…";
    $("fence-events").replaceChildren();
    $("fence-errors").replaceChildren();
    let body;
    try {
      body = await this.api.post("/api/geofences/dry-run", { yaml: this.yaml.value, from: to - DAY_MS, to });
    } catch (err) {
      body = { events: [], errors: [err.message] };
    }
    this._showPreview(body.events || [], body.errors || []);
  }

  _showPreview(events, errors) {
    const counts = new Map();
    for (const e of events) counts.set(e.type, (counts.get(e.type) || 0) + 1);
    const parts = [...counts].map(([type, n]) => `${n} ${type}`);
    $("fence-summary").textContent = errors.length && !events.length
      ? "The text has problems:"
      : `${events.length} event${events.length === 1 ? "" : "s"} in the last 24 h${parts.length ? `: ${parts.join(", ")}` : ""}`
        + (events.length > MAX_LISTED ? ` (the first ${MAX_LISTED} listed)` : "");
    $("fence-summary").dataset.count = String(events.length);
    const items = events.slice(0, MAX_LISTED).map((e) => {
      const li = document.createElement("li");
      li.dataset.type = e.type;
      li.dataset.device = e.device;
      li.dataset.ts = String(e.ts);
      const type = document.createElement("span");
      type.className = `type type-${e.type}`;
      type.textContent = e.type;
      const time = document.createElement("time");
      time.dateTime = new Date(e.ts).toISOString();
      time.textContent = new Date(e.ts).toLocaleString();
      const what = document.createElement("span");
      what.className = "what";
      what.textContent = `${e.device} · ${e.rule}`;
      li.append(type, time, what);
      return li;
    });
    $("fence-events").replaceChildren(...items);
    $("fence-errors").replaceChildren(...errors.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    this.panel.dataset.previewState = errors.length ? "error" : "done";
  }

  /** For the console and the tests: the drawing. */
  describe() {
    return { state: this.state, kind: this.kind, points: this.points, centre: this.centre, radiusM: this.radiusM };
  }
}
