// The live feed of geofence events, newest first, each an element with the stable hook `data-event-id`
// (the replay keeps a second one, with the messages of its window too, `data-message-id`).
// It starts with the last hour from `/api/events` and then grows from the socket's `geofence` events. After
// a reconnect it reads `/api/events` again, so events fired while the socket was down still show; an event
// seen both ways shows once.
import { clock } from "./format.js";

const KEEP = 300;
const BACKFILL_MS = 60 * 60_000;

export class EventFeed {
  constructor(element, onPick) {
    this.element = element;
    this.seen = new Set();
    element.addEventListener("click", (event) => {
      const li = event.target.closest("[data-event-id]");
      if (li && li.dataset.lat) onPick(li.dataset.device, Number(li.dataset.lon), Number(li.dataset.lat));
    });
  }

  clear() {
    this.element.replaceChildren();
    this.seen.clear();
  }

  /** Loads the events of the last hour, or since the newest shown (the API pages oldest first). */
  async backfill(api, fleetFilter) {
    let cursor = null;
    const newest = this.element.firstElementChild;
    const from = newest ? Number(newest.dataset.ts) : Date.now() - BACKFILL_MS;
    for (let page = 0; page < 5; page++) {
      const body = await api.get("/api/events", { from, limit: 1000, cursor });
      for (const e of body.events) if (!fleetFilter || e.fleet === fleetFilter) this.add(e);
      cursor = body.next_cursor;
      if (!cursor) break;
    }
  }

  add(event) {
    if (this.seen.has(event.id)) return;
    this.seen.add(event.id);
    const li = document.createElement("li");
    li.dataset.eventId = event.id;
    li.dataset.device = event.device;
    li.dataset.lat = event.lat;
    li.dataset.lon = event.lon;
    li.dataset.ts = event.ts;
    const type = document.createElement("span");
    type.className = `type type-${event.type}`;
    type.textContent = event.type;
    const time = document.createElement("time");
    time.dateTime = new Date(event.ts).toISOString();
    time.textContent = clock(event.ts);
    const who = document.createTextNode(` ${event.device}`);
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = `${event.fence} · rule ${event.rule} · ${event.fleet}`;
    li.append(type, time, who, what);
    this._insert(li, event.ts);
  }

  /** A message of a device's conversation (the replay shows them with the events), `data-message-id`. */
  addMessage(message) {
    const key = `message:${message.id}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const li = document.createElement("li");
    li.className = "feed-message";
    li.dataset.eventId = key;
    li.dataset.messageId = message.id;
    li.dataset.device = message.device;
    li.dataset.ts = message.ts;
    const type = document.createElement("span");
    type.className = "type type-message";
    type.textContent = message.direction === "from_device" ? "from" : "to";
    const time = document.createElement("time");
    time.dateTime = new Date(message.ts).toISOString();
    time.textContent = clock(message.ts);
    const what = document.createElement("span");
    what.className = "what";
    const body = message.body;
    what.textContent = typeof body === "string" ? body : body && typeof body.text === "string" ? body.text
      : JSON.stringify(body);
    li.append(type, time, document.createTextNode(` ${message.device}`), what);
    this._insert(li, message.ts);
  }

  _insert(li, ts) {
    // Newest first: an event older than the top one (a late backlog) goes below the newer ones.
    let before = this.element.firstElementChild;
    while (before && Number(before.dataset.ts) > ts) {
      before = before.nextElementSibling;
    }
    this.element.insertBefore(li, before);
    while (this.element.childElementCount > KEEP) {
      const old = this.element.lastElementChild;
      this.seen.delete(old.dataset.eventId);
      old.remove();
    }
  }
}
