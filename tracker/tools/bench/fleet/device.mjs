// One simulated device: a `ws` socket speaking Engine.IO v4 / Socket.IO v5 text frames to /device.
//
// Frames are built as strings; only acks (tens of bytes) are parsed. With `cfg.reconnect` the device
// behaves like a phone whose connection drops: it keeps the fixes of unanswered events and those taken
// while offline, reconnects after socket.io-client's jittered exponential backoff (1 s doubling to 5 s,
// +-50 %), and sends what it holds in one batch once the namespace is connected again. With
// `cfg.record_acks` it keeps the time of every fix an ack covered, for the bench to look up in PostGIS.

import { performance } from "node:perf_hooks";
import { ANSWERED_WITHIN_MS, S, note } from "./windows.mjs";

const MAX_BATCH = 1000; // fixes per event, the contract's largest
const CONNECT_ATTEMPTS = 3; // the first connection, before a device counts as failed
const BACKOFF_MIN_MS = 1000; // socket.io-client's reconnectionDelay
const BACKOFF_MAX_MS = 5000; // reconnectionDelayMax
const BACKOFF_JITTER = 0.5; // randomizationFactor

export const counts = { connected: 0, failed: 0, refused: 0, reattempts: 0 };
let connecting = 0; // first connections with their handshake open

export function connectingNow() {
  return connecting;
}

// socket.io-client's Backoff.duration(): min * 2^attempt, +-jitter, at most max
export function backoffMs(attempt) {
  let ms = BACKOFF_MIN_MS * 2 ** Math.min(attempt, 16);
  const rand = Math.random();
  const deviation = Math.floor(rand * BACKOFF_JITTER * ms);
  ms = (Math.floor(rand * 10) & 1) === 0 ? ms - deviation : ms + deviation;
  return Math.min(ms, BACKOFF_MAX_MS);
}

function tsOf(fix) {
  const at = fix.indexOf('"ts":') + 5;
  return Number(fix.slice(at, fix.indexOf(",", at)));
}

export class Device {
  constructor(index, token, WebSocket) {
    this.token = token;
    this.WebSocket = WebSocket;
    this.ws = null;
    this.serial = 0; // sockets opened so far; messages of an older one are ignored
    this.connected = false;
    this.done = false; // the first connect attempt is settled (connected, refused or failed)
    this.everConnected = false;
    this.attempts = 0;
    this.failures = 0; // reconnect attempts since the last connection (the backoff's exponent)
    this.nextId = 1;
    this.pending = new Map(); // event id -> [sent at, fix strings, window index]
    this.queue = []; // fixes waiting: a back-off, or (reconnecting phones) no connection
    this.backoff = false;
    this.lastTs = 0;
    this.k = 0;
    this.lat0 = 52.4 + (index % 100) * 0.002;
    this.lon0 = 13.25 + (Math.floor(index / 100) % 100) * 0.003;
    this.acked = []; // record_acks: fix times (ms after cfg.ts_base) in the order their acks came
    this.marks = []; // record_acks: acked.length at each `mark`
    this.epochSerial = 0; // the socket open when the last `epoch` came
    this.reconnectedMs = null; // after the epoch: the first namespace connection on a newer socket
    this.recoveredMs = null; // after the epoch: the first ack on a newer socket
    this.stage = "new"; // where the connection is: opening, sent namespace connect, connected, ...
    this.stageAt = 0;
  }

  setStage(name) {
    this.stage = name;
    this.stageAt = performance.now();
  }

  // not connected for `ms` in the same stage, after having been connected: a connection that hangs
  stuckFor(ms, now) {
    return this.everConnected && !this.connected && now - this.stageAt > ms;
  }

