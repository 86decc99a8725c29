// History replay: up to MAX_DEVICES devices over a window of up to 7 days, a time slider, play and pause at
// 1x-600x; each device moves along its trail and the window's geofence events and messages come into the
// replay's feed as the clock passes them. While it is open the live devices and their clusters are hidden.
//
// Each trail is read once with `/trail?max_points=`, sized to the screen (about two points per pixel of the
// map's longer side, whatever the window holds: a week at 1 Hz is 600k fixes), with the times of its
// points, so moving the clock costs a binary search and an interpolation per device, never a request. The
// trails are one GeoJSON source, set once per load; the devices (20 at most) are DOM markers, an arrow and
// the name, coloured per device: moving one is a CSS transform, with no repaint of the map, which without a
// GPU costs a frame or more (a WebGL layer of them, redrawn as the clock ran, played at 5-16 frames per
// second in headless Chromium; the markers keep the page's idle rate).
//
// Hooks: `#replay[data-replay-state]` is `idle`, `loading`, `ready`, `playing`, `paused` or `error`;
// `#replay-clock[data-ts]` the clock; `#replay-feed` holds `[data-event-id]` and `[data-message-id]`;
// `tracker.replay()` in the console says where each device is drawn.
import * as maplibregl from "maplibre-gl";
import { PALETTE } from "./colours.js";
import { ReplayTrack } from "./replaytrack.js";

export const MAX_DEVICES = 20;
const MAX_WINDOW_MS = 7 * 86_400_000;
const DEFAULT_WINDOW_MS = 86_400_000;
const PAGES = 20; // events and messages: at most this many pages of 1000 per device
const NOTHING = { type: "FeatureCollection", features: [] };
// While playing, the devices move at most every DRAW_MIN_MS, spaced out (to DRAW_MAX_MS) while frames are
// slow, as redraw.js paces the live devices.
const DRAW_MIN_MS = 16;
const DRAW_MAX_MS = 1000;
const SLOW_FRAME_MS = 1000 / 40;
const FAST_FRAME_MS = 1000 / 50;

function $(id) {
  return document.getElementById(id);
}

