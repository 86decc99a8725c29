// The one requestAnimationFrame loop that draws what changed, so the cost of a frame follows what moved, not
// how often the server spoke; and the pace of its device redraws, which follows the frame rate.
//
// Each map redraw costs the browser a repaint of the whole canvas, and without a GPU (software rendering)
// that work lands on later frames. So the loop watches its frame rate over the last ~10 frames and, at each
// redraw, waits longer before the next when frames are slow (up to DRAW_MAX_MS), and catches up again when
// they are fast: devices stay current, the map stays smooth to pan.

const DRAW_MIN_MS = 100; // devices are redrawn at most this often (the server's broadcast interval)...
const DRAW_MAX_MS = 1000; // ...and at least this often while they move, however slow the machine
const SLOW_FRAME_MS = 1000 / 40; // frames slower than 40 per second on average: redraw devices less often
const FAST_FRAME_MS = 1000 / 50; // faster than 50 per second: redraw them more often again
const LONGEST_GAP_MS = 250; // a longer gap (a hidden tab) counts as this, so one pause doesn't skew the average

export class Redraw {
  /**
   * Starts the loop. Once `ready` resolves, `drawDevices(now)` runs at most every `everyMs` and says whether
   * it drew anything; `everyFrame(now)` runs on each frame and says whether it drew anything. `spent(ms)`
   * hears how long each frame that drew took.
   */
  constructor({ ready, drawDevices, everyFrame, spent }) {
    this.drawDevices = drawDevices;
    this.everyFrame = everyFrame;
    this.spent = spent;
    this.ready = false;
    ready.then(() => (this.ready = true));
    this.everyMs = DRAW_MIN_MS; // the current interval between device redraws
    this.drawnAt = 0;
    this.previous = performance.now();
    this.gapAverage = 1000 / 60;
    requestAnimationFrame(this.frame);
  }

  frame = (now) => {
    const t0 = performance.now();
    let worked = false;
    this.gapAverage += (Math.min(now - this.previous, LONGEST_GAP_MS) - this.gapAverage) * 0.1;
    this.previous = now;
    if (this.ready && now - this.drawnAt >= this.everyMs && this.drawDevices(now)) {
      this.drawnAt = now;
      this.adapt();
      worked = true;
    }
    if (this.everyFrame(now)) worked = true;
    if (worked) this.spent(performance.now() - t0);
    requestAnimationFrame(this.frame);
  };

  /** After a redraw: space the next one out when frames are slow, bring it closer when they are fast. */
  adapt() {
    if (this.gapAverage > SLOW_FRAME_MS) this.everyMs = Math.min(DRAW_MAX_MS, this.everyMs * 1.25);
    else if (this.gapAverage < FAST_FRAME_MS) this.everyMs = Math.max(DRAW_MIN_MS, this.everyMs * 0.9);
  }
}
