// The load generator of `tracker bench fleet`: Socket.IO devices (or one viewer) on raw websockets.
//
// Why raw frames and not socket.io-client: the generator must cost a small fraction of what the server
// costs at the same load, or it measures itself. Each device is one `ws` socket speaking Engine.IO v4 /
// Socket.IO v5 text frames directly: frames are built as strings, only acks (tens of bytes) and the
// viewer's `positions` are parsed.
//
// Usage: node loadgen.mjs <node_modules folder holding ws>; settings as the first stdin line, then one
// JSON command per line (connect, load, mark, report, quit), each answered by one JSON line on stdout.
//
// Time is cut into windows by `mark`. Figures of what was sent (events, fixes, the latency of their
// answers, answered within 2 s) belong to the window the event was sent in; figures of what arrived
// (acks, accepted fixes, retry answers, viewer positions) to the window they arrived in.

import { createRequire } from "node:module";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import readline from "node:readline";

const require = createRequire(join(process.argv[2], "loadgen-anchor.js"));
const WebSocket = require("ws");

const MAX_BATCH = 1000; // fixes per event, the contract's largest
const ANSWERED_WITHIN_MS = 2000;
const LATE_MS = 100; // an open-loop send this late on its schedule counts as late (a saturated generator)
const CONNECT_ATTEMPTS = 3;

let cfg = null;
let mode = "idle"; // idle | open | closed
let phone = false; // open loop: on `retry`, wait and resend with what accumulated meanwhile
let batch = 1;
let inFlight = 0;
let scheduler = null;
const notes = [];

function note(message) {
  if (notes.length < 8 && !notes.includes(message)) notes.push(String(message).slice(0, 300));
}

class Win {
  constructor(name) {
    this.name = name;
    this.t0 = performance.now();
    this.t1 = null;
    // sent in this window
    this.events = 0;
    this.fixes = 0;
    this.generated = 0;
    this.answered = 0;
    this.within2s = 0;
    this.ackMs = [];
    this.retryMs = [];
    this.maxBySecond = []; // the slowest answer of the events sent in each second of the window
    this.late = 0;
    this.skipped = 0;
    // arrived in this window
    this.acks = 0;
    this.accepted = 0;
    this.duplicates = 0;
    this.rejected = 0;
    this.retries = 0;
    this.retryAfterMs = 0;
    this.errors = 0;
    this.disconnects = 0;
    this.positions = 0;
    this.positionEvents = 0;
    this.viewerMs = [];
    this.inFlightAtEnd = null;
  }

  summary() {
    const end = this.t1 ?? performance.now();
    const r = (xs) => xs.map((x) => Math.round(x * 100) / 100);
    return {
      name: this.name,
      seconds: (end - this.t0) / 1000,
      events: this.events,
      fixes: this.fixes,
      generated: this.generated,
      answered: this.answered,
      answered_within_2s: this.within2s,
      unanswered: this.events - this.answered,
      ack_ms: r(this.ackMs),
      retry_ms: r(this.retryMs),
      max_ms_by_second: r(Array.from(this.maxBySecond, (x) => x ?? 0)),
      late_sends: this.late,
      skipped_disconnected: this.skipped,
      acks: this.acks,
      accepted: this.accepted,
      duplicates: this.duplicates,
      rejected: this.rejected,
      retries: this.retries,
      retry_after_ms_sum: this.retryAfterMs,
      errors: this.errors,
      disconnects: this.disconnects,
      positions: this.positions,
      position_events: this.positionEvents,
      viewer_ms: r(this.viewerMs),
      in_flight_at_end: this.inFlightAtEnd,
    };
  }
}

const windows = [new Win("setup")];
let cur = windows[0];

function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// --- devices ------------------------------------------------------------------------------------

class Device {
  constructor(index, token) {
    this.token = token;
    this.ws = null;
    this.connected = false;
    this.done = false; // the connect attempt is settled (connected, refused or failed)
    this.attempts = 0;
    this.nextId = 1;
    this.pending = new Map(); // event id -> [sent at, fix strings, window index]
    this.queue = []; // phone mode: fixes waiting for the end of a back-off
    this.backoff = false;
    this.lastTs = 0;
    this.k = 0;
    this.lat0 = 52.4 + (index % 100) * 0.002;
    this.lon0 = 13.25 + (Math.floor(index / 100) % 100) * 0.003;
  }

  fix() {
    let ts = Date.now();
    if (ts <= this.lastTs) ts = this.lastTs + 1; // strictly increasing per device
    this.lastTs = ts;
    this.k += 1;
    const lat = (this.lat0 + this.k * 1e-6).toFixed(6);
    const lon = (this.lon0 + this.k * 1.5e-6).toFixed(6);
    return `{"lat":${lat},"lon":${lon},"ts":${ts},"speed":8.5,"heading":56}`;
  }

  emit(fixes, asArray) {
    const id = this.nextId++;
    const payload = fixes.length === 1 && !asArray ? fixes[0] : "[" + fixes.join(",") + "]";
    this.ws.send(`42/device,${id}["fix",${payload}]`);
    this.pending.set(id, [performance.now(), fixes, windows.length - 1]);
    cur.events += 1;
    cur.fixes += fixes.length;
    inFlight += 1;
  }

