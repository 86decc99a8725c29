// Device names, and the devices that have not reported yet: the socket sends only positions, so names come from
// `GET /api/devices`. They are read on every (re)subscription, and once more a few seconds after unknown
// devices appear, which batches a burst of newcomers into one request.

const NAMES_AFTER_MS = 5000;

export class DeviceNames {
  constructor(api, fleet, fleetChoice) {
    this.api = api;
    this.fleet = fleet;
    this.fleetChoice = fleetChoice;
    this.knownStructure = -1; // the fleet's structureVersion when names were last read
    this.timer = null;
  }

  async load() {
    this.timer = null;
    this.knownStructure = this.fleet.structureVersion;
    const { devices } = await this.api.get("/api/devices");
    this.fleetChoice.saw(devices.map((d) => d.fleet));
    this.fleet.addListed(this.fleetChoice.only(devices), Date.now());
    this.knownStructure = this.fleet.structureVersion;
    this.fleetChoice.refresh();
  }

  /** load(), a failure only logged: names are read again on the next subscription or newcomer. */
  loadOrWarn() {
    return this.load().catch((err) => console.warn("devices:", err.message));
  }

  /** Called each frame: devices were added since the names were read, so read them again soon. */
  check() {
    if (this.fleet.structureVersion !== this.knownStructure && this.timer === null) {
      this.timer = setTimeout(() => this.loadOrWarn(), NAMES_AFTER_MS);
    }
  }
}