  fix() {
    let ts = Date.now();
    if (ts <= this.lastTs) ts = this.lastTs + 1; // strictly increasing per device
    this.lastTs = ts;
    this.k += 1;
    // cross_every: every that many fixes the device jumps 1 degree north or back, across the storm's fence
    const north = S.cfg.cross_every && Math.floor(this.k / S.cfg.cross_every) % 2 === 1 ? 1 : 0;
    const lat = (this.lat0 + north + this.k * 1e-6).toFixed(6);
    const lon = (this.lon0 + this.k * 1.5e-6).toFixed(6);
    return `{"lat":${lat},"lon":${lon},"ts":${ts},"speed":8.5,"heading":56}`;
  }

  emit(fixes, asArray) {
    const id = this.nextId++;
    const payload = fixes.length === 1 && !asArray ? fixes[0] : "[" + fixes.join(",") + "]";
    this.ws.send(`42/device,${id}["fix",${payload}]`);
    this.pending.set(id, [performance.now(), fixes, S.windows.length - 1]);
    S.cur.events += 1;
    S.cur.fixes += fixes.length;
    S.inFlight += 1;
  }

  flush() {
    while (this.connected && this.queue.length > 0) this.emit(this.queue.splice(0, MAX_BATCH), true);
  }

  tick() {
    // one open-loop fix
    if (!this.connected && !S.cfg.reconnect) {
      S.cur.skipped += 1;
      return;
    }
    const fix = this.fix();
    S.cur.generated += 1;
    if (this.backoff || !this.connected) this.queue.push(fix);
    else if (this.queue.length > 0) {
      this.queue.push(fix);
      this.flush();
    } else this.emit([fix], false);
  }

  sendClosed() {
    if (S.mode !== "closed" || !this.connected) return;
    const fixes = [];
    for (let j = 0; j < S.batch; j++) fixes.push(this.fix());
    S.cur.generated += S.batch;
    this.emit(fixes, S.batch > 1);
  }

  onAck(text) {
    const comma = text.indexOf(",");
    const bracket = text.indexOf("[", comma);
    const id = Number(text.slice(comma + 1, bracket));
    const entry = this.pending.get(id);
    if (entry === undefined) return;
    this.pending.delete(id);
    S.inFlight -= 1;
    const ms = performance.now() - entry[0];
    const sent = S.windows[entry[2]];
    sent.answered += 1;
    if (ms <= ANSWERED_WITHIN_MS) sent.within2s += 1;
    const second = Math.floor((entry[0] - sent.t0) / 1000);
    if (!(sent.maxBySecond[second] >= ms)) sent.maxBySecond[second] = ms;
    let ack;
    try {
      ack = JSON.parse(text.slice(bracket + 1, -1));
    } catch (exc) {
      S.cur.errors += 1;
      note(`unparsable ack ${text.slice(0, 200)}`);
      return;
    }
    if (ack.retry) {
      sent.retryMs.push(ms);
      S.cur.retries += 1;
      const wait = typeof ack.retry_after_ms === "number" ? ack.retry_after_ms : 1000;
      S.cur.retryAfterMs += wait;
      note(`retry: ${ack.error}`);
      this.retry(entry[1], wait);
      return;
    }
    if (ack.error !== undefined || typeof ack.accepted !== "number") {
      S.cur.errors += 1;
      note(`refused: ${JSON.stringify(ack).slice(0, 200)}`);
      if (S.mode === "closed") this.sendClosed();
      return;
    }
    sent.ackMs.push(ms);
    S.cur.acks += 1;
    S.cur.accepted += ack.accepted;
    S.cur.duplicates += ack.duplicates;
    if (ack.rejected.length > 0) {
      S.cur.rejected += ack.rejected.length;
      note(`rejected: ${JSON.stringify(ack.rejected[0])}`);
    }
    if (S.cfg.record_acks) this.record(entry[1], ack.rejected);
    if (S.epoch !== null && this.serial > this.epochSerial && this.recoveredMs === null) {
      this.recoveredMs = performance.now() - S.epoch;
    }
    if (S.mode === "closed") this.sendClosed();
  }

  record(fixes, rejected) {
    const refused = new Set(rejected.map((r) => r.index));
    for (let i = 0; i < fixes.length; i++) if (!refused.has(i)) this.acked.push(tsOf(fixes[i]) - S.cfg.ts_base);
  }

