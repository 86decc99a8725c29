// The conversation with the selected device: its messages both ways, oldest at the top (the last
// PAGE from `/messages`, then live `message` events), the dispatchers' with delivery ticks from the server's
// `message_status` events (✓ queued, ✓✓ sent, blue ✓✓ delivered), and the form that sends one. A message a
// device sends while its conversation is closed counts as unread until it is opened; the device list shows
// the count. Unread counts live in this page only: they start at zero on each load.
// Hooks for tests: each message is an `li` with `data-message-id`, `data-direction` and `data-state`.
import { clock } from "./format.js";

const PAGE = 50;
const ORDER = ["sending", "queued", "sent", "acked"]; // how far a message to the device got
const TICKS = { sending: "…", queued: "✓", sent: "✓✓", acked: "✓✓", received: "" };
const TITLES = { sending: "sending", queued: "queued", sent: "sent to the device", acked: "delivered" };

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

/** A body as a line of the conversation: a string as it is, `text` of an object if it has one, else JSON. */
export function bodyText(body) {
  if (typeof body === "string") return body;
  if (body && typeof body === "object" && typeof body.text === "string") return body.text;
  return JSON.stringify(body);
}

export class Conversation {
  /** `send(device, body)` resolves with the server's ack; `onUnread(device)` says a device's count changed. */
  constructor(api, send, onUnread) {
    this.api = api;
    this.sendMessage = send;
    this.onUnread = onUnread;
    this.id = null;
    this.unread = new Map(); // device -> messages from it not seen yet
    this.list = document.getElementById("sent");
    this.body = document.getElementById("send-body");
    document.getElementById("send").addEventListener("submit", (e) => {
      e.preventDefault();
      this._send();
    });
    this.body.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        this._send();
      }
    });
  }

  /** How many messages from `device` wait to be read. */
  unreadCount(device) {
    return this.unread.get(device) || 0;
  }

  /** Open the conversation with `id` (null: none): its unread messages count as read. */
  async show(id) {
    this.id = id;
    this.list.replaceChildren();
    if (!id) return;
    if (this.unread.delete(id)) this.onUnread(id);
    try {
      const page = await this.api.get(`/api/devices/${encodeURIComponent(id)}/messages`, { limit: PAGE });
      if (this.id !== id) return;
      // Newest first from the server; a live one that came meanwhile is already shown, and stays last.
      const first = this.list.firstChild;
      for (const m of page.messages.slice().reverse()) {
        if (!this._item(m.id)) this.list.insertBefore(this._li(m), first);
      }
      this._scroll();
    } catch (err) {
      if (this.id === id) {
        const li = document.createElement("li");
        li.className = "note";
        li.textContent = `Messages unavailable: ${err.message}`;
        this.list.prepend(li);
      }
    }
  }

  /** A `message` event: a new message of a device of the watched fleets, either way. */
  message(m) {
    if (m.device === this.id) {
      const known = this._item(m.id);
      if (!known) {
        this.list.append(this._li({ ...m, state: m.direction === "from_device" ? "received" : "queued" }));
        this._scroll();
      }
    } else if (m.direction === "from_device") {
      this.unread.set(m.device, this.unreadCount(m.device) + 1);
      this.onUnread(m.device);
    }
  }

  /** A `message_status` event: queued, sent or acked. */
  status(s) {
    const li = this._item(s.id);
    if (li) this._state(li, s.state);
  }

  _item(id) {
    return this.list.querySelector(`li[data-message-id="${CSS.escape(id)}"]`);
  }

  _li(m) {
    const li = document.createElement("li");
    li.dataset.direction = m.direction;
    if (m.id) li.dataset.messageId = m.id;
    li.innerHTML = '<span class="text"></span><span class="meta"><span class="who"></span> '
      + '<time></time> <span class="state"></span></span>';
    li.querySelector(".text").textContent = bodyText(m.body);
    li.querySelector(".who").textContent = m.direction === "to_device" ? m.from || "" : "";
    li.querySelector("time").textContent = m.ts ? clock(m.ts) : "";
    li.dataset.state = m.direction === "from_device" ? "received" : "sending";
    if (m.direction === "to_device") this._state(li, m.state || "sending");
    return li;
  }

  _state(li, state, error) {
    if (li.dataset.direction !== "to_device") return;
    if (ORDER.indexOf(state) >= 0 && ORDER.indexOf(state) < ORDER.indexOf(li.dataset.state)) return;
    li.dataset.state = state;
    const mark = li.querySelector(".state");
    mark.textContent = error ? `failed: ${error}` : TICKS[state] || state;
    mark.title = TITLES[state] || state;
  }

  _scroll() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  async _send() {
    const text = this.body.value;
    const id = this.id;
    if (!text.trim() || !id) return;
    const li = this._li({ direction: "to_device", body: parseBody(text), ts: Date.now() });
    this.list.append(li);
    this._scroll();
    const ack = await this.sendMessage(id, parseBody(text));
    if (this.id !== id) return;
    if (!ack.ok) {
      this._state(li, "failed", ack.error);
      return;
    }
    if (this.body.value === text) this.body.value = "";
    // The `message` event may have come before the ack: keep this item, at the furthest state of both.
    const shown = this._item(ack.id);
    li.dataset.messageId = ack.id;
    this._state(li, "queued");
    if (shown && shown !== li) {
      this._state(li, shown.dataset.state);
      shown.remove();
    }
  }
}
