// Builds the dispatcher map into dist/: one bundle (MapLibre GL JS and socket.io-client from npm), its CSS,
// MapLibre's worker and the offline world map, each under a content-hashed name so the server can let browsers
// cache them for good, and the icon; index.html is written last with those names, so a half-finished build
// never points at missing files.
import * as esbuild from "esbuild";
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const assets = join(dist, "assets");
const dev = process.argv.includes("--dev"); // readable output for debugging in the browser

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const worker = join(here, "node_modules", "maplibre-gl", "dist", "maplibre-gl-worker.mjs");
const workerHash = createHash("sha256").update(await readFile(worker)).digest("hex").slice(0, 10);
const workerName = `maplibre-gl-worker-${workerHash}.mjs`;
await copyFile(worker, join(assets, workerName));

// Natural Earth land and borders (world-atlas, TopoJSON): what the map draws when tiles can't be reached,
// fetched only then and turned into GeoJSON in the page by topojson-client.
const world = join(here, "node_modules", "world-atlas", "countries-50m.json");
const worldHash = createHash("sha256").update(await readFile(world)).digest("hex").slice(0, 10);
const worldName = `world-50m-${worldHash}.json`;
await copyFile(world, join(assets, worldName));
await copyFile(join(here, "src", "favicon.svg"), join(dist, "favicon.svg"));

const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.js"), join(here, "src", "share.js")],
  bundle: true,
  format: "esm",
  splitting: true, // the share page's entry (share.js) shares MapLibre and socket.io-client with the map's
  target: ["chrome110", "firefox115", "safari16"],
  minify: !dev,
  sourcemap: true,
  outdir: assets,
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  define: {
    __WORKER_URL__: JSON.stringify(`/assets/${workerName}`),
    __WORLD_URL__: JSON.stringify(`/assets/${worldName}`),
  },
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = outputs.find((f) => f.startsWith("main-") && f.endsWith(".js"));
const css = outputs.find((f) => f.startsWith("main-") && f.endsWith(".css"));
if (!js || !css) throw new Error(`build produced no main bundle: ${outputs.join(", ")}`);

// The share page (GET /s/<token>): the second entry, on the same MapLibre and socket.io-client.
const shareJs = outputs.find((f) => f.startsWith("share-") && f.endsWith(".js"));
const shareCss = outputs.find((f) => f.startsWith("share-") && f.endsWith(".css"));
if (!shareJs || !shareCss) throw new Error(`build produced no share bundle: ${outputs.join(", ")}`);
const shareTemplate = await readFile(join(here, "src", "share.html"), "utf8");
await writeFile(
  join(dist, "share.html"),
  shareTemplate.replace("__SHARE_JS__", `/assets/${shareJs}`).replace("__SHARE_CSS__", `/assets/${shareCss}`),
);

const template = await readFile(join(here, "src", "index.html"), "utf8");
const page = template.replace("__MAIN_JS__", `/assets/${js}`).replace("__MAIN_CSS__", `/assets/${css}`);
await writeFile(join(dist, "index.html"), page);

// Pre-compressed copies: the server sends them to browsers that accept gzip (a third of the bytes).
for (const name of await readdir(assets)) {
  if (/\.(m?js|css|json)$/.test(name)) {
    const data = await readFile(join(assets, name));
    await writeFile(join(assets, `${name}.gz`), await promisify(gzip)(data, { level: 9 }));
  }
}

const files = await readdir(assets);
console.log(`built web/dist: index.html, ${files.length} assets (${js}, ${css}, ${workerName})`);
