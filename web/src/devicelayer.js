// The devices as one MapLibre custom WebGL layer: a point per device, drawn by the GPU as an arrow along its
// heading (a dot without one), coloured by status or fleet from a small palette.
//
// Why not a GeoJSON source: every update of a GeoJSON source re-tiles all its features in MapLibre's worker
// and rebuilds every tile's buckets on the main thread, so 10,000 devices moving at 1 Hz kept the page
// under 6 frames per second in headless Chromium. Here an update writes a few numbers into typed arrays
// and the next frame uploads them in one call; the cost follows the number of devices that moved.
//
// Positions are stored relative to a reference point (the first device) in float32, with the reference
// folded into the matrix in float64, so devices do not jitter at street zoom.
import * as maplibregl from "maplibre-gl";

const VERTEX = `#version 300 es
uniform mat4 u_matrix;
uniform float u_size;
uniform float u_bearing;
uniform int u_mode;
uniform vec3 u_palette[11];
in vec2 a_offset;
in float a_heading;
in vec2 a_style;
in float a_shown;
flat out vec3 v_colour;
flat out vec2 v_rotation;
flat out float v_arrow;
void main() {
  gl_Position = a_shown > 0.5 ? u_matrix * vec4(a_offset, 0.0, 1.0) : vec4(2.0, 2.0, 2.0, 1.0);
  gl_PointSize = a_shown > 0.5 ? u_size : 0.0;
  int index = u_mode == 0 ? int(a_style.x) : 3 + int(a_style.y);
  v_colour = u_palette[index];
  v_arrow = a_heading >= 0.0 ? 1.0 : 0.0;
  float angle = radians(a_heading - u_bearing);
  v_rotation = vec2(cos(angle), sin(angle));
}`;

// The marker, in point coordinates (-1..1, y down): a navigation arrow or a dot, white outline, soft edge.
const FRAGMENT = `#version 300 es
precision mediump float;
flat in vec3 v_colour;
flat in vec2 v_rotation;
flat in float v_arrow;
out vec4 colour;
float arrow(vec2 p) {
  // Distance (negative inside) to an arrow pointing up: tip (0, -0.95), wings (+-0.8, 0.7), notch (0, 0.3).
  vec2 q = vec2(abs(p.x), p.y);
  float outer = dot(q - vec2(0.0, -0.95), normalize(vec2(1.65, -0.8)));
  float notch = dot(q - vec2(0.0, 0.3), normalize(vec2(-0.4, 0.8)));
  return max(outer, notch);
}
void main() {
  vec2 p = (gl_PointCoord * 2.0 - 1.0) * 1.12;  // the wings (radius 1.06) stay inside the point at any angle
  float d;
  if (v_arrow > 0.5) {
    float c = v_rotation.x, s = v_rotation.y;
    d = arrow(vec2(c * p.x + s * p.y, -s * p.x + c * p.y));
  } else {
    d = length(p) - 0.6;
  }
  float aa = 0.07;
  float inner = 1.0 - smoothstep(-0.1 - aa, -0.1, d);
  float shape = 1.0 - smoothstep(-aa, 0.0, d);
  if (shape <= 0.0) discard;
  colour = vec4(mix(vec3(1.0), v_colour, inner) * shape, shape);
}`;

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [((n >> 16) & 255) / 255, ((n >> 8) & 255) / 255, (n & 255) / 255];
}

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

export class DeviceLayer {
  /** `palette`: 3 status colours (moving, stopped, offline) then 8 fleet colours, as #rrggbb. */
  constructor(id, palette) {
    this.id = id;
    this.type = "custom";
    this.renderingMode = "2d";
    this.palette = new Float32Array(palette.flatMap(hexToRgb));
    this.mode = 0;
    this.count = 0;
    this.capacity = 0;
    this.ref = null; // [x, y] mercator of the reference point
    this.ids = [];
    this.slots = new Map(); // device id -> slot
    this._grow(1024);
    this.dirty = false;
  }

  _grow(capacity) {
    const grow = (Type, old, n) => {
      const a = new Type(capacity * n);
      if (old) a.set(old);
      return a;
    };
    this.lonlat = grow(Float64Array, this.lonlat, 2); // for picking and tests: what is drawn
    this.offsets = grow(Float32Array, this.offsets, 2);
    this.headings = grow(Float32Array, this.headings, 1);
    this.styles = grow(Uint8Array, this.styles, 2);
    this.shown = grow(Uint8Array, this.shown, 1); // 0: hidden in a cluster (clusters.js)
    this.capacity = capacity;
  }

  /** Places (or moves) a device; `heading` null draws a dot; `status` 0..2 and `fleet` 0..7 pick colours. */
  set(id, lon, lat, heading, status, fleet) {
    let slot = this.slots.get(id);
    if (slot === undefined) {
      if (this.count === this.capacity) this._grow(this.capacity * 2);
      slot = this.count++;
      this.shown[slot] = 1;
      this.slots.set(id, slot);
      this.ids.push(id);
    }
    const m = maplibregl.MercatorCoordinate.fromLngLat([lon, lat]);
    if (this.ref === null) this.ref = [m.x, m.y];
    this.lonlat[2 * slot] = lon;
    this.lonlat[2 * slot + 1] = lat;
    this.offsets[2 * slot] = m.x - this.ref[0];
    this.offsets[2 * slot + 1] = m.y - this.ref[1];
    this.headings[slot] = heading == null ? -1 : heading;
    this.styles[2 * slot] = status;
    this.styles[2 * slot + 1] = fleet;
    // A device hidden in a cluster moves unseen: no repaint for it (its numbers go up with the next one).
    if (this.shown[slot]) this.dirty = true;
  }

