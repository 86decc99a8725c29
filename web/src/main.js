// The dispatcher map: sign in, then the live fleet. Events only update state (Fleet, feed); one
// requestAnimationFrame loop draws what changed, so the cost of a frame follows what moved, not how often
// the server spoke.
import "./style.css";
import { ApiError, createApi } from "./api.js";
import { DeviceDetails } from "./details.js";
import { EventFeed } from "./feed.js";
import { Fleet, PALETTE, fleetIndex } from "./fleet.js";
import { DeviceList } from "./list.js";
import { Live } from "./live.js";
import { MapView, STATUS_COLOURS } from "./map.js";
import { askForToken, currentToken, forgetToken } from "./session.js";
import { Stats } from "./stats.js";

const STATUS_EVERY_MS = 5000; // statuses age (moving -> stopped -> offline) this often
const NAMES_AFTER_MS = 5000; // new devices appeared: fetch names this long after, once
const DRAW_MIN_MS = 100; // devices are redrawn at most this often (the server's broadcast interval)...
const DRAW_MAX_MS = 1000; // ...and at least this often while they move, however slow the machine
const REFIT_AFTER_MS = 3000;
const SLOW_FRAME_MS = 1000 / 40; // frames slower than 40 per second on average: redraw devices less often
const FAST_FRAME_MS = 1000 / 50; // faster than 50 per second: redraw them more often again

function $(id) {
  return document.getElementById(id);
}

/** Signs in until a token is accepted; returns it with `/api/me` (name and granted fleets). */
async function signIn() {
  let token = currentToken() || (await askForToken());
  for (;;) {
    try {
      return { token, me: await createApi(token).get("/api/me") };
    } catch (err) {
      if (!(err instanceof ApiError) || err.status >= 500) {
        $("signin-error").textContent = `The server cannot be reached (${err.message}); retrying…`;
        await new Promise((r) => setTimeout(r, 3000));
        continue;
      }
      forgetToken();
      token = await askForToken(err.status === 401 ? "That token was not accepted." : err.message);
    }
  }
}

function legend(mode, fleets) {
  const entries = mode === "fleet"
    ? fleets.map((f) => [f, PALETTE[fleetIndex(f)]])
    : Object.entries(STATUS_COLOURS);
  $("legend").replaceChildren(
    ...entries.map(([label, colour]) => {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour;
      span.append(dot, label);
      return span;
    }),
  );
}

