// The offline app shell: this build's files are cached on install; navigations go to the
// network first (a new deploy shows at once) and fall back to the cached page offline; the
// content-hashed assets are served from the cache.
// Downloads: where the page has no save picker (Firefox, Safari), /download/FILEID/NAME is
// answered here, never by the server, with the verified received file streamed from the
// origin-private file system: the browser saves it as it reads, nothing is whole in memory.

const VERSION = "__VERSION__";
/** @type {string[]} */
const SHELL = /** @type {any} */ ("__SHELL__");
/** The service worker's events (their typings clash with the page's DOM ones).
 * @typedef {Event & {waitUntil(p: Promise<unknown>): void}} ExtendableEvent
 * @typedef {ExtendableEvent & {request: Request, respondWith(r: Promise<Response>): void}} FetchEvent
 * @typedef {{skipWaiting(): Promise<void>, clients: {claim(): Promise<void>},
 *   addEventListener(type: "install" | "activate", f: (e: ExtendableEvent) => void): void,
 *   addEventListener(type: "fetch", f: (e: FetchEvent) => void): void}} WorkerScope */
const sw = /** @type {WorkerScope} */ (/** @type {unknown} */ (self));

sw.addEventListener("install", (event) => {
  event.waitUntil(caches.open(VERSION).then((cache) => cache.addAll(SHELL)).then(() => sw.skipWaiting()));
});

sw.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== VERSION).map((k) => caches.delete(k))))
      .then(() => sw.clients.claim()),
  );
});

const DOWNLOAD = /^\/download\/([0-9a-f]{32})\/([^/]{1,1024})$/;

/** RFC 6266 / 5987: an ASCII stand-in and the exact UTF-8 name. @param {string} name */
function disposition(name) {
  const ascii = name.replace(/[^A-Za-z0-9._ -]/g, "_");
  const exact = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}"; filename*=UTF-8''${exact}`;
}

/** A verified received file as a streamed download; for anything else 204 No Content, which
 * leaves the page where it is (a 404 page would replace it, and end a transfer in progress).
 * @param {string} fileId @param {string} encodedName */
async function download(fileId, encodedName) {
  try {
    const name = decodeURIComponent(encodedName);
    if (/[\u0000-\u001f\u007f/\\]/.test(name)) throw new Error("not a file name");
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle("incoming");
    await dir.getFileHandle(`${fileId}.ok`); // verified, or this throws
    const file = await (await dir.getFileHandle(`${fileId}.part`)).getFile();
    return new Response(file.stream(), {
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Length": String(file.size),
        "Content-Disposition": disposition(name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
      },
    });
  } catch {
    return new Response(null, { status: 204 });
  }
}

sw.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin || url.pathname === "/ws") return;
  const wanted = DOWNLOAD.exec(url.pathname);
  if (wanted) {
    event.respondWith(download(wanted[1], wanted[2]));
    return;
  }
  if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(async () => (await caches.match("/")) ?? Response.error()));
  } else if (SHELL.includes(url.pathname)) {
    event.respondWith(caches.match(request).then((hit) => hit ?? fetch(request)));
  }
});
