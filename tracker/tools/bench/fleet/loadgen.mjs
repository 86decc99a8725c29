// The load generator of `tracker bench fleet`, `storm` and `soak`: Socket.IO devices (or viewers) on raw
// websockets.
//
// Why raw frames and not socket.io-client: the generator must cost a small fraction of what the server
// costs at the same load, or it measures itself. Each device is one `ws` socket speaking Engine.IO v4 /
// Socket.IO v5 text frames directly: frames are built as strings, only acks (tens of bytes) and the
// viewers' `positions` are parsed (device.mjs, viewers.mjs).
//
// Usage: node loadgen.mjs <node_modules folder holding ws>; settings as the first stdin line, then one
// JSON command per line (connect, load, mark, take, epoch, recovery, ledger, in_flight, report, quit),
// each answered by one JSON line on stdout. Windows and what they count: windows.mjs.

import { createRequire } from "node:module";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import readline from "node:readline";
import { Device, connectingNow, counts } from "./device.mjs";
import { closeViewers, connectViewers, subscribedViewers } from "./viewers.mjs";
import { S, Win, answer } from "./windows.mjs";

const require = createRequire(join(process.argv[2], "loadgen-anchor.js"));
const WebSocket = require("ws");

const LATE_MS = 100; // an open-loop send this late on its schedule counts as late (a saturated generator)
const STUCK_MS = 10000; // a device not connected for this long in one stage of its connection is stuck

let devices = [];
let scheduler = null;
let churner = null;

function connectDevices() {
  // `connect_rate` new sockets per second, at most `connect_concurrency` handshakes open at a time
  const t0 = performance.now();
  let started = 0;
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(devices.length, Math.floor(((performance.now() - t0) / 1000) * S.cfg.connect_rate) + 1);
      while (started < due && connectingNow() < S.cfg.connect_concurrency) devices[started++].startConnecting();
      if (counts.connected + counts.failed >= devices.length) {
        clearInterval(timer);
        resolve((performance.now() - t0) / 1000);
      }
    }, 5);
  });
}

function startOpen(rate) {
  // each device sends every 1/rate s at a random phase: open loop, whatever the answers
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
      if (now - due > LATE_MS) S.cur.late += 1;
      order[j].tick();
      j += 1;
      if (j === n) {
        j = 0;
        cycle += 1;
      }
    }
  }, 5);
}

function startChurn(perMinute) {
  // `per_minute` of the devices lose their connection each minute, picked at random, spread over the minute
  let due = 0;
  churner = setInterval(() => {
    due += (devices.length * perMinute) / 60;
    for (let tries = 0; due >= 1 && tries < 100; tries++) {
      if (devices[Math.floor(Math.random() * devices.length)].drop()) due -= 1;
    }
  }, 1000);
}

function stopTimers() {
  if (scheduler !== null) clearInterval(scheduler);
  if (churner !== null) clearInterval(churner);
  scheduler = null;
  churner = null;
}

function load(cmd) {
  stopTimers();
  S.mode = cmd.mode;
  S.phone = Boolean(cmd.phone);
  S.batch = cmd.batch ?? 1;
  if (S.mode === "open") startOpen(cmd.rate);
  else if (S.mode === "closed") {
    // every device one event in flight, the first ones spread over half a second
    for (const d of devices) if (d.pending.size === 0) setTimeout(() => d.sendClosed(), Math.random() * 500);
  } else if (S.mode === "drain") for (const d of devices) if (!d.backoff) d.flush();
  if (cmd.churn_per_minute) startChurn(cmd.churn_per_minute);
}

function recovery(full) {
  // since the last epoch: devices connected again on a new socket, and with an ack on it
  const reconnected = devices.filter((d) => d.reconnectedMs !== null);
  const recovered = devices.filter((d) => d.recoveredMs !== null);
  const result = {
    devices: devices.length,
    connected: devices.filter((d) => d.connected).length,
    reconnected: reconnected.length,
    recovered: recovered.length,
  };
  if (full) {
    result.reconnected_ms = reconnected.map((d) => Math.round(d.reconnectedMs));
    result.recovered_ms = recovered.map((d) => Math.round(d.recoveredMs));
  }
  return result;
}

async function handle(cmd) {
  if (cmd.cmd === "connect") {
    if (S.cfg.role === "viewers") {
      answer({ event: "connected", ...(await connectViewers(WebSocket)) });
      return;
    }
    devices = S.cfg.tokens.map((t, i) => new Device(S.cfg.first_index + i, t, WebSocket));
    const seconds = await connectDevices();
    answer({ event: "connected", ...counts, connect_s: seconds, notes: S.notes });
  } else if (cmd.cmd === "load") {
    load(cmd);
    answer({ ok: true, mode: S.mode });
  } else if (cmd.cmd === "mark") {
    S.cur.t1 = performance.now();
    S.cur.inFlightAtEnd = S.inFlight;
    S.cur = new Win(cmd.name);
    S.windows.push(S.cur);
    if (S.cfg.record_acks) for (const d of devices) d.marks.push(d.acked.length);
    answer({ ok: true, name: cmd.name });
  } else if (cmd.cmd === "take") {
    const w = S.windows.find((x) => x.name === cmd.name);
    answer(w ? { window: w.take() } : { error: `no window named ${JSON.stringify(cmd.name)}` });
  } else if (cmd.cmd === "epoch") {
    S.epoch = performance.now();
    for (const d of devices) d.startEpoch();
    answer({ ok: true });
  } else if (cmd.cmd === "recovery") {
    answer(recovery(Boolean(cmd.full)));
  } else if (cmd.cmd === "ledger") {
    answer({ first_index: S.cfg.first_index, acked: devices.map((d) => d.acked), marks: devices.map((d) => d.marks) });
  } else if (cmd.cmd === "in_flight") {
    const queued = devices.reduce((n, d) => n + d.queue.length, 0);
    const now = performance.now();
    const stuck = devices.filter((d) => d.stuckFor(STUCK_MS, now));
    const stages = stuck.slice(0, 5).map((d) => `${d.stage} (socket ${d.ws ? d.ws.readyState : "none"})`);
    answer({
      in_flight: S.inFlight,
      queued,
      connected: devices.filter((d) => d.connected).length,
      stuck: stuck.length,
      stuck_stages: stages,
    });
  } else if (cmd.cmd === "report") {
    answer({
      windows: S.windows.map((w) => w.summary()),
      in_flight: S.inFlight,
      connected: devices.filter((d) => d.connected).length,
      viewers_subscribed: subscribedViewers(),
      notes: S.notes,
    });
  } else if (cmd.cmd === "quit") {
    S.stopping = true;
    stopTimers();
    S.mode = "idle";
    for (const d of devices) if (d.ws) d.ws.terminate();
    closeViewers();
    answer({ event: "closed" });
    process.exit(0);
  } else answer({ error: `unknown command ${JSON.stringify(cmd.cmd)}` });
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const msg = JSON.parse(line);
  if (S.cfg === null) S.cfg = msg;
  else handle(msg).catch((exc) => answer({ error: String(exc && exc.stack ? exc.stack : exc) }));
});
lines.on("close", () => process.exit(0));