function start(config, token, me) {
  const api = createApi(token);
  const stats = new Stats();
  const fleet = new Fleet();
  let selected = null; // device id
  let fleetFilter = null; // fleet id or null for all

  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = me.name;

  const select = (id, fromList) => {
    selected = id;
    list.setSelected(id);
    mapView.select(id);
    details.show(id);
    const rec = id && fleet.get(id);
    if (rec && rec.lat != null && fromList) mapView.flyTo(rec.lon, rec.lat);
    if (id && !fromList) list.scrollTo(id);
  };

  const describe = (id) => {
    const rec = fleet.get(id);
    const div = document.createElement("div");
    div.textContent = rec ? `${rec.name || rec.id} · ${rec.fleet} · ${rec.status}` : id;
    return div;
  };
  const mapView = new MapView($("map"), config, { onSelect: select, describe });
  const list = new DeviceList($("list"), $("count"), fleet, select);
  const feed = new EventFeed($("feed"), (device, lon, lat) => {
    if (fleet.get(device)) select(device, false);
    mapView.flyTo(lon, lat);
  });

  let knownStructure = -1;
  let namesTimer = null;
  const seenFleets = new Set(); // for a viewer of all fleets: every fleet it has seen a device of
  const loadNames = async () => {
    namesTimer = null;
    knownStructure = fleet.structureVersion;
    const { devices } = await api.get("/api/devices");
    for (const d of devices) seenFleets.add(d.fleet);
    fleet.addListed(fleetFilter ? devices.filter((d) => d.fleet === fleetFilter) : devices, Date.now());
    knownStructure = fleet.structureVersion;
    refreshFleetChoices();
  };

  const fleetChoice = $("fleet");
  const refreshFleetChoices = () => {
    for (const f of fleet.fleets()) seenFleets.add(f);
    const fleets = me.fleets === "all" ? [...seenFleets].sort() : me.fleets;
    const wanted = ["", ...(fleetFilter && !fleets.includes(fleetFilter) ? [fleetFilter] : []), ...fleets];
    const have = [...fleetChoice.options].map((o) => o.value);
    if (wanted.join("\n") !== have.join("\n")) {
      fleetChoice.replaceChildren(
        ...wanted.map((f) => new Option(f || (me.fleets === "all" ? "All fleets" : "All my fleets"), f)),
      );
      fleetChoice.value = fleetFilter || "";
    }
    if ($("colour").value === "fleet") legend("fleet", fleets);
  };

  // The map frames the fleet when the first positions are drawn, and once more a few seconds later
  // (devices that reported since), unless the dispatcher moved the map meanwhile.
  let subscriptions = 0; // completed (re)subscriptions, device names and events loaded: a hook for tests
  let fittedAt = null;
  let refitted = false;
  const frameFleet = (now) => {
    if (refitted || (fittedAt !== null && now - fittedAt < REFIT_AFTER_MS)) return;
    if (fittedAt === null) fittedAt = now;
    else refitted = true;
    mapView.fitTo([...fleet.byId.values()]);
  };
  const live = new Live(token, {
    onPositions(positions) {
      const t0 = performance.now();
      const mine = fleetFilter ? positions.filter((p) => p.fleet === fleetFilter) : positions;
      fleet.applyPositions(mine, Date.now());
      if (selected) {
        for (const p of mine) if (p.device === selected) details.moved(fleet.get(selected));
      }
      stats.update(positions.length, performance.now() - t0);
    },
    onGeofence(event) {
      if (!fleetFilter || event.fleet === fleetFilter) feed.add(event);
    },
    onMessageStatus(status) {
      details.status(status);
    },
    onConnection(state, detail) {
      const el = $("connection");
      el.dataset.connection = state;
      el.textContent = state === "live" ? "live" : state === "offline" ? `offline (${detail}), reconnecting…` : "connecting…";
      if (state !== "live") document.body.dataset.state = "connecting";
    },
    async onSubscribed() {
      await loadNames().catch((err) => console.warn("devices:", err.message));
      await feed.backfill(api, fleetFilter).catch((err) => console.warn("events:", err.message));
      subscriptions++;
      document.body.dataset.state = "live";
    },
    onUnauthorized() {
      forgetToken();
      askForToken("The server no longer accepts this token.").then(() => window.location.reload());
    },
  });
  const details = new DeviceDetails(fleet, mapView, api, live);

  fleetChoice.addEventListener("change", async () => {
    fleetFilter = fleetChoice.value || null;
    fleet.reset();
    feed.clear();
    select(null);
    mapView.clearDevices();
    fittedAt = null;
    refitted = false;
    await live.select(fleetFilter ? { fleet: fleetFilter } : null);
  });
  $("colour").addEventListener("change", () => {
    const mode = $("colour").value;
    mapView.setColourMode(mode);
    list.setColourMode(mode);
    legend(mode, me.fleets === "all" ? [...seenFleets].sort() : me.fleets);
  });
  $("search").addEventListener("input", (e) => list.setFilter(e.target.value));
  $("details-close").addEventListener("click", () => select(null));
  $("signout").addEventListener("click", () => {
    forgetToken();
    live.close();
    window.location.replace("/");
  });
  legend("status", []);
  refreshFleetChoices();

  let mapReady = false;
  mapView.ready.then(() => (mapReady = true));
  let statusAt = 0;
  let previous = performance.now();
  let drawnAt = 0;
  let gapAverage = 1000 / 60;
  let drawEvery = DRAW_MIN_MS;
  const frame = (now) => {
    const t0 = performance.now();
    let worked = false;
    // Each map redraw costs the browser a repaint of the whole canvas, and without a GPU (software
    // rendering) that work lands on later frames. So the page watches its frame rate over the last ~10
    // frames and, at each redraw, waits longer before the next when frames are slow (up to DRAW_MAX_MS),
    // and catches up again when they are fast: devices stay current, the map stays smooth to pan.
    gapAverage += (Math.min(now - previous, 250) - gapAverage) * 0.1;
    previous = now;
    if (mapReady && now - drawnAt >= drawEvery) {
      if (now - statusAt > STATUS_EVERY_MS) {
        statusAt = now;
        fleet.refreshStatuses(Date.now());
      }
      const { added, changed } = fleet.take();
      if (added.length || changed.length) {
        mapView.updateDevices(added, changed);
        frameFleet(now);
        drawnAt = now;
        if (gapAverage > SLOW_FRAME_MS) drawEvery = Math.min(DRAW_MAX_MS, drawEvery * 1.25);
        else if (gapAverage < FAST_FRAME_MS) drawEvery = Math.max(DRAW_MIN_MS, drawEvery * 0.9);
        worked = true;
      }
    }
    if (list.render(now)) worked = true;
    details.render();
    if (fleet.structureVersion !== knownStructure && namesTimer === null) {
      namesTimer = setTimeout(() => loadNames().catch((err) => console.warn("devices:", err.message)), NAMES_AFTER_MS);
    }
    if (worked) stats.frame(performance.now() - t0);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);

  api.get("/api/geofences").then(
    (fences) => mapView.ready.then(() => mapView.setFences(fences)),
    (err) => console.warn("geofences:", err.message),
  );

  window.tracker = {
    stats: () => ({ ...stats.snapshot(fleet.size), drawEveryMs: drawEvery }),
    resetStats: () => stats.reset(),
    deviceIds: () => [...fleet.byId.keys()],
    subscriptions: () => subscriptions,
    devicePoints: () => mapView.devices.points(),
    map: mapView.map,
  };
}

async function boot() {
  const config = JSON.parse($("tracker-config").textContent || "{}");
  const { token, me } = await signIn();
  start(config, token, me);
}

boot();