  retry(fixes, wait) {
    if (S.mode === "closed") {
      setTimeout(() => {
        if (S.mode === "closed" && this.connected) this.emit(fixes, fixes.length > 1);
      }, wait);
    } else if ((S.mode === "open" || S.mode === "drain") && S.phone) {
      this.queue = fixes.concat(this.queue);
      if (!this.backoff) {
        this.backoff = true;
        setTimeout(() => {
          this.backoff = false;
          if (S.mode === "open" || S.mode === "drain") this.flush();
        }, wait);
      }
    } // plain open loop or stopped: the fixes are dropped (counted as retries)
  }

  open() {
    this.attempts += 1;
    this.setStage("opening");
    const serial = ++this.serial;
    const ws = new this.WebSocket(S.cfg.url, { perMessageDeflate: false, handshakeTimeout: 30000 });
    this.ws = ws;
    ws.on("message", (buf) => {
      if (serial === this.serial) this.onMessage(buf);
    });
    ws.on("error", (err) => note(`socket error: ${err.message}`));
    ws.on("close", (code) => {
      if (serial === this.serial) this.onClose(code);
    });
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
      else if (c1 === 0x30) this.onConnected();
      else if (c1 === 0x34) {
        note(`refused: ${buf.toString().slice(0, 200)}`);
        if (!this.done) counts.refused += 1;
        this.settle(false);
        this.ws.close();
      } else if (c1 === 0x31) {
        // the server disconnected the namespace: a phone starts over (the close counts the disconnect)
        if (S.cfg.reconnect) this.ws.close();
        else {
          this.connected = false;
          S.cur.disconnects += 1;
        }
      }
      return;
    }
    if (c0 === 0x30) {
      this.setStage("sent namespace connect");
      this.ws.send(`40/device,${JSON.stringify({ token: this.token })}`);
    } else note(`unexpected frame: ${buf.toString().slice(0, 100)}`);
  }

  onConnected() {
    this.everConnected = true;
    this.setStage("connected");
    if (this.done) {
      this.connected = true;
      S.cur.reconnects += 1;
    } else this.settle(true);
    this.failures = 0;
    if (S.epoch !== null && this.serial > this.epochSerial && this.reconnectedMs === null) {
      this.reconnectedMs = performance.now() - S.epoch;
    }
    if (S.cfg.reconnect && !this.backoff && (S.mode === "open" || S.mode === "drain")) this.flush();
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
    this.ws = null;
    this.setStage("waiting to reconnect");
    if (this.connected) {
      this.connected = false;
      S.cur.disconnects += 1;
      note(`disconnected: code ${code}`);
    } else if (!this.done) {
      if (this.attempts < CONNECT_ATTEMPTS) {
        counts.reattempts += 1;
        setTimeout(() => this.open(), 500);
        return;
      }
      this.settle(false);
    } else if (this.everConnected) S.cur.connectFailures += 1;
    if (!S.cfg.reconnect) return;
    this.takeBackPending();
    if (!S.stopping) setTimeout(() => this.open(), backoffMs(this.failures++));
  }

  // the connection is gone: unanswered events are dropped, their fixes go first in the queue
  takeBackPending() {
    const held = [];
    for (const [, [, fixes, w]] of this.pending) {
      S.windows[w].dropped += 1;
      S.inFlight -= 1;
      held.push(...fixes);
    }
    this.pending.clear();
    this.queue = held.concat(this.queue);
  }

  // soak: the connection drops as a phone's network does (no close handshake), then the device reconnects
  drop() {
    if (!this.connected || this.ws === null) return false;
    S.cur.churned += 1;
    this.ws.terminate();
    return true;
  }

  startEpoch() {
    this.epochSerial = this.serial;
    this.reconnectedMs = null;
    this.recoveredMs = null;
  }

  startConnecting() {
    connecting += 1;
    this.open();
  }
}
