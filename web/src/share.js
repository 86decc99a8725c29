// The public share page (`GET /s/<token>`): one device of one trip, live, with the trip's status and ETA,
// for the customer who waits for it; no sign-in and nothing else. The token is the page's own path; the
// socket is `/viewer` with auth {share: token}, which the server has subscribed to that device. When the
// link ends (delivered, revoked, expired) the server sends `ended` and closes the socket: the page says so.
// `body[data-share-state]` is "connecting", "live" or the end ("completed", "ended"), for tests.
import "./share.css";
import * as maplibregl from "maplibre-gl";
import { io } from "socket.io-client";
import { clock, km } from "./format.js";

const STATUS = {
  started: "On the way",
  approaching: "Almost there",
  arrived: "Arrived",
  completed: "Delivered",
  cancelled: "Cancelled",
  expired: "Ended",
};
const ENDED = { completed: "This delivery is complete", ended: "This link has ended" };

/** The configured MapLibre style, else the raster tiles over a plain background (as the dispatcher map). */
function style(config) {
  if (config.style) return config.style;
  const plain = { id: "background", type: "background", paint: { "background-color": "#e9ecef" } };
  if (!config.tiles) return { version: 8, sources: {}, layers: [plain] };
  const base = { type: "raster", tiles: [config.tiles], tileSize: 256, maxzoom: 19, attribution: config.attribution || "" };
  return { version: 8, sources: { base }, layers: [plain, { id: "base", type: "raster", source: "base" }] };
}

function $(id) {
  return document.getElementById(id);
}

function showTrip(trip) {
  $("share-status").textContent = STATUS[trip.status] || trip.status;
  $("share-status").dataset.status = trip.status;
  $("share-eta").textContent = trip.status === "arrived" ? "now" : trip.eta_ts ? clock(trip.eta_ts) : "–";
  $("share-eta").dataset.etaTs = trip.eta_ts ?? "";
  $("share-remaining").textContent = trip.remaining_m != null ? `${km(trip.remaining_m)} to go` : "";
}

function end(state) {
  document.body.dataset.shareState = state;
  $("share-notice").textContent = ENDED[state] || ENDED.ended;
  $("share-ended").hidden = false;
}

function start(config) {
  const token = decodeURIComponent(window.location.pathname.split("/").pop());
  maplibregl.setWorkerUrl(__WORKER_URL__);
  const map = new maplibregl.Map({
    container: $("map"),
    style: style(config),
    center: [0, 20],
    zoom: 1.5,
    attributionControl: { compact: true },
  });
  const courier = new maplibregl.Marker({ element: Object.assign(document.createElement("div"), { className: "share-courier" }) });
  const share = config.share || {};
  const dest = share.destination;
  if (dest) {
    const mark = Object.assign(document.createElement("div"), { className: "share-destination" });
    new maplibregl.Marker({ element: mark }).setLngLat([dest.lon, dest.lat]).addTo(map);
    map.jumpTo({ center: [dest.lon, dest.lat], zoom: 13 });
  }
  showTrip(share);
  let framed = false;
  let ended = false;

  const socket = io("/viewer", { path: "/socket.io", auth: { share: token }, transports: ["websocket", "polling"] });
  socket.on("share", (trip) => {
    showTrip(trip);
    document.body.dataset.shareState = "live";
  });
  socket.on("trip", showTrip);
  socket.on("positions", (positions) => {
    const p = positions[positions.length - 1];
    if (!p) return;
    courier.setLngLat([p.lon, p.lat]).addTo(map);
    courier.getElement().dataset.deviceId = p.device;
    courier.getElement().dataset.ts = p.ts;
    $("share-seen").textContent = `Seen at ${clock(p.ts)}`;
    if (!framed) {
      framed = true;
      const bounds = new maplibregl.LngLatBounds([p.lon, p.lat], [p.lon, p.lat]);
      if (dest) bounds.extend([dest.lon, dest.lat]);
      map.fitBounds(bounds, { padding: 60, maxZoom: 15, duration: 0 });
    }
  });
  socket.on("ended", (info) => {
    ended = true;
    end(info.state);
  });
  socket.on("connect_error", (err) => {
    // A link that ended meanwhile is refused: the server's page says how it ended.
    if (err.message === "unauthorized") setTimeout(() => window.location.reload(), 1000);
  });
  socket.on("disconnect", (reason) => {
    if (ended) return;
    if (reason === "io server disconnect") setTimeout(() => window.location.reload(), 1000);
    else document.body.dataset.shareState = "connecting";
  });
}

start(JSON.parse($("tracker-config").textContent || "{}"));
