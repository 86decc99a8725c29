// The device list, virtualised: only the rows in view (plus a few) exist in the DOM, positioned inside a
// spacer as tall as the whole list, so 10,000 devices cost the page as much as 30. Each row carries the
// stable hooks `data-device-id` and `data-ts` (newest fix time, ms), and `data-unread` with a badge while
// the device has messages not read yet (`unread(id)`), and `data-trip-status` with a mark while it is on a
// trip (`trip(id)`, the open trip's status). Searching narrows the list by id, name or fleet; it is
// sorted by name, then id, and re-sorted only when devices are added.
import { STATUS_COLOURS, fleetColour } from "./colours.js";
import { ago, deviceName, kmh } from "./format.js";

const ROW_HEIGHT = 44;
const OVERSCAN = 6;
const REDRAW_MS = 250; // rows in view are redrawn at most this often (and each second for "ago" times)

export class DeviceList {
  constructor(element, countElement, fleet, onSelect, unread = () => 0, trip = () => undefined) {
    this.element = element;
    this.inner = element.firstElementChild;
    this.countElement = countElement;
    this.fleet = fleet;
    this.unread = unread;
    this.trip = trip;
    this.filter = "";
    this.items = [];
    this.sortedFor = -1;
    this.drawnVersion = -1;
    this.drawnAt = 0;
    this.selected = null;
    this.colourMode = "status";
    this.rows = [];
    element.addEventListener("scroll", () => this.render(performance.now(), true), { passive: true });
    element.addEventListener("click", (event) => {
      const row = event.target.closest("[data-device-id]");
      if (row) onSelect(row.dataset.deviceId, true);
    });
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.sortedFor = -1;
  }

  setSelected(id) {
    this.selected = id;
    this.drawnVersion = -1;
  }

  /** Redraw the rows in view on the next frame (something they show changed outside the fleet). */
  refresh() {
    this.drawnVersion = -1;
    this.drawnAt = 0;
  }

  setColourMode(mode) {
    this.colourMode = mode;
    this.drawnVersion = -1;
  }

  /** The row index of a device in the current order, or -1. */
  indexOf(id) {
    return this.items.findIndex((r) => r.id === id);
  }

  scrollTo(id) {
    const i = this.indexOf(id);
    if (i < 0) return;
    const top = i * ROW_HEIGHT;
    if (top < this.element.scrollTop || top + ROW_HEIGHT > this.element.scrollTop + this.element.clientHeight) {
      this.element.scrollTop = top - this.element.clientHeight / 2;
    }
  }

  _sort() {
    const f = this.filter;
    const all = [...this.fleet.byId.values()];
    const matching = f
      ? all.filter((r) => r.id.toLowerCase().includes(f) || (r.name && r.name.toLowerCase().includes(f))
          || r.fleet.toLowerCase().includes(f))
      : all;
    matching.sort((a, b) => deviceName(a).localeCompare(deviceName(b)) || a.id.localeCompare(b.id));
    this.items = matching;
    this.sortedFor = this.fleet.structureVersion;
    this.inner.style.height = `${matching.length * ROW_HEIGHT}px`;
    this.countElement.textContent =
      matching.length === all.length ? `${all.length}` : `${matching.length} of ${all.length}`;
  }

  /** Redraws the rows in view when something changed (or `force`); cheap when nothing did. */
  render(now, force = false) {
    const wallNow = Date.now();
    const resorted = this.sortedFor !== this.fleet.structureVersion;
    if (resorted) this._sort();
    const due = now - this.drawnAt >= (this.drawnVersion === this.fleet.version ? 1000 : REDRAW_MS);
    if (!force && !resorted && !due) return false;
    this.drawnAt = now;
    this.drawnVersion = this.fleet.version;

    const first = Math.max(0, Math.floor(this.element.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const count = Math.ceil(this.element.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN;
    const last = Math.min(this.items.length, first + count);
    while (this.rows.length < last - first) {
      const row = document.createElement("div");
      row.className = "row";
      row.setAttribute("role", "listitem");
      row.innerHTML = '<span class="unread" hidden></span><span class="name"></span><span class="sub"></span>'
        + '<span class="on-trip" hidden></span>';
      this.inner.appendChild(row);
      this.rows.push(row);
    }
    for (let i = 0; i < this.rows.length; i++) {
      const row = this.rows[i];
      const rec = this.items[first + i];
      if (rec === undefined) {
        row.hidden = true;
        row.removeAttribute("data-device-id");
        continue;
      }
      row.hidden = false;
      row.style.top = `${(first + i) * ROW_HEIGHT}px`;
      if (row.dataset.deviceId !== rec.id) row.dataset.deviceId = rec.id;
      const ts = rec.ts == null ? "" : String(rec.ts);
      if (row.dataset.ts !== ts) row.dataset.ts = ts;
      row.dataset.status = rec.status;
      row.setAttribute("aria-selected", rec.id === this.selected ? "true" : "false");
      row.style.setProperty("--dot", this.colourMode === "fleet" ? fleetColour(rec.fleet) : STATUS_COLOURS[rec.status]);
      const unread = this.unread(rec.id);
      if (unread) row.dataset.unread = String(unread);
      else row.removeAttribute("data-unread");
      row.firstChild.hidden = !unread;
      row.firstChild.textContent = unread ? String(unread) : "";
      const trip = this.trip(rec.id);
      if (trip) row.dataset.tripStatus = trip;
      else row.removeAttribute("data-trip-status");
      row.children[3].hidden = !trip;
      row.children[3].title = trip ? `on a trip: ${trip}` : "";
      row.children[1].textContent = rec.name && rec.name !== rec.id ? `${rec.name} · ${rec.id}` : rec.id;
      row.children[2].textContent = `${rec.fleet} · ${rec.status} · ${kmh(rec.speed)} · ${ago(rec.ts, wallNow)}`;
    }
    return true;
  }
}