  /** Hides (in a cluster) or shows the device in `slot`; drawn at the next flush(). */
  setShown(slot, shown) {
    const v = shown ? 1 : 0;
    if (this.shown[slot] !== v) {
      this.shown[slot] = v;
      this.dirty = true;
    }
  }

  showAll() {
    this.shown.fill(1);
    this.dirty = true;
    this.map?.triggerRepaint();
  }

  clear() {
    this.count = 0;
    this.ids = [];
    this.slots.clear();
    this.ref = null;
    this.dirty = true;
    this.map?.triggerRepaint();
  }

  setMode(mode) {
    this.mode = mode === "fleet" ? 1 : 0;
    this.map?.triggerRepaint();
  }

  /** Asks for a frame if something changed since the last one. */
  flush() {
    if (this.dirty && !this.hidden) this.map?.triggerRepaint();
  }

  /** The device drawn nearest to a screen point, within `radius` pixels, or null. */
  pick(point, radius = 12) {
    if (this.hidden) return null;
    const at = this.map.unproject(point);
    const m = maplibregl.MercatorCoordinate.fromLngLat(at);
    const perPixel = 1 / (512 * 2 ** this.map.getZoom());
    let best = null;
    let bestD = (radius * perPixel) ** 2;
    for (let i = 0; i < this.count; i++) {
      if (!this.shown[i]) continue;
      const dx = this.offsets[2 * i] + this.ref[0] - m.x;
      const dy = this.offsets[2 * i + 1] + this.ref[1] - m.y;
      const d = dx * dx + dy * dy;
      if (d < bestD) {
        bestD = d;
        best = this.ids[i];
      }
    }
    return best;
  }

  /** [lon, lat] of a device as drawn, or null. */
  position(id) {
    const slot = this.slots.get(id);
    return slot === undefined ? null : [this.lonlat[2 * slot], this.lonlat[2 * slot + 1]];
  }

  /** Device id -> [lon, lat] as drawn (for tests and the console). */
  points() {
    const out = {};
    for (let i = 0; i < this.count; i++) out[this.ids[i]] = [this.lonlat[2 * i], this.lonlat[2 * i + 1]];
    return out;
  }

  onAdd(map, gl) {
    this.map = map;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    this.program = program;
    this.loc = {};
    for (const name of ["u_matrix", "u_size", "u_bearing", "u_mode", "u_palette"]) {
      this.loc[name] = gl.getUniformLocation(program, name);
    }
    this.attr = {
      offset: gl.getAttribLocation(program, "a_offset"),
      heading: gl.getAttribLocation(program, "a_heading"),
      style: gl.getAttribLocation(program, "a_style"),
      shown: gl.getAttribLocation(program, "a_shown"),
    };
    this.buffers = { offset: gl.createBuffer(), heading: gl.createBuffer(), style: gl.createBuffer(),
      shown: gl.createBuffer() };
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    const bind = (buffer, loc, size, type, normalized) => {
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, size, type, normalized, 0, 0);
    };
    bind(this.buffers.offset, this.attr.offset, 2, gl.FLOAT, false);
    bind(this.buffers.heading, this.attr.heading, 1, gl.FLOAT, false);
    bind(this.buffers.style, this.attr.style, 2, gl.UNSIGNED_BYTE, false);
    bind(this.buffers.shown, this.attr.shown, 1, gl.UNSIGNED_BYTE, false);
    gl.bindVertexArray(null);
    this.uploaded = -1;
    this.dirty = true;
  }

  onRemove(map, gl) {
    gl.deleteProgram(this.program);
    for (const b of Object.values(this.buffers)) gl.deleteBuffer(b);
    gl.deleteVertexArray(this.vao);
  }

  render(gl, options) {
    if (this.count === 0 || this.hidden) return;
    if (this.dirty) {
      const n = this.count;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.offset);
      gl.bufferData(gl.ARRAY_BUFFER, this.offsets.subarray(0, 2 * n), gl.DYNAMIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.heading);
      gl.bufferData(gl.ARRAY_BUFFER, this.headings.subarray(0, n), gl.DYNAMIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.style);
      gl.bufferData(gl.ARRAY_BUFFER, this.styles.subarray(0, 2 * n), gl.DYNAMIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.shown);
      gl.bufferData(gl.ARRAY_BUFFER, this.shown.subarray(0, n), gl.DYNAMIC_DRAW);
      this.dirty = false;
    }
    // The matrix maps mercator 0..1 to clip space; fold in the reference point in float64.
    const a = options.defaultProjectionData?.mainMatrix ?? options.modelViewProjectionMatrix;
    const [rx, ry] = this.ref;
    const m = new Float32Array(16);
    for (let i = 0; i < 12; i++) m[i] = a[i];
    for (let r = 0; r < 4; r++) m[12 + r] = a[r] * rx + a[4 + r] * ry + a[12 + r];
    const zoom = this.map.getZoom();
    // Small at city scale, where thousands overlap anyway, full size in the streets. Every pixel counts:
    // software rendering (headless Chromium) pays per fragment, 5x going from 4 to 10 px with 10,000 devices.
    const size = Math.max(6, Math.min(28, 6 + (zoom - 10) * 4)) * (window.devicePixelRatio || 1);

    gl.useProgram(this.program);
    gl.uniformMatrix4fv(this.loc.u_matrix, false, m);
    gl.uniform1f(this.loc.u_size, size);
    gl.uniform1f(this.loc.u_bearing, this.map.getBearing());
    gl.uniform1i(this.loc.u_mode, this.mode);
    gl.uniform3fv(this.loc.u_palette, this.palette);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    gl.bindVertexArray(this.vao);
    gl.drawArrays(gl.POINTS, 0, this.count);
    gl.bindVertexArray(null);
  }
}
