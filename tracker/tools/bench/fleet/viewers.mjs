// Viewers of the load generator: Socket.IO /viewer clients on raw websockets, each subscribed to a fleet.
//
// The fleet bench runs one viewer that parses every `positions` event, to time fix -> viewer. The soak
// keeps 20 of them lean: every event and its bytes are counted, but only one in `parse_every` is parsed
// (its positions counted and timed), so that the viewers cost little next to the server they watch.
// With `cfg.reconnect` a viewer whose connection drops comes back after the devices' backoff and
// subscribes again.

import { performance } from "node:perf_hooks";
import { backoffMs } from "./device.mjs";
import { S, note } from "./windows.mjs";

const POSITIONS = '42/viewer,["positions",';

class Viewer {
  constructor(token, fleet, WebSocket) {
    this.token = token;
    this.fleet = fleet;
    this.WebSocket = WebSocket;
    this.ws = null;
    this.subscribed = false;
    this.everSubscribed = false;
    this.failures = 0;
    this.seen = 0; // positions events, to pick one in parse_every
    this.settled = null; // the first subscription's resolve
  }

  // the first subscription: {subscribed, error}
  start() {
    return new Promise((resolve) => {
      this.settled = resolve;
      this.open();
    });
  }

  settle(result) {
    if (this.settled !== null) {
      this.settled(result);
      this.settled = null;
    }
  }

  open() {
    const ws = new this.WebSocket(S.cfg.url, { perMessageDeflate: false, handshakeTimeout: 30000 });
    this.ws = ws;
    ws.on("error", (err) => {
      note(`viewer socket error: ${err.message}`);
      this.settle({ subscribed: false, error: err.message });
    });
    ws.on("close", (code) => this.onClose(code));
    ws.on("message", (buf) => this.onMessage(buf));
  }

  onMessage(buf) {
    if (buf.length === 1 && buf[0] === 0x32) {
      this.ws.send("3");
      return;
    }
    const s = buf.toString();
    if (s.startsWith(POSITIONS)) this.onPositions(s);
    else if (s.startsWith("43/viewer,1[")) {
      const ack = JSON.parse(s.slice(12, -1));
      if (ack.ok) {
        this.subscribed = true;
        this.everSubscribed = true;
        this.failures = 0;
        this.settle({ subscribed: true });
      } else this.settle({ subscribed: false, error: JSON.stringify(ack) });
    } else if (s.startsWith("40/viewer,")) this.ws.send(`42/viewer,1["subscribe",{"fleet":"${this.fleet}"}]`);
    else if (s.startsWith("44/viewer,")) {
      this.settle({ subscribed: false, error: s.slice(0, 200) });
      this.ws.close();
    } else if (s[0] === "0") this.ws.send(`40/viewer,${JSON.stringify({ token: this.token })}`);
  }

  onPositions(s) {
    S.cur.positionEvents += 1;
    S.cur.viewerBytes += s.length;
    this.seen += 1;
    if (this.seen % (S.cfg.parse_every ?? 1) !== 0) return;
    const now = Date.now();
    const list = JSON.parse(s.slice(10))[1];
    S.cur.positions += list.length;
    for (const p of list) S.cur.viewerMs.push(now - p.ts);
  }

  onClose(code) {
    this.ws = null;
    this.subscribed = false;
    S.cur.disconnects += 1;
    this.settle({ subscribed: false, error: `closed with ${code}` });
    if (S.cfg.reconnect && this.everSubscribed && !S.stopping) {
      setTimeout(() => this.open(), backoffMs(this.failures++));
    }
  }
}

let viewers = [];

// every viewer of cfg.viewers ([{token, fleet}]) connected and subscribed, at once
export async function connectViewers(WebSocket) {
  const t0 = performance.now();
  viewers = S.cfg.viewers.map((v) => new Viewer(v.token, v.fleet, WebSocket));
  const results = await Promise.all(viewers.map((v) => v.start()));
  const ok = results.filter((r) => r.subscribed).length;
  const errors = results.filter((r) => !r.subscribed).map((r) => r.error);
  return {
    subscribed: ok === viewers.length,
    subscribed_count: ok,
    viewers: viewers.length,
    error: errors[0],
    connect_s: (performance.now() - t0) / 1000,
  };
}

export function subscribedViewers() {
  return viewers.filter((v) => v.subscribed).length;
}

export function closeViewers() {
  for (const v of viewers) if (v.ws) v.ws.terminate();
}
