// What the page spends on live updates, for `tracker bench map` and for curious dispatchers
// (`tracker.stats()` in the console): the time of each `positions` handler and of each frame's drawing work.

const KEEP = 1000;

export class Stats {
  constructor() {
    this.reset();
  }

  reset() {
    this.updates = 0;
    this.positions = 0;
    this.handlerMs = [];
    this.frameMs = [];
  }

  update(count, ms) {
    this.updates++;
    this.positions += count;
    this.handlerMs.push(ms);
    if (this.handlerMs.length > KEEP) this.handlerMs.shift();
  }

  frame(ms) {
    this.frameMs.push(ms);
    if (this.frameMs.length > KEEP) this.frameMs.shift();
  }

  snapshot(devices) {
    return {
      updates: this.updates,
      positions: this.positions,
      devices,
      handlerMs: [...this.handlerMs],
      frameMs: [...this.frameMs],
    };
  }
}
