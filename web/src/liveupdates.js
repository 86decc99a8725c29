// What each event of the live connection does to the page. They only update state (the fleet, the feed,
// the details, the trips); the redraw loop draws what changed, so a burst of events costs the map one update.
import { Live } from "./live.js";
import { signInAgain } from "./session.js";

/** Opens the `/viewer` connection and wires its events to the page's parts; returns the Live. */
export function connectLive(
  token,
  { api, fleet, fleetChoice, names, feed, details, conversation, trips, connection, stats },
) {
  return new Live(token, {
    onPositions(positions) {
      const t0 = performance.now();
      const mine = fleetChoice.only(positions);
      fleet.applyPositions(mine, Date.now());
      details.positions(mine);
      trips.positions(mine);
      stats.update(positions.length, performance.now() - t0);
    },
    onGeofence(event) {
      if (fleetChoice.shows(event)) feed.add(event);
    },
    onMessage(message) {
      if (fleetChoice.shows(message)) conversation.message(message);
    },
    onMessageStatus(status) {
      conversation.status(status);
    },
    onTrip(event) {
      if (fleetChoice.shows(event)) trips.event(event);
    },
    onConnection(state, detail) {
      connection.show(state, detail);
    },
    // Every (re)subscription: what was missed while offline (names of new devices, events) is read again.
    async onSubscribed() {
      await names.loadOrWarn();
      await feed.backfill(api, fleetChoice.chosen).catch((err) => console.warn("events:", err.message));
      await trips.backfill().catch((err) => console.warn("trips:", err.message));
      connection.loaded();
    },
    onUnauthorized: signInAgain,
  });
}
