// The selected device: its facts (kept current as it moves), its trail of the last hours from `/trail`
// (extended live, broken where the device was silent, its fix count and length kept current), and a form
// that sends it a message and shows how far each one got
// (queued -> sent -> acked, from the server's `message_status` events).
import { NONE, degrees, deviceName, fixTime, km, kmh, latLon } from "./format.js";
import { LiveTrail } from "./trail.js";

export const TRAIL_HOURS = 3;
const TRIM_EVERY_MS = 60_000; // fixes older than the window leave the trail at least this often

/** A message body as typed: JSON when it parses as an object or array, else the text itself. */
export function parseBody(text) {
  const t = text.trim();
  if (t.startsWith("{") || t.startsWith("[")) {
    try {
      return JSON.parse(t);
    } catch {
      // not JSON after all: send the text
    }
  }
  return t;
}

export class DeviceDetails {
  /** `send(device, body)` sends a message over the live connection and resolves with the server's ack. */
  constructor(fleet, mapView, api, send) {
    this.fleet = fleet;
    this.map = mapView;
    this.api = api;
    this.sendMessage = send;
    this.id = null;
    this.panel = document.getElementById("details");
    this.title = document.getElementById("details-title");
    this.facts = document.getElementById("details-facts");
    this.trailNote = document.getElementById("details-trail");
    this.sent = document.getElementById("sent");
    this.body = document.getElementById("send-body");
    this.shownVersion = -1;
    this.trail = null; // a LiveTrail once `/trail` answered
    this.early = []; // positions that came while `/trail` was loading
    this.trimmedAt = 0;
    document.getElementById("send").addEventListener("submit", (e) => {
      e.preventDefault();
      this._send();
    });
  }

  async show(id) {
    this.id = id;
    this.panel.hidden = !id;
    this.sent.replaceChildren();
    this.map.setTrail(null);
    this.trail = null;
    this.early = [];
    if (!id) return;
    this.shownVersion = -1;
    this.render();
    this.trailNote.textContent = "Loading trail…";
    try {
      const feature = await this.api.get(`/api/devices/${encodeURIComponent(id)}/trail`, {
        from: Date.now() - TRAIL_HOURS * 3600_000,
      });
      if (this.id !== id) return;
      this.trail = new LiveTrail(feature);
      for (const p of this.early) this.trail.append(p.lon, p.lat, p.ts);
      this.early = [];
      this._drawTrail();
    } catch (err) {
      if (this.id === id) this.trailNote.textContent = `Trail unavailable: ${err.message}`;
    }
  }

  /** Positions arrived (already applied to the fleet): each newer one of the selected device extends its
   * trail. */
  positions(positions) {
    if (!this.id) return;
    let grew = false;
    for (const p of positions) {
      if (p.device !== this.id || p.lat == null) continue;
      if (this.trail) grew = this.trail.append(p.lon, p.lat, p.ts) || grew;
      else this.early.push(p);
    }
    if (grew) this._drawTrail();
  }

  /** The trail on the map and its line in the panel, as they are now. */
  _drawTrail() {
    this.trimmedAt = Date.now();
    this.trail.trim(this.trimmedAt - TRAIL_HOURS * 3600_000);
    this.map.setTrail(this.trail.feature());
    const fixes = this.trail.fixes;
    const parts = this.trail.runs.length > 1 ? `, ${this.trail.runs.length} parts` : "";
    this.trailNote.textContent = fixes
      ? `Trail, last ${TRAIL_HOURS} h: ${fixes} fixes, ${km(this.trail.distanceM)}${parts}`
      : `No fixes in the last ${TRAIL_HOURS} h`;
  }

  /** Redraws the facts when the fleet changed, and the trail when fixes left its window (called each frame;
   * cheap otherwise). */
  render() {
    if (!this.id) return;
    if (this.trail && Date.now() - this.trimmedAt > TRIM_EVERY_MS) this._drawTrail();
    const rec = this.fleet.get(this.id);
    if (!rec || this.shownVersion === this.fleet.version) return;
    this.shownVersion = this.fleet.version;
    this.title.textContent = deviceName(rec);
    const rows = [
      ["Device", rec.id],
      ["Fleet", rec.fleet],
      ["Status", rec.status],
      ["Last fix", fixTime(rec.ts, Date.now())],
      ["Speed", kmh(rec.speed)],
      ["Heading", degrees(rec.heading)],
      ["Position", latLon(rec.lat, rec.lon)],
      ["H3 cell", rec.cell || NONE],
    ];
    this.facts.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = k;
        dd.textContent = v;
        return [dt, dd];
      }),
    );
  }

  async _send() {
    const text = this.body.value;
    if (!text.trim() || !this.id) return;
    const li = document.createElement("li");
    li.dataset.state = "sending";
    li.innerHTML = '<span class="state">sending</span> · <span class="text"></span>';
    li.querySelector(".text").textContent = text.trim().slice(0, 200);
    this.sent.prepend(li);
    const ack = await this.sendMessage(this.id, parseBody(text));
    if (ack.ok) {
      this.body.value = "";
      li.dataset.messageId = ack.id;
      // A status may have raced ahead of the ack; keep the furthest state.
      if (li.dataset.state === "sending") this._state(li, "queued");
    } else {
      this._state(li, "failed", ack.error);
    }
  }

  /** A `message_status` event: queued, sent or acked. */
  status(s) {
    const li = this.sent.querySelector(`[data-message-id="${CSS.escape(s.id)}"]`);
    if (li) this._state(li, s.state);
  }

  _state(li, state, error) {
    const order = ["sending", "queued", "sent", "acked"];
    if (order.indexOf(state) >= 0 && order.indexOf(state) < order.indexOf(li.dataset.state)) return;
    li.dataset.state = state;
    li.querySelector(".state").textContent = error ? `failed: ${error}` : state === "acked" ? "✓ delivered" : state;
  }
}
