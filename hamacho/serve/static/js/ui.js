// Small DOM helpers shared by every screen: element builder, messages, drop zones, formatting, tabs.

/** h("button", {class: "x", onclick: fn}, "text", child) -> element */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// Messages ---------------------------------------------------------------------------------------

const MAX_ERRORS = 3;

/** Show an error in the alert area (role="alert"), newest first, each with a close button. */
export function showError(message) {
  const area = $("#errors");
  const text = message instanceof Error ? message.message : String(message);
  // The same message again: move it to the top instead of stacking copies.
  for (const old of $$(".error", area)) {
    if (old.dataset.text === text) old.remove();
  }
  const item = h(
    "div",
    { class: "error", dataset: { text } },
    h("span", { class: "error-icon", "aria-hidden": "true" }, "!"),
    h("p", {}, text),
    h("button", { type: "button", class: "icon-button", "aria-label": "Close this message", onclick: () => item.remove() }, "×"),
  );
  area.prepend(item);
  $$(".error", area).slice(MAX_ERRORS).forEach((e) => e.remove());
}

/**
 * What a drop of files did, kept on screen until closed: "2 added, 1 skipped" and, for each skipped file,
 * its name and the server's reason. Nothing is shown when nothing was skipped.
 */
export function showSkipped(summary, skipped) {
  if (!skipped.length) return;
  const area = $("#errors");
  const item = h(
    "div",
    { class: "error skipped-files", role: "alert" },
    h("span", { class: "error-icon", "aria-hidden": "true" }, "!"),
    h("div", { class: "skipped-body" },
      h("p", {}, summary),
      h("ul", {}, ...skipped.map((s) => h("li", {}, h("strong", {}, s.name), `: ${s.reason}`)))),
    h("button", { type: "button", class: "icon-button", "aria-label": "Close this message", onclick: () => item.remove() }, "×"),
  );
  area.prepend(item);
  $$(".error", area).slice(MAX_ERRORS).forEach((e) => e.remove());
}

export function clearErrors() {
  $("#errors").replaceChildren();
}

let statusTimer = 0;

/** A short polite notice ("Uploaded 8 images"). */
export function showStatus(message) {
  const area = $("#status");
  area.textContent = message;
  area.classList.add("visible");
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => area.classList.remove("visible"), 5000);
}

/** Wrap an async event handler: errors go to the alert area, the button is disabled meanwhile. */
export function guard(fn, button) {
  return async (...args) => {
    if (button) button.disabled = true;
    try {
      return await fn(...args);
    } catch (err) {
      if (err && err.name === "AbortError") return undefined;
      showError(err);
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  };
}

/** Ask before something that cannot be undone. */
export function confirmAction(text) {
  return window.confirm(text);
}

// Drop zones -------------------------------------------------------------------------------------

/**
 * Make `zone` accept dropped files and open the file picker `input` on click, Enter or Space.
 * `onFiles(File[])` receives the files.
 */
export function setupDropzone(zone, input, onFiles) {
  const open = () => input.click();
  zone.addEventListener("click", (e) => {
    if (e.target === input) return;
    open();
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open();
    }
  });
  input.addEventListener("change", () => {
    const files = Array.from(input.files || []);
    input.value = "";
    if (files.length) onFiles(files);
  });
  let depth = 0;
  zone.addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth += 1;
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    const files = Array.from((e.dataTransfer && e.dataTransfer.files) || []);
    if (files.length) onFiles(files);
  });
}

// Files dropped outside a drop zone must not navigate away from the page.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

// Formatting -------------------------------------------------------------------------------------

export function isNumber(x) {
  return typeof x === "number" && Number.isFinite(x);
}

export function fmt(x, digits = 3) {
  return isNumber(x) ? x.toFixed(digits) : "n/a";
}

/** Raw scores and thresholds: a few significant digits whatever their scale. */
export function fmtRaw(x) {
  if (!isNumber(x)) return "n/a";
  const abs = Math.abs(x);
  if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return x.toExponential(3);
  return Number(x.toPrecision(4)).toString();
}

export function fmtDate(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function fmtBytes(n) {
  if (!isNumber(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function plural(n, word, many = `${word}s`) {
  return `${n} ${n === 1 ? word : many}`;
}

/** The last path segment of a URL, without the query string. */
export function baseName(url) {
  return decodeURIComponent(String(url).split("?")[0].split("/").pop() || "");
}

// Tabs as URL routes -----------------------------------------------------------------------------
// "#train", "#dataset/<tag>": every tab change is a history entry (Back returns to the previous tab), and a
// reload opens the same tab (and the Dataset screen the same tag).

const tabListeners = [];
const routeListeners = [];
const routeArgs = {};
let currentTab = "";

export function onTabShown(fn) {
  tabListeners.push(fn);
}

/** `fn(tab, arg)` when Back or Forward lands on a route (arg: e.g. the dataset tag, or ""). */
export function onRoute(fn) {
  routeListeners.push(fn);
}

function parseRoute(hash = location.hash) {
  const text = hash.replace(/^#/, "");
  const cut = text.indexOf("/");
  const tab = cut < 0 ? text : text.slice(0, cut);
  let arg = "";
  try {
    arg = cut < 0 ? "" : decodeURIComponent(text.slice(cut + 1));
  } catch {
    arg = "";
  }
  return { tab, arg };
}

/** The route's argument of `tab` when the page was opened (or last navigated). */
export function routeArg(tab) {
  return routeArgs[tab] ?? "";
}

function routeOf(tab) {
  return `#${tab}${routeArgs[tab] ? `/${encodeURIComponent(routeArgs[tab])}` : ""}`;
}

/** Record `tab`'s argument (the open dataset tag) in the URL, without a new history entry. */
export function setRouteArg(tab, value) {
  routeArgs[tab] = value || "";
  if (currentTab === tab && location.hash !== routeOf(tab)) history.replaceState(null, "", routeOf(tab));
}

export function showTab(name, { focus = false, push = true } = {}) {
  const tabs = $$('[role="tab"]');
  const tab = tabs.find((t) => t.dataset.tab === name) || tabs[0];
  for (const t of tabs) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.getAttribute("aria-selected") === "true" && tab.dataset.tab !== currentTab) clearErrors();
  const first = currentTab === "";
  currentTab = tab.dataset.tab;
  const route = routeOf(currentTab);
  if (location.hash !== route) {
    if (push && !first) history.pushState(null, "", route);
    else history.replaceState(null, "", route);
  }
  tabListeners.forEach((fn) => fn(tab.dataset.tab));
}

export function setupTabs() {
  const tabs = $$('[role="tab"]');
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
    tab.addEventListener("keydown", (e) => {
      let next = null;
      if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
      else if (e.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
      else if (e.key === "Home") next = tabs[0];
      else if (e.key === "End") next = tabs[tabs.length - 1];
      if (next) {
        e.preventDefault();
        showTab(next.dataset.tab, { focus: true });
      }
    });
  });
  window.addEventListener("popstate", () => {
    const { tab, arg } = parseRoute();
    if (tab) routeArgs[tab] = arg;
    showTab(tab, { push: false });
    routeListeners.forEach((fn) => fn(currentTab, arg));
  });
  const { tab, arg } = parseRoute();
  if (tab) routeArgs[tab] = arg;
  showTab(tab, { push: false });
}
