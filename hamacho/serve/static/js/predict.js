// Predict screen: choose a model, drop images, see OK/NG, score, heatmap and defect area; the sliders
// re-decide and redraw without running the model again.
import { api, releaseWithin } from "./api.js";
import { $, $$, h, setupDropzone, showError, showSkipped, showStatus, showTab, plural, fmt, fmtDate, guard } from "./ui.js";
import { state, on, emit } from "./state.js";
import { predictionCard, redecide, resegment } from "./prediction.js";

const CHUNK = 8;
const MODEL_KEY = "hamacho.predictModel";
const BY_KEY = "hamacho.reviewer";
let wanted = localStorage.getItem(MODEL_KEY) || "";
let current = null; // the chosen model's current threshold version: {version, image, pixel, ...}
let updateSliders = () => {};

export function initPredict() {
  on("models", fillModels);
  on("predict-with", (ref) => {
    wanted = String(ref);
    fillModels(state.models);
    showTab("predict");
    $("#pr-model").focus();
  });
  $("#pr-model").addEventListener("change", () => {
    wanted = $("#pr-model").value;
    localStorage.setItem(MODEL_KEY, wanted);
    guard(() => loadVersions({ apply: true }))();
  });
  $("#pr-by").value = localStorage.getItem(BY_KEY) || "";
  $("#pr-by").addEventListener("change", () => localStorage.setItem(BY_KEY, $("#pr-by").value.trim()));
  $("#pr-save-cuts").addEventListener("click", guard(saveCuts, $("#pr-save-cuts")));
  setupDropzone($("#pr-drop"), $("#pr-input"), predict);

  let frame = 0;
  const slider = $("#pr-threshold");
  const pixel = $("#pr-pixel");
  const update = () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      $("#pr-threshold-out").value = fmt(Number(slider.value), 2);
      $("#pr-pixel-out").value = fmt(Number(pixel.value), 2);
      rethreshold();
    });
  };
  slider.addEventListener("input", update);
  pixel.addEventListener("input", update);
  $("#pr-reset").addEventListener("click", () => {
    const cuts = current || { image: 0.5, pixel: 0.5 };
    slider.value = String(cuts.image);
    pixel.value = String(cuts.pixel);
    update();
  });
  updateSliders = update;
  renderSummary();
}

function threshold() {
  return Number($("#pr-threshold").value);
}

function pixelThreshold() {
  return Number($("#pr-pixel").value);
}

function fillModels(models) {
  const select = $("#pr-model");
  if (!models.length) {
    select.replaceChildren(h("option", { value: "" }, "No models yet: train one first"));
    return;
  }
  select.replaceChildren(
    ...models.map((m) => h("option", { value: m.tag }, `${m.tag}  (${m.display_name || m.model}, ${m.backbone || ""})`)),
  );
  const match = models.find((m) => m.tag === wanted || String(m.id) === wanted);
  if (match) select.value = match.tag;
  const shown = select.value;
  if (shown && (!current || current.model !== shown)) guard(() => loadVersions({ apply: true }))();
}

/** The chosen model's threshold versions: the list, the line naming the current one, and (apply) the sliders
 * set to its cuts. */
async function loadVersions({ apply = false } = {}) {
  const ref = $("#pr-model").value;
  if (!ref) return;
  const data = await api(`api/v1/models/${encodeURIComponent(ref)}/thresholds`);
  const items = (data && data.items) || [];
  const now = items.find((v) => v.version === data.current) || { version: 0, image: 0.5, pixel: 0.5 };
  current = { ...now, model: ref };
  $("#pr-version").textContent = now.version
    ? `${ref} uses threshold version ${now.version}: image ${fmt(now.image, 2)}, pixel ${fmt(now.pixel, 2)}` +
      `${now.created_by ? `, saved by ${now.created_by}` : ""} on ${fmtDate(now.created_at)}.`
    : `${ref} uses the thresholds set in training (version 0).`;
  $("#pr-versions-list").replaceChildren(
    ...items.slice().reverse().map((v) =>
      h("tr", { class: v.version === data.current ? "current" : "" },
        h("td", {}, v.version ? String(v.version) : "0 (training)"),
        h("td", {}, fmt(v.image, 2)),
        h("td", {}, fmt(v.pixel, 2)),
        h("td", {}, v.version ? `${v.created_by || "—"}, ${fmtDate(v.created_at)}${v.note ? ` · ${v.note}` : ""}` : "—"),
        h("td", { class: "row-actions" }, v.version === data.current
          ? h("span", { class: "muted" }, "in use")
          : h("button", { type: "button", class: "secondary small", "aria-label": `Use threshold version ${v.version}`,
            onclick: guard(() => useVersion(v.version)) }, "Use")))),
  );
  if (apply) {
    $("#pr-threshold").value = String(now.image);
    $("#pr-pixel").value = String(now.pixel);
    updateSliders();
  }
}

