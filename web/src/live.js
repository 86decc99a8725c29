// The Socket.IO connection to `/viewer`. socket.io-client reconnects by itself after a network drop (with
// backoff); on every (re)connect this subscribes again to the current selection, and the server answers
// with a `positions` snapshot, so the map is whole again without a reload. A refused token goes back to
// the sign-in form.
import { io } from "socket.io-client";

const WORLD = [-180, -90, 180, 90];

export class Live {
  constructor(token, handlers) {
    this.handlers = handlers;
    this.selection = null; // {fleet} or null for every granted fleet
    this.socket = io("/viewer", {
      path: "/socket.io",
      auth: { token },
      transports: ["websocket", "polling"],
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    this.socket.on("connect", () => this._subscribe().catch((err) => handlers.onConnection("offline", err.message)));
    this.socket.on("disconnect", (reason) => {
      handlers.onConnection("offline", reason);
      // The server closed the session itself (a restart): socket.io does not retry that on its own.
      if (reason === "io server disconnect") this.socket.connect();
    });
    this.socket.on("connect_error", (err) => {
      if (err.message === "unauthorized") {
        this.socket.disconnect();
        handlers.onUnauthorized();
      } else {
        handlers.onConnection("offline", err.message);
      }
    });
    this.socket.on("positions", handlers.onPositions);
    this.socket.on("geofence", handlers.onGeofence);
    this.socket.on("message", handlers.onMessage);
    this.socket.on("message_status", handlers.onMessageStatus);
    this.socket.on("trip", handlers.onTrip);
  }

  _payload(selection) {
    return selection ? { fleet: selection.fleet } : { bbox: WORLD };
  }

  async _subscribe() {
    this.handlers.onConnection("connecting", "subscribing");
    const ack = await this.socket.timeout(15000).emitWithAck("subscribe", this._payload(this.selection));
    if (!ack.ok) throw new Error(`subscribe refused: ${ack.error}`);
    this.handlers.onConnection("live");
    this.handlers.onSubscribed();
  }

  /** Watch one fleet, or (null) every fleet the token grants. */
  async select(selection) {
    const previous = this.selection;
    this.selection = selection;
    if (!this.socket.connected) return;
    try {
      await this.socket.timeout(15000).emitWithAck("unsubscribe", this._payload(previous));
      await this._subscribe();
    } catch (err) {
      this.handlers.onConnection("offline", err.message);
    }
  }

  /** Sends a message to a device; resolves with the server's ack ({ok, id} or {ok: false, error}). */
  async send(device, body) {
    try {
      return await this.socket.timeout(15000).emitWithAck("send", { device, body });
    } catch {
      return { ok: false, error: "no answer from the server (offline?)" };
    }
  }

  close() {
    this.socket.disconnect();
  }
}
