// How the page writes a device's values for the dispatcher: one place, so the list, the details, the map's
// popup and the event feed say "12 km/h", "3 min ago" or "–" the same way.

/** What a missing value shows as. */
export const NONE = "–";
/** The time of a fix that never came. */
const NEVER = "never";

/** The name a device goes by: its name when it has one, else its id. */
export function deviceName(rec) {
  return rec.name || rec.id;
}

/** How long before `now` a time (ms) was: "12 s ago", "3 min ago", "2 h ago", then the date itself. */
export function ago(ts, now) {
  if (ts == null) return NEVER;
  const s = Math.max(0, Math.round((now - ts) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts).toLocaleString();
}

/** A time (ms) as the dispatcher's clock shows it. */
export function clock(ts) {
  return new Date(ts).toLocaleTimeString();
}

/** A fix's time on the clock and how long ago, "14:03:12 (3 min ago)"; "never" without one. */
export function fixTime(ts, now) {
  return ts == null ? NEVER : `${clock(ts)} (${ago(ts, now)})`;
}

/** A speed in m/s, in km/h. */
export function kmh(speed) {
  return speed == null ? NONE : `${Math.round(speed * 3.6)} km/h`;
}

/** A distance in metres, in km to 100 m. */
export function km(metres) {
  return `${(metres / 1000).toFixed(1)} km`;
}

/** A heading in degrees, whole. */
export function degrees(heading) {
  return heading == null ? NONE : `${Math.round(heading)}°`;
}

/** A position as "lat, lon" to five decimals (about a metre). */
export function latLon(lat, lon) {
  return lat == null ? NONE : `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
}
