// Builds the web app into ../signaling/webapp: the bundle under a content-hashed name (served
// immutable), index.html naming it with Subresource Integrity (served no-cache), the service
// worker at a fixed URL, the PWA manifest and its icons. No network, no inline script.

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { deflateSync, crc32 } from "node:zlib";
import * as esbuild from "esbuild";

const here = new URL(".", import.meta.url);
const out = new URL("../signaling/webapp/", here);
rmSync(out, { recursive: true, force: true });
mkdirSync(new URL("assets/", out), { recursive: true });

/** One self-contained ES module, minified. @param {string} entry */
async function bundle(entry) {
  const result = await esbuild.build({
    entryPoints: [new URL(entry, here).pathname],
    bundle: true,
    format: "esm",
    minify: true,
    target: "es2022",
    write: false,
    legalComments: "eof",
  });
  const [output] = result.outputFiles;
  return output.contents;
}

/** @param {Uint8Array | string} data */
const digest = (data, algorithm = "sha384") => createHash(algorithm).update(data).digest();

/** A content-hashed asset; returns its URL path and SRI string. @param {string} stem
 * @param {string} ext @param {Uint8Array | string} data */
function emit(stem, ext, data) {
  const name = `assets/${stem}.${digest(data, "sha256").toString("hex").slice(0, 16)}.${ext}`;
  writeFileSync(new URL(name, out), data);
  return { path: `/${name}`, integrity: `sha384-${digest(data).toString("base64")}` };
}

/** A square PNG icon: the app colour with a white arrow-ish bar (no image tool needed).
 * @param {number} size */
function icon(size) {
  const row = 1 + size * 4;
  const raw = Buffer.alloc(row * size);
  for (let y = 0; y < size; y++) {
    raw[y * row] = 0;
    for (let x = 0; x < size; x++) {
      const inBar = Math.abs(x - size / 2) < size / 10 && y > size / 4 && y < (size * 3) / 4;
      const inHead = y > size / 2 && y < (size * 3) / 4 && Math.abs(x - size / 2) < (size * 3) / 4 - y;
      const [r, g, b] = inBar || inHead ? [255, 255, 255] : [30, 90, 160];
      raw.set([r, g, b, 255], y * row + 1 + x * 4);
    }
  }
  /** @param {string} type @param {Buffer} data */
  const chunk = (type, data) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length);
    head.write(type, 4, "ascii");
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

const workerAsset = emit("store-worker", "js", await bundle("src/store-worker.js"));
const appCode = new TextDecoder().decode(await bundle("src/app.js")).replaceAll("__STORE_WORKER__", workerAsset.path);
const appAsset = emit("app", "js", appCode);
const cssAsset = emit("app", "css", readFileSync(new URL("static/app.css", here)));
const icons = [192, 512].map((size) => ({ size, ...emit(`icon-${size}`, "png", icon(size)) }));

const manifest = {
  name: "FileShare",
  short_name: "FileShare",
  description: "Send files directly and end-to-end encrypted to someone with a short code.",
  start_url: "/",
  scope: "/",
  display: "standalone",
  background_color: "#ffffff",
  theme_color: "#1e5aa0",
  icons: icons.map((i) => ({ src: i.path, sizes: `${i.size}x${i.size}`, type: "image/png", purpose: "any" })),
};
writeFileSync(new URL("manifest.webmanifest", out), JSON.stringify(manifest, null, 1));

const html = readFileSync(new URL("static/index.html", here), "utf8")
  .replace("__APP_JS__", appAsset.path)
  .replace("__APP_JS_SRI__", appAsset.integrity)
  .replace("__APP_CSS__", cssAsset.path)
  .replace("__APP_CSS_SRI__", cssAsset.integrity)
  .replace("__ICON__", icons[0].path);
writeFileSync(new URL("index.html", out), html);

// The service worker keeps the shell: its list names this build's files, so a new build is a
// new worker (and old caches go).
const shell = ["/", "/manifest.webmanifest", appAsset.path, cssAsset.path, workerAsset.path, ...icons.map((i) => i.path)];
const swCode = new TextDecoder()
  .decode(await bundle("src/sw.js"))
  .replace('"__SHELL__"', JSON.stringify(shell))
  .replace("__VERSION__", digest(shell.join("\n"), "sha256").toString("hex").slice(0, 16));
writeFileSync(new URL("sw.js", out), swCode);
console.log(`built ${out.pathname}: ${shell.length} shell files`);
