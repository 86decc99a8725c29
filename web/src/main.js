// The dispatcher map: sign in, then make the page's parts and wire them together. The state lives in the
// parts (README.md lists them); this only says which talks to which.
import "./style.css";
import { createApi } from "./api.js";
import { Clusters } from "./clusters.js";
import { legend } from "./colours.js";
import { ConnectionState } from "./connection.js";
import { Conversation } from "./conversation.js";
import { DeviceDetails } from "./details.js";
import { EventFeed } from "./feed.js";
import { Fleet } from "./fleet.js";
import { FenceDraw } from "./fencedraw.js";
import { FleetChoice } from "./fleetchoice.js";
import { deviceName } from "./format.js";
import { DeviceList } from "./list.js";
import { connectLive } from "./liveupdates.js";
import { MapView } from "./map.js";
import { DeviceNames } from "./names.js";
import { Redraw } from "./redraw.js";
import { Replay } from "./replay.js";
import { ReportsView } from "./reports.js";
import { forgetToken, signIn } from "./session.js";
import { Stats } from "./stats.js";
import { TripView } from "./trips.js";

function $(id) {
  return document.getElementById(id);
}

function start(config, token, me) {
  const api = createApi(token);
  const stats = new Stats();
  const fleet = new Fleet();

  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = me.name;

  // A device picked in the list, on the map or in the feed (null: none) is shown by all three.
  let selected = null;
  const select = (id, fromList) => {
    selected = id || null;
    list.setSelected(id);
    mapView.select(id);
    details.show(id);
    conversation.show(id);
    trips.show(id);
    const rec = id && fleet.get(id);
    if (rec && rec.lat != null && fromList) mapView.flyTo(rec.lon, rec.lat);
    if (id && !fromList) list.scrollTo(id);
  };
  const describe = (id) => {
    const rec = fleet.get(id);
    const div = document.createElement("div");
    div.textContent = rec ? `${deviceName(rec)} · ${rec.fleet} · ${rec.status}` : id;
    return div;
  };
  const mapView = new MapView($("map"), config, { onSelect: select, describe });
  const unread = (id) => conversation.unreadCount(id);
  const list = new DeviceList($("list"), $("count"), fleet, select, unread, (id) => trips.activeStatus(id));
  const feed = new EventFeed($("feed"), (device, lon, lat) => {
    if (fleet.get(device)) select(device, false);
    mapView.flyTo(lon, lat);
  });
  const fleetChoice = new FleetChoice($("fleet"), me, fleet, {
    onChange(chosen) {
      // Another fleet: forget this one's devices and events, and let the server send the new one's.
      fleet.reset();
      feed.clear();
      select(null);
      mapView.clearDevices();
      return live.select(chosen ? { fleet: chosen } : null);
    },
    onFleets(fleets) {
      if ($("colour").value === "fleet") legend($("legend"), "fleet", fleets);
    },
  });
  const names = new DeviceNames(api, fleet, fleetChoice);
  const connection = new ConnectionState($("connection"));
  const details = new DeviceDetails(fleet, mapView, api, config.trailGapS ?? 0);
  const conversation = new Conversation(api, (device, body) => live.send(device, body), () => list.refresh());
  const trips = new TripView(api, mapView, () => list.refresh());
  // Clusters of the live devices at low zoom; the replay hides both while it is open.
  const clusters = new Clusters(mapView.map, mapView.devices);
  const replay = new Replay({
    api,
    mapView,
    feed: new EventFeed($("replay-feed"), (device, lon, lat) => mapView.flyTo(lon, lat)),
    names: (id) => (fleet.get(id) ? deviceName(fleet.get(id)) : id),
    known: () => [...fleet.byId.keys()],
    trailGapS: config.trailGapS ?? 0,
    onOpen(open) {
      mapView.devices.hidden = open;
      clusters.setEnabled(!open);
      mapView.map.triggerRepaint();
    },
  });
  const live = connectLive(token, {
    api, fleet, fleetChoice, names, feed, details, conversation, trips, connection, stats,
  });

  $("colour").addEventListener("change", () => {
    const mode = $("colour").value;
    mapView.setColourMode(mode);
    list.setColourMode(mode);
    legend($("legend"), mode, fleetChoice.fleets());
  });
  $("replay-open").addEventListener("click", () => replay.open());
  const fenceDraw = new FenceDraw({ api, map: mapView.map, ready: mapView.ready });
  $("fence-open").addEventListener("click", () => fenceDraw.open());
  const reports = new ReportsView($("app"), token, () => fleetChoice.fleets());
  $("reports-open").addEventListener("click", () => reports.open());
  $("details-replay").addEventListener("click", () => replay.open(selected ? [selected] : []));
  $("search").addEventListener("input", (e) => list.setFilter(e.target.value));
  $("details-close").addEventListener("click", () => select(null));
  $("signout").addEventListener("click", () => {
    forgetToken();
    live.close();
    window.location.replace("/");
  });
  legend($("legend"), "status", []);
  fleetChoice.refresh();

  const redraw = new Redraw({
    ready: mapView.ready,
    drawDevices(now) {
      fleet.ageStatuses(now, Date.now());
      const { added, changed } = fleet.take();
      if (!added.length && !changed.length) return false;
      mapView.updateDevices(added, changed);
      clusters.update();
      mapView.frameFleet(fleet.byId.values(), now);
      return true;
    },
    everyFrame(now) {
      const drew = list.render(now);
      details.render();
      trips.tick();
      names.check();
      clusters.tick();
      return replay.tick(now) || drew;
    },
    spent: (ms) => stats.frame(ms),
  });

  api.get("/api/geofences").then(
    (fences) => mapView.ready.then(() => {
      mapView.setFences(fences);
      trips.setFences(fences);
    }),
    (err) => console.warn("geofences:", err.message),
  );

  // For the console, `tracker bench map` and the tests.
  window.tracker = {
    stats: () => ({ ...stats.snapshot(fleet.size), drawEveryMs: redraw.everyMs }),
    resetStats: () => stats.reset(),
    deviceIds: () => [...fleet.byId.keys()],
    subscriptions: () => connection.subscriptions,
    devicePoints: () => mapView.devices.points(),
    map: mapView.map,
    clusters: () => clusters.list(),
    replay: () => replay.state(),
    fence: () => fenceDraw.describe(),
  };
}

async function boot() {
  const config = JSON.parse($("tracker-config").textContent || "{}");
  const { token, me } = await signIn();
  start(config, token, me);
}

boot();