async function saveCuts() {
  const ref = $("#pr-model").value;
  if (!ref) throw new Error("Choose a model first.");
  const by = $("#pr-by").value.trim();
  localStorage.setItem(BY_KEY, by);
  const saved = await api(`api/v1/models/${encodeURIComponent(ref)}/thresholds`, {
    method: "POST", json: { image: threshold(), pixel: pixelThreshold(), by: by || null } });
  showStatus(`Saved image ${fmt(saved.image, 2)} and pixel ${fmt(saved.pixel, 2)} as version ${saved.version} of ${ref}; predictions use it from now on.`);
  await loadVersions();
}

async function useVersion(version) {
  const ref = $("#pr-model").value;
  const cuts = await api(`api/v1/models/${encodeURIComponent(ref)}/thresholds/${version}/activate`, { method: "POST" });
  showStatus(`${ref} uses threshold version ${cuts.version} again.`);
  await loadVersions({ apply: true });
}

function cards() {
  return $$("#pr-results .pred");
}

function rethreshold() {
  const t = threshold();
  const pt = pixelThreshold();
  for (const card of cards()) {
    redecide(card, t);
    resegment(card, pt);
  }
  renderSummary();
}

function renderSummary() {
  const all = cards();
  const box = $("#pr-summary");
  if (!all.length) {
    box.replaceChildren(h("p", { class: "muted" }, "Results appear here. Each image gets OK or NG, its score (0 to 1), a heatmap and the defect area."));
    return;
  }
  const count = (d) => all.filter((c) => c.dataset.decision === d).length;
  const ng = count("NG");
  const ok = count("OK");
  const bad = count("error");
  const busy = count("pending");
  box.replaceChildren(
    h("p", {},
      h("strong", {}, plural(all.length - busy, "image")), busy ? ` (${busy} in progress)` : "", ": ",
      h("span", { class: "count-ng" }, `${ng} NG`), " · ",
      h("span", { class: "count-ok" }, `${ok} OK`),
      bad ? ` · ${bad} not readable` : "",
      ` at threshold ${fmt(threshold(), 2)}`),
    h("button", { type: "button", class: "link-button", onclick: clearResults }, "Clear results"),
  );
}

function clearResults() {
  const box = $("#pr-results");
  releaseWithin(box);
  box.replaceChildren();
  renderSummary();
  $("#pr-drop").focus();
}

async function predict(files) {
  const ref = $("#pr-model").value;
  if (!ref) {
    showError(state.models.length ? "Choose a model first." : "There is no model yet. Train one on the Train screen first.");
    return;
  }
  const save = $("#pr-save").checked;
  const box = $("#pr-results");
  let saved = 0;
  let scored = 0;
  const skipped = [];
  for (let i = 0; i < files.length; i += CHUNK) {
    const chunk = files.slice(i, i + CHUNK);
    const placeholders = chunk.map((f) =>
      h("article", { class: "pred pending", dataset: { decision: "pending" }, "aria-busy": "true" },
        h("header", { class: "pred-head" }, h("span", { class: "spinner", "aria-hidden": "true" }), h("div", { class: "pred-title" }, h("h3", {}, f.name), h("p", { class: "muted" }, "Checking…")))));
    box.prepend(...placeholders);
    renderSummary();
    const form = new FormData();
    for (const f of chunk) form.append("files", f, f.name);
    form.append("image_threshold", String(threshold()));
    form.append("pixel_threshold", String(pixelThreshold()));
    form.append("save", save ? "true" : "false");
    try {
      const data = await api(`api/v1/models/${encodeURIComponent(ref)}/predict`, { method: "POST", form });
      const items = (data && data.items) || [];
      const made = items.map((p) => predictionCard(p, { threshold: threshold(), pixelThreshold: pixelThreshold(), meta: [data.model_tag || ref] }));
      placeholders.forEach((ph, k) => (made[k] ? ph.replaceWith(made[k]) : ph.remove()));
      made.slice(placeholders.length).forEach((c) => box.prepend(c));
      saved += items.filter((p) => p.result_id).length;
      scored += items.length;
      skipped.push(...((data && data.skipped) || []));
      for (const p of items) if (p.error) showError(`${p.name}: ${p.error}`);
    } catch (err) {
      placeholders.forEach((ph) => ph.remove());
      if (err.skipped && err.skipped.length) {
        skipped.push(...err.skipped); // no file of this chunk could be scored, each with its reason
        continue;
      }
      showError(err);
      if (err.status === 0 || err.status === 401 || err.status === 404) break;
    } finally {
      renderSummary();
    }
  }
  showSkipped(`${scored} scored, ${skipped.length} skipped`, skipped);
  if (saved) {
    showStatus(`Saved ${plural(saved, "result")} to the history.`);
    emit("results-saved", ref);
  }
}