/** A time (ms) as a datetime-local input's value, in the browser's zone. */
function localInput(ts) {
  const d = new Date(ts - new Date(ts).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}

export class Replay {
  /** `names(id)` says what a device is called; `known()` lists the device ids to pick from; `feed` is an
   * EventFeed on `#replay-feed`. */
  constructor({ api, mapView, feed, names, known, trailGapS, onOpen }) {
    this.api = api;
    this.mapView = mapView;
    this.names = names;
    this.known = known;
    this.gapS = trailGapS || 0;
    this.onOpen = onOpen;
    this.chosen = [];
    this.tracks = [];
    this.items = []; // events and messages of the window, oldest first
    this.shownUpTo = 0; // items[0 .. shownUpTo) are in the feed
    this.clock = null;
    this.playing = false;
    this.markers = new Map(); // device -> its marker (arrow and name)
    this.drawn = new Map(); // device -> [lon, lat] where its marker is, while it is on the map
    this.panel = $("replay");
    this.slider = $("replay-slider");
    this.clockEl = $("replay-clock");
    this.note = $("replay-note");
    this.feed = feed;
    this._wire();
  }

  _wire() {
    $("replay-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    $("replay-device").addEventListener("change", (e) => {
      if (this.add(e.target.value.trim())) e.target.value = "";
    });
    $("replay-device").addEventListener("input", (e) => this._suggest(e.target.value));
    $("replay-close").addEventListener("click", () => this.close());
    $("replay-play").addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.slider.addEventListener("input", () => this.seek(this.from + Number(this.slider.value) * 1000));
  }

  _state(state) {
    this.panel.dataset.replayState = state;
    $("replay-play").textContent = state === "playing" ? "❚❚" : "▶";
    $("replay-play").setAttribute("aria-label", state === "playing" ? "Pause" : "Play");
  }

  /** Opens the panel (with `devices` chosen, if given) and hides the live devices. */
  open(devices = []) {
    if (this.panel.hidden) {
      this.panel.hidden = false;
      document.body.dataset.replay = "on";
      this.onOpen(true);
      const now = Date.now();
      if (!$("replay-from").value) $("replay-from").value = localInput(now - DEFAULT_WINDOW_MS);
      if (!$("replay-to").value) $("replay-to").value = localInput(now);
      this._state("idle");
    }
    for (const id of devices) this.add(id);
  }

  close() {
    this.pause();
    this.panel.hidden = true;
    delete document.body.dataset.replay;
    this._clear();
    this.onOpen(false);
  }

  /** Adds a device to replay; false when it is unknown, already there, or there are MAX_DEVICES. */
  add(id) {
    if (!id || this.chosen.includes(id) || !this.known().includes(id)) return false;
    if (this.chosen.length >= MAX_DEVICES) {
      this.note.textContent = `At most ${MAX_DEVICES} devices at once`;
      return false;
    }
    this.chosen.push(id);
    this._chips();
    return true;
  }

  _chips() {
    $("replay-chosen").replaceChildren(
      ...this.chosen.map((id) => {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "chip";
        chip.dataset.replayDevice = id;
        chip.textContent = `${this.names(id)} ×`;
        chip.addEventListener("click", () => {
          this.chosen = this.chosen.filter((x) => x !== id);
          this._chips();
        });
        return chip;
      }),
    );
  }

  /** The datalist offers the first 100 known devices that match what is typed. */
  _suggest(text) {
    const t = text.toLowerCase();
    const ids = this.known().filter((id) => id.toLowerCase().includes(t) || this.names(id).toLowerCase().includes(t));
    $("replay-devices").replaceChildren(
      ...ids.slice(0, 100).map((id) => Object.assign(document.createElement("option"), { value: id })),
    );
  }

  /** Reads the chosen devices' trails, events and messages of the window; then the clock is at its start. */
  async load() {
    const from = new Date($("replay-from").value).getTime();
    const to = new Date($("replay-to").value).getTime();
    const fail = (text) => {
      this.note.textContent = text;
      this._state("error");
    };
    if (!this.chosen.length) return fail("Choose a device to replay");
    if (!(from < to)) return fail("The window must end after it starts");
    if (to - from > MAX_WINDOW_MS) return fail("The window is at most 7 days");
    this.pause();
    this._clear();
    this._state("loading");
    this.note.textContent = "Loading…";
    const t0 = performance.now();
    const canvas = this.mapView.map.getCanvas();
    const maxPoints = Math.round(Math.min(20_000, Math.max(500, 2 * Math.max(canvas.clientWidth, canvas.clientHeight))));
    const devices = [...this.chosen];
    try {
      const [features, items] = await Promise.all([
        Promise.all(devices.map((id) => this.api.get(`/api/devices/${encodeURIComponent(id)}/trail`,
          { from, to: to + 1, max_points: maxPoints, gap_s: this.gapS }))),
        Promise.all(devices.map((id) => this._items(id, from, to))),
      ]);
      this.from = from;
      this.to = to;
      this.tracks = features.map((f, i) => new ReplayTrack(devices[i], f));
      this.items = items.flat().sort((a, b) => a.ts - b.ts);
    } catch (err) {
      return fail(`Replay unavailable: ${err.message}`);
    }
    this._draw();
    this.slider.max = String(Math.round((to - from) / 1000));
    this.slider.disabled = false;
    $("replay-play").disabled = false;
    this.openMs = performance.now() - t0;
    const fixes = this.tracks.reduce((n, t) => n + t.fixes, 0);
    const points = this.tracks.reduce((n, t) => n + t.points, 0);
    this.note.textContent = `${devices.length} device${devices.length > 1 ? "s" : ""}, ${fixes} fixes ` +
      `(${points} drawn), ${this.items.length} events and messages; opened in ${Math.round(this.openMs)} ms`;
    this.seek(from);
    this._state("ready");
  }

  /** The device's geofence events and messages of the window, each { kind, ts, data }. */
  async _items(id, from, to) {
    const out = [];
    let cursor = null;
    for (let page = 0; page < PAGES; page++) {
      const body = await this.api.get("/api/events", { device: id, from, to: to + 1, limit: 1000, cursor });
      for (const e of body.events) out.push({ kind: "event", ts: e.ts, data: e });
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    cursor = null;
    for (let page = 0; page < PAGES; page++) {
      const body = await this.api.get(`/api/devices/${encodeURIComponent(id)}/messages`, { limit: 1000, cursor });
      let older = false;
      for (const m of body.messages) {
        if (m.ts >= from && m.ts <= to) out.push({ kind: "message", ts: m.ts, data: m });
        older ||= m.ts < from;
      }
      cursor = body.next_cursor;
      if (!cursor || older) break;
    }
    return out;
  }

  /** The trails on the map, framed, and a label per device. */
  _draw() {
    const map = this.mapView.map;
    if (!map.getSource("replay-trails")) {
      map.addSource("replay-trails", { type: "geojson", data: NOTHING });
      map.addLayer({ id: "replay-trails", type: "line", source: "replay-trails",
        layout: { "line-join": "round", "line-cap": "round" },
        paint: { "line-color": ["get", "colour"], "line-width": 3, "line-opacity": 0.75 } });
    }
    const features = this.tracks.filter((t) => t.points).map((t, i) => ({ ...t.feature,
      properties: { device: t.id, colour: PALETTE[i % PALETTE.length] } }));
    map.getSource("replay-trails").setData({ type: "FeatureCollection", features });
    const bounds = new maplibregl.LngLatBounds();
    for (const t of this.tracks) for (let i = 0; i < t.points; i++) bounds.extend([t.lon[i], t.lat[i]]);
    if (!bounds.isEmpty()) {
      this.mapView.userMoved = true;
      map.fitBounds(bounds, { padding: 60, maxZoom: 16, duration: 0 });
    }
    this.tracks.forEach((t, i) => {
      const el = document.createElement("div");
      el.className = "replay-marker";
      el.dataset.replayDevice = t.id;
      el.style.setProperty("--colour", PALETTE[i % PALETTE.length]);
      const arrow = document.createElement("i");
      const name = document.createElement("span");
      name.textContent = this.names(t.id);
      el.append(arrow, name);
      this.markers.set(t.id, { marker: new maplibregl.Marker({ element: el, anchor: "top-left",
        offset: [-9, -9] }), el, arrow });
    });
  }

  _clear() {
    this.tracks = [];
    this.items = [];
    this.shownUpTo = 0;
    this.clock = null;
    this.feed.clear();
    for (const m of this.markers.values()) m.marker.remove();
    this.markers.clear();
    this.drawn.clear();
    this.mapView.map.getSource("replay-trails")?.setData(NOTHING);
    this.slider.disabled = true;
    $("replay-play").disabled = true;
    this.clockEl.textContent = "";
    delete this.clockEl.dataset.ts;
  }

  play() {
    if (!this.tracks.length) return;
    if (this.clock >= this.to) this.seek(this.from);
    this.playing = true;
    this.lastFrame = null;
    this.playClock = this.clock;
    this.drawnAt = -Infinity;
    this.everyMs = this.everyMs ?? DRAW_MIN_MS;
    this.gapAverage = 1000 / 60;
    this._state("playing");
  }

  pause() {
    if (!this.playing) return;
    this.playing = false;
    this._state("paused");
  }

  /** Called each frame: moves the clock on while playing, by the frame's time times the speed, and
   * draws the devices there when a redraw is due (true when it drew). */
  tick(now) {
    if (!this.playing) return false;
    const last = this.lastFrame ?? now;
    this.lastFrame = now;
    this.gapAverage += (Math.min(now - last, 250) - this.gapAverage) * 0.1;
    this.playClock = Math.min(this.to, this.playClock + (now - last) * Number($("replay-speed").value));
    const end = this.playClock >= this.to;
    if (!end && now - this.drawnAt < this.everyMs) return false;
    this.drawnAt = now;
    if (this.gapAverage > SLOW_FRAME_MS) this.everyMs = Math.min(DRAW_MAX_MS, this.everyMs * 1.25);
    else if (this.gapAverage < FAST_FRAME_MS) this.everyMs = Math.max(DRAW_MIN_MS, this.everyMs * 0.9);
    this.seek(this.playClock, true);
    if (end) this.pause();
    return true;
  }

  /** Puts the clock at `ts`: every device where it was then, the feed up to then. */
  seek(ts, playing = false) {
    if (!this.tracks.length) return;
    const back = this.clock != null && ts < this.clock;
    this.clock = Math.max(this.from, Math.min(this.to, ts));
    if (!playing) this.playClock = this.clock;
    if (!playing || Math.abs(Number(this.slider.value) - (this.clock - this.from) / 1000) >= 1) {
      this.slider.value = String(Math.round((this.clock - this.from) / 1000));
    }
    this.clockEl.textContent = new Date(this.clock).toLocaleString();
    this.clockEl.dataset.ts = String(Math.round(this.clock));
    const bearing = this.mapView.map.getBearing();
    for (const t of this.tracks) {
      const p = t.at(this.clock);
      const m = this.markers.get(t.id);
      if (!p) {
        // Not yet seen in the window: not drawn.
        if (this.drawn.delete(t.id)) m.marker.remove();
        continue;
      }
      m.marker.setLngLat([p.lon, p.lat]);
      if (!this.drawn.has(t.id)) m.marker.addTo(this.mapView.map);
      this.drawn.set(t.id, [p.lon, p.lat]);
      if (m.el.dataset.status !== p.status) m.el.dataset.status = p.status;
      const shape = p.heading == null ? "dot" : "";
      if (m.arrow.className !== shape) m.arrow.className = shape;
      const turn = p.heading == null ? "" : `rotate(${Math.round(p.heading - bearing)}deg)`;
      if (m.arrow.style.transform !== turn) m.arrow.style.transform = turn;
    }
    this._feedTo(back);
  }

  /** The feed holds the items up to the clock: added as it passes them, rebuilt when it goes back. */
  _feedTo(back) {
    if (back) {
      this.feed.clear();
      this.shownUpTo = 0;
    }
    let k = this.shownUpTo;
    while (k < this.items.length && this.items[k].ts <= this.clock) k++;
    for (let j = Math.max(this.shownUpTo, k - 300); j < k; j++) {
      const item = this.items[j];
      if (item.kind === "event") this.feed.add(item.data);
      else this.feed.addMessage(item.data);
    }
    this.shownUpTo = k;
  }

  /** What the replay shows (for tests, the bench and the console): `devices` maps each device drawn now to
   * its [lon, lat]. */
  state() {
    return {
      state: this.panel.dataset.replayState,
      clock: this.clock,
      from: this.from ?? null,
      to: this.to ?? null,
      openMs: this.openMs ?? null,
      drawEveryMs: this.everyMs ?? null,
      devices: Object.fromEntries(this.drawn),
      tracks: this.tracks.map((t) => ({ id: t.id, fixes: t.fixes, points: t.points })),
      feed: this.shownUpTo,
    };
  }
}
