// The selected device: its facts (kept current as it moves) and its trail of the last hours from `/trail`
// (extended live, broken where the device was silent, its fix count and length kept current). The
// conversation with it, below, is conversation.js.
import { NONE, degrees, deviceName, fixTime, km, kmh, latLon } from "./format.js";
import { LiveTrail } from "./trail.js";

export const TRAIL_HOURS = 3;
const TRIM_EVERY_MS = 60_000; // fixes older than the window leave the trail at least this often

export class DeviceDetails {
  constructor(fleet, mapView, api, trailGapS = 0) {
    this.fleet = fleet;
    this.trailGapS = trailGapS; // the server's TRACKER_TRAIL_GAP_S: /trail breaks the line only when asked
    this.map = mapView;
    this.api = api;
    this.id = null;
    this.panel = document.getElementById("details");
    this.title = document.getElementById("details-title");
    this.facts = document.getElementById("details-facts");
    this.trailNote = document.getElementById("details-trail");
    this.shownVersion = -1;
    this.trail = null; // a LiveTrail once `/trail` answered
    this.early = []; // positions that came while `/trail` was loading
    this.trimmedAt = 0;
  }

  async show(id) {
    this.id = id;
    this.panel.hidden = !id;
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
        gap_s: this.trailGapS,
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
}
