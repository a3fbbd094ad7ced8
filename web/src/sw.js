// The offline app shell: this build's files are cached on install; navigations go to the
// network first (a new deploy shows at once) and fall back to the cached page offline; the
// content-hashed assets are served from the cache.

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

sw.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin || url.pathname === "/ws") return;
  if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(async () => (await caches.match("/")) ?? Response.error()));
  } else if (SHELL.includes(url.pathname)) {
    event.respondWith(caches.match(request).then((hit) => hit ?? fetch(request)));
  }
});
