// Which fleet the dispatcher watches: the selector in the bar and the fleet chosen in it (null: all). It
// offers the fleets the token grants; a token for all fleets has no list of them, so it offers every fleet
// the page has seen a device of, and keeps offering it after another is picked.

export class FleetChoice {
  /**
   * `onChange(chosen)` runs when the dispatcher picks a fleet (null: all); `onFleets(fleets)` whenever the
   * offered fleets are refreshed.
   */
  constructor(element, me, fleet, { onChange, onFleets }) {
    this.element = element;
    this.all = me.fleets === "all";
    this.granted = me.fleets;
    this.fleet = fleet;
    this.onFleets = onFleets;
    this.chosen = null;
    this.seen = new Set();
    element.addEventListener("change", async () => {
      this.chosen = element.value || null;
      await onChange(this.chosen);
    });
  }

  /** Whether an item (a position, device or event: anything with a `fleet`) is in the chosen fleet. */
  shows(item) {
    return !this.chosen || item.fleet === this.chosen;
  }

  /** The items in the chosen fleet (the same array when all are). */
  only(items) {
    return this.chosen ? items.filter((item) => item.fleet === this.chosen) : items;
  }

  /** Remembers fleets that devices were listed in (for a token for all fleets). */
  saw(fleets) {
    for (const f of fleets) this.seen.add(f);
  }

  /** The fleets on offer: the granted ones, or every one seen (sorted). */
  fleets() {
    return this.all ? [...this.seen].sort() : this.granted;
  }

  /** Brings the options up to date with the devices known (only touching the DOM when they changed). */
  refresh() {
    this.saw(this.fleet.fleets());
    const fleets = this.fleets();
    const chosen = this.chosen;
    const wanted = ["", ...(chosen && !fleets.includes(chosen) ? [chosen] : []), ...fleets];
    const have = [...this.element.options].map((o) => o.value);
    if (wanted.join("\n") !== have.join("\n")) {
      this.element.replaceChildren(
        ...wanted.map((f) => new Option(f || (this.all ? "All fleets" : "All my fleets"), f)),
      );
      this.element.value = chosen || "";
    }
    this.onFleets(fleets);
  }
}
