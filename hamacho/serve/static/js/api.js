// The one way the UI talks to the server: fetch with the token, JSON errors turned into messages,
// and images loaded as blobs (an <img src> cannot send the Authorization header).

const TOKEN_KEY = "hamacho.token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let unauthorizedHandler = null;

export class ApiError extends Error {
  constructor(message, status, skipped = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.skipped = skipped; // files of an upload or prediction that were all refused: [{name, reason}]
  }
}

export function getToken() {
  return token;
}

export function setToken(value) {
  token = value || "";
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  setCookie();
}

/**
 * Pages opened by a plain link (the training report and its pictures) cannot send a header; the server
 * also accepts the token as this session cookie, strict same-site, gone when the browser closes.
 */
function setCookie() {
  const value = token ? encodeURIComponent(token) : "";
  const expiry = token ? "" : "; max-age=0";
  document.cookie = `hamacho_token=${value}; path=/; SameSite=Strict${location.protocol === "https:" ? "; Secure" : ""}${expiry}`;
}
setCookie();

/** Called with the server's message when any request answers 401. */
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

/**
 * A URL the browser can fetch from this page. The server's own links ("/api/v1/...") become relative
 * ("api/v1/..."), so the UI keeps working behind a reverse-proxy prefix.
 */
export function resolve(path) {
  if (/^[a-z]+:/i.test(path)) return path;
  const i = path.indexOf("/api/v1/");
  if (path.startsWith("/") && i >= 0) return path.slice(i + 1);
  return path.replace(/^\/+/, "");
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function errorOf(res) {
  let text = "";
  try {
    text = await res.text();
    const data = JSON.parse(text);
    const skipped = data && Array.isArray(data.skipped) ? data.skipped : [];
    if (data && typeof data.error === "string" && data.error) return { message: data.error, skipped };
    if (data && data.detail) return { message: typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail), skipped };
  } catch {
    // not JSON: fall through to the status line
  }
  const status = `${res.status} ${res.statusText || ""}`.trim();
  return { message: text && text.length < 200 ? `${status}: ${text}` : `The server answered ${status}`, skipped: [] };
}

/** Low level: fetch and throw ApiError on network failures and non-2xx answers. */
export async function send(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let res;
  try {
    res = await fetch(resolve(path), init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError("Cannot reach the server. Check that hamacho serve is running and the network is up.", 0);
  }
  if (!res.ok) {
    const { message, skipped } = await errorOf(res);
    if (res.status === 401 && unauthorizedHandler) unauthorizedHandler(message);
    throw new ApiError(message, res.status, skipped);
  }
  return res;
}

/** JSON request; returns the parsed body (or null when there is none). */
export async function api(path, options = {}) {
  const res = await send(path, options);
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  if (type.includes("json")) return res.json();
  const text = await res.text();
  return text ? text : null;
}

/** Every item of a paginated list endpoint. */
export async function listAll(path, { pageSize = 50, maxPages = 40 } = {}) {
  const items = [];
  const sep = path.includes("?") ? "&" : "?";
  for (let page = 0; page < maxPages; page += 1) {
    const data = await api(`${path}${sep}offset=${items.length}&limit=${pageSize}`);
    const got = (data && data.items) || [];
    items.push(...got);
    const total = typeof data.total === "number" ? data.total : null;
    if (got.length < pageSize || (total !== null && items.length >= total)) break;
  }
  return items;
}

// Images: a small queue so a page of thumbnails does not open hundreds of requests at once.
const MAX_PARALLEL = 6;
let running = 0;
const waiting = [];

function schedule(task) {
  return new Promise((resolvePromise, reject) => {
    waiting.push({ task, resolvePromise, reject });
    pump();
  });
}

function pump() {
  while (running < MAX_PARALLEL && waiting.length) {
    const { task, resolvePromise, reject } = waiting.shift();
    running += 1;
    task()
      .then(resolvePromise, reject)
      .finally(() => {
        running -= 1;
        pump();
      });
  }
}

/** The file at a URL as a Blob (with the token). */
export function fetchBlob(path) {
  return schedule(async () => {
    const res = await send(path);
    return res.blob();
  });
}

/**
 * Show the picture at `path` in `img`: fetched with the token, shown from an object URL.
 * The previous object URL of the element is released. Resolves to true when the picture loaded.
 */
export async function loadImage(img, path) {
  if (!path) return false;
  img.dataset.src = path;
  img.classList.add("loading");
  img.removeAttribute("data-failed");
  try {
    const blob = await fetchBlob(path);
    if (img.dataset.src !== path) return false; // replaced meanwhile
    releaseImage(img);
    const url = URL.createObjectURL(blob);
    img.dataset.objectUrl = url;
    await new Promise((ok) => {
      img.addEventListener("load", ok, { once: true });
      img.addEventListener("error", ok, { once: true });
      img.src = url;
    });
    return img.naturalWidth > 0;
  } catch (err) {
    img.dataset.failed = "1";
    img.alt = `${img.alt || "Picture"} (not available: ${err.message})`;
    return false;
  } finally {
    img.classList.remove("loading");
  }
}

export function releaseImage(img) {
  if (img.dataset.objectUrl) {
    URL.revokeObjectURL(img.dataset.objectUrl);
    delete img.dataset.objectUrl;
  }
}

/** Release the object URLs of every picture inside `root` (before it is emptied). */
export function releaseWithin(root) {
  root.querySelectorAll("img[data-object-url]").forEach(releaseImage);
}

/** Save the file at `path` (with the token) under `filename`. */
export async function download(path, filename) {
  const res = await send(path);
  const blob = await res.blob();
  const disposition = res.headers.get("content-disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : filename;
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name || "download";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
