// What the load generator counts, cut into windows, and the state its parts share.
//
// Time is cut into windows by `mark`. Figures of what was sent (events, fixes, the latency of their
// answers, answered within 2 s, dropped with their connection) belong to the window the event was sent
// in; figures of what arrived (acks, accepted fixes, retry answers, viewer positions) and of what
// happened to connections (disconnects, reconnects, churn) to the window they happened in.

import { performance } from "node:perf_hooks";

export const ANSWERED_WITHIN_MS = 2000;

export class Win {
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
    this.dropped = 0; // events whose connection closed before their answer (their fixes are sent again)
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
    this.reconnects = 0; // namespace connections after a device's first
    this.connectFailures = 0; // attempts that ended before the namespace answered (refused, closed, error)
    this.churned = 0; // connections the generator dropped on purpose (soak)
    this.positions = 0;
    this.positionEvents = 0;
    this.viewerBytes = 0;
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
      unanswered: this.events - this.answered - this.dropped,
      dropped: this.dropped,
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
      reconnects: this.reconnects,
      connect_failures: this.connectFailures,
      churned: this.churned,
      positions: this.positions,
      position_events: this.positionEvents,
      viewer_bytes: this.viewerBytes,
      viewer_ms: r(this.viewerMs),
      in_flight_at_end: this.inFlightAtEnd,
    };
  }

  // the summary, then the long lists emptied: a long run reports each window once (`take`)
  take() {
    const s = this.summary();
    this.ackMs = [];
    this.retryMs = [];
    this.maxBySecond = [];
    this.viewerMs = [];
    return s;
  }
}

// Shared by every part of the generator: `cfg` is the first stdin line; `cur` the open window.
export const S = {
  cfg: null,
  windows: [new Win("setup")],
  cur: null,
  mode: "idle", // idle | open | closed | drain (no new fixes; phones still resend what they hold)
  phone: false, // on `retry`, wait and resend with what accumulated meanwhile
  batch: 1,
  inFlight: 0,
  stopping: false, // quitting: no more reconnects
  epoch: null, // performance.now() of the last `epoch` command (storm: a restart began)
  notes: [],
};
S.cur = S.windows[0];

export function note(message) {
  if (S.notes.length < 8 && !S.notes.includes(message)) S.notes.push(String(message).slice(0, 300));
}

export function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}