  flush() {
    while (this.queue.length > 0) this.emit(this.queue.splice(0, MAX_BATCH), true);
  }

  tick() {
    // one open-loop fix
    if (!this.connected) {
      cur.skipped += 1;
      return;
    }
    const fix = this.fix();
    cur.generated += 1;
    if (this.backoff) this.queue.push(fix);
    else if (this.queue.length > 0) {
      this.queue.push(fix);
      this.flush();
    } else this.emit([fix], false);
  }

  sendClosed() {
    if (mode !== "closed" || !this.connected) return;
    const fixes = [];
    for (let j = 0; j < batch; j++) fixes.push(this.fix());
    cur.generated += batch;
    this.emit(fixes, batch > 1);
  }

  onAck(text) {
    const comma = text.indexOf(",");
    const bracket = text.indexOf("[", comma);
    const id = Number(text.slice(comma + 1, bracket));
    const entry = this.pending.get(id);
    if (entry === undefined) return;
    this.pending.delete(id);
    inFlight -= 1;
    const ms = performance.now() - entry[0];
    const sent = windows[entry[2]];
    sent.answered += 1;
    if (ms <= ANSWERED_WITHIN_MS) sent.within2s += 1;
    const second = Math.floor((entry[0] - sent.t0) / 1000);
    if (!(sent.maxBySecond[second] >= ms)) sent.maxBySecond[second] = ms;
    let ack;
    try {
      ack = JSON.parse(text.slice(bracket + 1, -1));
    } catch (exc) {
      cur.errors += 1;
      note(`unparsable ack ${text.slice(0, 200)}`);
      return;
    }
    if (ack.retry) {
      sent.retryMs.push(ms);
      cur.retries += 1;
      const wait = typeof ack.retry_after_ms === "number" ? ack.retry_after_ms : 1000;
      cur.retryAfterMs += wait;
      note(`retry: ${ack.error}`);
      this.retry(entry[1], wait);
      return;
    }
    if (ack.error !== undefined || typeof ack.accepted !== "number") {
      cur.errors += 1;
      note(`refused: ${JSON.stringify(ack).slice(0, 200)}`);
      if (mode === "closed") this.sendClosed();
      return;
    }
    sent.ackMs.push(ms);
    cur.acks += 1;
    cur.accepted += ack.accepted;
    cur.duplicates += ack.duplicates;
    if (ack.rejected.length > 0) {
      cur.rejected += ack.rejected.length;
      note(`rejected: ${JSON.stringify(ack.rejected[0])}`);
    }
    if (mode === "closed") this.sendClosed();
  }

  retry(fixes, wait) {
    if (mode === "closed") {
      setTimeout(() => {
        if (mode === "closed" && this.connected) this.emit(fixes, fixes.length > 1);
      }, wait);
    } else if (mode === "open" && phone) {
      this.queue = fixes.concat(this.queue);
      if (!this.backoff) {
        this.backoff = true;
        setTimeout(() => {
          this.backoff = false;
          if (mode === "open" && this.connected) this.flush();
        }, wait);
      }
    } // plain open loop or stopped: the fixes are dropped (counted as retries)
  }

  open() {
    this.attempts += 1;
    const ws = new WebSocket(cfg.url, { perMessageDeflate: false, handshakeTimeout: 30000 });
    this.ws = ws;
    ws.on("message", (buf) => this.onMessage(buf));
    ws.on("error", (err) => note(`socket error: ${err.message}`));
    ws.on("close", (code) => this.onClose(code));
  }

  onMessage(buf) {
    const c0 = buf[0];
    if (c0 === 0x32 && buf.length === 1) {
      this.ws.send("3"); // Engine.IO ping -> pong
      return;
    }
    if (c0 === 0x34) {
      const c1 = buf[1];
      if (c1 === 0x33) this.onAck(buf.toString());
      else if (c1 === 0x30) this.settle(true);
      else if (c1 === 0x34) {
        note(`refused: ${buf.toString().slice(0, 200)}`);
        counts.refused += 1;
        this.settle(false);
        this.ws.close();
      } else if (c1 === 0x31) {
        this.connected = false; // the server disconnected the namespace
        cur.disconnects += 1;
      }
      return;
    }
    if (c0 === 0x30) this.ws.send(`40/device,${JSON.stringify({ token: this.token })}`);
  }

  settle(ok) {
    if (this.done) return;
    this.done = true;
    this.connected = ok;
    connecting -= 1;
    if (ok) counts.connected += 1;
    else counts.failed += 1;
  }

  onClose(code) {
    if (this.connected) {
      this.connected = false;
      cur.disconnects += 1;
      note(`disconnected: code ${code}`);
    } else if (!this.done) {
      if (this.attempts < CONNECT_ATTEMPTS) {
        counts.reattempts += 1;
        setTimeout(() => this.open(), 500);
      } else this.settle(false);
    }
  }
}

const counts = { connected: 0, failed: 0, refused: 0, reattempts: 0 };
let devices = [];
let connecting = 0;

