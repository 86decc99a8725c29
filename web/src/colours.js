// The colours a device is drawn in, by status or by fleet, and the legend that explains them. The map, the
// list's dots and the legend all take them from here, so they cannot drift apart.

export const STATUS_COLOURS = { moving: "#16a34a", stopped: "#d97706", offline: "#9ca3af" };

export const PALETTE = ["#2563eb", "#db2777", "#0d9488", "#7c3aed", "#ea580c", "#0891b2", "#65a30d", "#be123c"];

/** A stable palette index per fleet id: a fleet keeps its colour across reloads and viewers. */
export function fleetIndex(fleet) {
  let h = 0;
  for (let i = 0; i < fleet.length; i++) h = (h * 31 + fleet.charCodeAt(i)) >>> 0;
  return h % PALETTE.length;
}

export function fleetColour(fleet) {
  return PALETTE[fleetIndex(fleet)];
}

/** Fills `element` with a dot and a label per status (mode "status") or per fleet in `fleets` ("fleet"). */
export function legend(element, mode, fleets) {
  const entries = mode === "fleet" ? fleets.map((f) => [f, fleetColour(f)]) : Object.entries(STATUS_COLOURS);
  element.replaceChildren(
    ...entries.map(([label, colour]) => {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour;
      span.append(dot, label);
      return span;
    }),
  );
}
