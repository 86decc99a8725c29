// The connection as the page shows it: the indicator in the bar, and `body[data-state]`, which stays
// "connecting" until a subscription is answered and the device names and recent events are loaded, then
// turns "live" (what tests and scripts wait for). It counts those completed (re)subscriptions too.

export class ConnectionState {
  constructor(element) {
    this.element = element;
    this.subscriptions = 0;
  }

  /** "connecting", "live" or "offline" (with why). */
  show(state, detail) {
    this.element.dataset.connection = state;
    this.element.textContent =
      state === "live" ? "live" : state === "offline" ? `offline (${detail}), reconnecting…` : "connecting…";
    if (state !== "live") document.body.dataset.state = "connecting";
  }

  /** A (re)subscription is answered and what it needs is loaded. */
  loaded() {
    this.subscriptions++;
    document.body.dataset.state = "live";
  }
}
