// The reports page: a day of each device of the token's fleets (GET /api/reports/daily) as a table sortable by
// any column, the fleets' totals under it, and the same day as a CSV download. A view of its own: it builds its
// panel, reads the API itself and imports no other view. The day is local to the time zone shown (the
// browser's, unless changed), as the API reads it.
//
// Hooks for tests: #reports[data-reports-state] is idle, loading, ready or error; each row is
// tr[data-device], each cell td[data-key][data-value] (the raw value: metres, seconds, ms, m/s); each header
// th[data-key] has aria-sort while it sorts the table.

import { NONE } from "./format.js";

const COLUMNS = [
  { key: "device", label: "Device", text: (r) => r.device },
  { key: "fleet", label: "Fleet", text: (r) => r.fleet },
  { key: "distance_m", label: "Distance", text: (r) => `${(r.distance_m / 1000).toFixed(1)} km`, num: true },
  { key: "moving_s", label: "Moving", text: (r) => hours(r.moving_s), num: true },
  { key: "stopped_s", label: "Stopped", text: (r) => hours(r.stopped_s), num: true },
  { key: "stops", label: "Stops", text: (r) => String(r.stops), num: true },
  { key: "max_speed", label: "Max speed", text: (r) => (r.max_speed == null ? NONE : `${Math.round(r.max_speed * 3.6)} km/h`), num: true },
  { key: "first_ts", label: "First fix", text: (r, tz) => time(r.first_ts, tz), num: true },
  { key: "last_ts", label: "Last fix", text: (r, tz) => time(r.last_ts, tz), num: true },
  { key: "events", label: "Events", text: (r) => String(total(r.events)), value: (r) => total(r.events), num: true },
  {
    key: "messages",
    label: "Messages",
    text: (r) => `${r.messages.to_device} ↓ ${r.messages.from_device} ↑`,
    value: (r) => r.messages.to_device + r.messages.from_device,
    num: true,
  },
];