function connectDevices() {
  // `connect_rate` new sockets per second, at most `connect_concurrency` handshakes open at a time
  const t0 = performance.now();
  let started = 0;
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(devices.length, Math.floor(((performance.now() - t0) / 1000) * cfg.connect_rate) + 1);
      while (started < due && connecting < cfg.connect_concurrency) {
        connecting += 1;
        devices[started++].open();
      }
      if (counts.connected + counts.failed >= devices.length) {
        clearInterval(timer);
        resolve((performance.now() - t0) / 1000);
      }
    }, 5);
  });
}

function startOpen(rate) {
  // each device sends every 1/rate s at a random phase: open loop, whatever the answers
  stopScheduler();
  const n = devices.length;
  if (n === 0) return;
  const period = 1000 / rate;
  const order = devices.slice();
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const phases = order.map(() => Math.random() * period).sort((a, b) => a - b);
  const t0 = performance.now();
  let j = 0;
  let cycle = 0;
  scheduler = setInterval(() => {
    const now = performance.now();
    for (;;) {
      const due = t0 + cycle * period + phases[j];
      if (due > now) break;
      if (now - due > LATE_MS) cur.late += 1;
      order[j].tick();
      j += 1;
      if (j === n) {
        j = 0;
        cycle += 1;
      }
    }
  }, 5);
}

function stopScheduler() {
  if (scheduler !== null) clearInterval(scheduler);
  scheduler = null;
}

function load(cmd) {
  stopScheduler();
  mode = cmd.mode;
  phone = Boolean(cmd.phone);
  batch = cmd.batch ?? 1;
  if (mode === "open") startOpen(cmd.rate);
  else if (mode === "closed") {
    // every device one event in flight, the first ones spread over half a second
    for (const d of devices) if (d.pending.size === 0) setTimeout(() => d.sendClosed(), Math.random() * 500);
  }
}

// --- the viewer ---------------------------------------------------------------------------------

function connectViewer() {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const ws = new WebSocket(cfg.url, { perMessageDeflate: false, handshakeTimeout: 30000 });
    let done = false;
    const settle = (result) => {
      if (!done) {
        done = true;
        resolve({ ...result, connect_s: (performance.now() - t0) / 1000 });
      }
    };
    ws.on("error", (err) => settle({ subscribed: false, error: err.message }));
    ws.on("close", (code) => {
      cur.disconnects += 1;
      settle({ subscribed: false, error: `closed with ${code}` });
    });
    ws.on("message", (buf) => {
      const s = buf.toString();
      if (s === "2") ws.send("3");
      else if (s.startsWith('42/viewer,["positions",')) {
        const now = Date.now();
        const list = JSON.parse(s.slice(10))[1];
        cur.positionEvents += 1;
        cur.positions += list.length;
        for (const p of list) cur.viewerMs.push(now - p.ts);
      } else if (s.startsWith("43/viewer,1[")) {
        const ack = JSON.parse(s.slice(12, -1));
        settle(ack.ok ? { subscribed: true } : { subscribed: false, error: JSON.stringify(ack) });
      } else if (s.startsWith("40/viewer,")) ws.send('42/viewer,1["subscribe",{"fleet":"' + cfg.fleet + '"}]');
      else if (s.startsWith("44/viewer,")) settle({ subscribed: false, error: s.slice(0, 200) });
      else if (s[0] === "0") ws.send(`40/viewer,${JSON.stringify({ token: cfg.token })}`);
    });
  });
}

// --- commands -----------------------------------------------------------------------------------

async function handle(cmd) {
  if (cmd.cmd === "connect") {
    if (cfg.role === "viewer") {
      answer({ event: "connected", ...(await connectViewer()) });
      return;
    }
    devices = cfg.tokens.map((t, i) => new Device(cfg.first_index + i, t));
    const seconds = await connectDevices();
    answer({ event: "connected", ...counts, connect_s: seconds, notes });
  } else if (cmd.cmd === "load") {
    load(cmd);
    answer({ ok: true, mode });
  } else if (cmd.cmd === "mark") {
    cur.t1 = performance.now();
    cur.inFlightAtEnd = inFlight;
    cur = new Win(cmd.name);
    windows.push(cur);
    answer({ ok: true, name: cmd.name });
  } else if (cmd.cmd === "in_flight") {
    answer({ in_flight: inFlight });
  } else if (cmd.cmd === "report") {
    answer({
      windows: windows.map((w) => w.summary()),
      in_flight: inFlight,
      connected: devices.filter((d) => d.connected).length,
      notes,
    });
  } else if (cmd.cmd === "quit") {
    stopScheduler();
    mode = "idle";
    for (const d of devices) if (d.ws) d.ws.terminate();
    answer({ event: "closed" });
    process.exit(0);
  } else answer({ error: `unknown command ${JSON.stringify(cmd.cmd)}` });
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const msg = JSON.parse(line);
  if (cfg === null) cfg = msg;
  else handle(msg).catch((exc) => answer({ error: String(exc && exc.stack ? exc.stack : exc) }));
});
lines.on("close", () => process.exit(0));