function total(counts) {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

function hours(seconds) {
  const m = Math.round(seconds / 60);
  return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")} h`;
}

/** A fix's time of day in the report's time zone (the browser's when the zone is unknown to it). */
function time(ts, tz) {
  if (ts == null) return NONE;
  const options = { hour: "2-digit", minute: "2-digit" };
  try {
    return new Date(ts).toLocaleTimeString([], { ...options, timeZone: tz });
  } catch {
    return new Date(ts).toLocaleTimeString([], options);
  }
}

function valueOf(column, row) {
  return column.value ? column.value(row) : row[column.key];
}

/** Yesterday in the browser's calendar, as YYYY-MM-DD. */
function yesterday() {
  const d = new Date(Date.now() - 86_400_000);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k.startsWith("aria-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

export class ReportsView {
  /**
   * `token` signs the requests (the CSV is fetched, not linked, so that it carries it); `fleets()` lists the
   * fleets to offer (the granted ones, or those seen for a token of every fleet).
   */
  constructor(parent, token, fleets) {
    this.token = token;
    this.fleets = fleets;
    this.rows = [];
    this.sort = { key: "device", dir: 1 };
    this.date = el("input", { id: "reports-date", type: "date", required: true, value: yesterday() });
    this.fleet = el("select", { id: "reports-fleet" });
    this.tz = el("input", {
      id: "reports-tz",
      value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
      size: 16,
      "aria-label": "Time zone",
    });
    this.exportButton = el("button", { id: "reports-export", type: "button", disabled: true }, "Export CSV");
    const close = el("button", { id: "reports-close", type: "button", "aria-label": "Close reports" }, "×");
    const form = el(
      "form",
      { id: "reports-form", className: "reports-form" },
      el("strong", {}, "Daily report"),
      el("label", {}, "Day ", this.date),
      el("label", {}, "Fleet ", this.fleet),
      el("label", {}, "Time zone ", this.tz),
      el("button", { type: "submit" }, "Show"),
      this.exportButton,
      close,
    );
    this.note = el("p", { id: "reports-note", className: "muted" });
    this.head = el("tr");
    this.body = el("tbody");
    this.foot = el("tfoot");
    this.panel = el(
      "section",
      { id: "reports", className: "reports", hidden: true, "aria-label": "Daily report" },
      form,
      this.note,
      el("div", { className: "reports-scroll" }, el("table", { id: "reports-table" }, el("thead", {}, this.head), this.body, this.foot)),
    );
    this.panel.dataset.reportsState = "idle";
    for (const c of COLUMNS) {
      const th = el("th", { scope: "col", className: c.num ? "num" : "" }, c.label);
      th.dataset.key = c.key;
      th.addEventListener("click", () => this.sortBy(c.key));
      this.head.append(th);
    }
    parent.append(this.panel);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    this.exportButton.addEventListener("click", () => this.download());
    close.addEventListener("click", () => this.close());
  }

  open() {
    const chosen = this.fleet.value;
    this.fleet.replaceChildren(el("option", { value: "" }, "All my fleets"), ...this.fleets().map((f) => el("option", { value: f }, f)));
    this.fleet.value = chosen;
    this.panel.hidden = false;
    if (this.panel.dataset.reportsState === "idle") this.load();
  }

  close() {
    this.panel.hidden = true;
  }

  query(format) {
    const q = new URLSearchParams({ date: this.date.value, tz: this.tz.value.trim() || "UTC", format });
    if (this.fleet.value) q.set("fleet", this.fleet.value);
    return `/api/reports/daily?${q}`;
  }

  async fetch(format) {
    const response = await fetch(this.query(format), { headers: { Authorization: `Bearer ${this.token}` } });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // not JSON: keep the status line
      }
      throw new Error(message);
    }
    return response;
  }

  async load() {
    this.panel.dataset.reportsState = "loading";
    this.note.textContent = "Loading…";
    this.exportButton.disabled = true;
    try {
      const report = await (await this.fetch("json")).json();
      this.rows = report.days;
      this.shownTz = this.tz.value.trim() || "UTC";
      this.totals = report.fleets || [];
      this.render();
      this.note.textContent = `${this.rows.length} devices · ${this.date.value} in ${this.tz.value}`;
      this.exportButton.disabled = false;
      this.panel.dataset.reportsState = "ready";
    } catch (err) {
      this.rows = [];
      this.render();
      this.note.textContent = err.message;
      this.panel.dataset.reportsState = "error";
    }
  }

  sortBy(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    this.render();
  }

  sorted() {
    const column = COLUMNS.find((c) => c.key === this.sort.key);
    const { dir } = this.sort;
    return [...this.rows].sort((a, b) => {
      const x = valueOf(column, a);
      const y = valueOf(column, b);
      if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1; // nulls last either way
      const order = typeof x === "string" ? x.localeCompare(y) : x - y;
      return order * dir || a.device.localeCompare(b.device);
    });
  }

  render() {
    for (const th of this.head.children) {
      if (th.dataset.key === this.sort.key) th.setAttribute("aria-sort", this.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    this.body.replaceChildren(...this.sorted().map((row) => this.line(row, { device: row.device })));
    this.foot.replaceChildren(
      ...(this.totals || []).map((f) => this.line({ ...f, device: `Fleet total (${f.active}/${f.devices} active)` }, {})),
    );
  }

  line(row, data) {
    const tr = el("tr");
    Object.assign(tr.dataset, data);
    for (const c of COLUMNS) {
      const td = el("td", { className: c.num ? "num" : "" }, c.text(row, this.shownTz));
      td.dataset.key = c.key;
      const value = valueOf(c, row);
      td.dataset.value = value == null ? "" : String(value);
      if (c.key === "events") td.title = Object.entries(row.events).filter(([, n]) => n).map(([k, n]) => `${k}: ${n}`).join(", ");
      tr.append(td);
    }
    return tr;
  }

  async download() {
    try {
      const blob = await (await this.fetch("csv")).blob();
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: `report-${this.date.value}${this.fleet.value ? `-${this.fleet.value}` : ""}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      this.note.textContent = err.message;
    }
  }
}
