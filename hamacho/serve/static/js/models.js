// Models screen: the list, one model's card (metrics, thresholds, report, pictures), delete, import.
import { api, download, loadImage, releaseWithin, resolve } from "./api.js";
import { $, h, guard, showStatus, confirmAction, fmt, fmtRaw, fmtDate, isNumber, plural } from "./ui.js";
import { state, on, refreshModels, predictWith } from "./state.js";

const METRIC_ORDER = ["image_AUROC", "image_F1", "pixel_AUROC", "pixel_F1", "pixel_AUPRO"];
const METRIC_HELP = {
  image_AUROC: "How well scores separate good from defective images (1 = perfectly)",
  image_F1: "Balance of missed defects and false alarms at the threshold (1 = none)",
  pixel_AUROC: "How well the map separates defect pixels from good pixels",
  pixel_F1: "Overlap of predicted and true defect areas at the pixel threshold",
  pixel_AUPRO: "How much of each defect region is found, at low false-alarm rates",
};

let shownModel = null;

export function initModels() {
  on("models", renderTable);
  $("#models-refresh").addEventListener("click", guard(refreshModels, $("#models-refresh")));
  $("#import-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guard(importModel, $("#import-form button[type=submit]"))();
  });
}

function modelName(m) {
  return m.display_name || m.model || "";
}

function renderTable(models) {
  const body = $("#models-table tbody");
  $("#models-empty").hidden = models.length > 0;
  $("#models-table").hidden = models.length === 0;
  body.replaceChildren(
    ...models.map((m) => {
      const auroc = m.metrics && isNumber(m.metrics.image_AUROC) ? m.metrics.image_AUROC : null;
      const selected = shownModel && shownModel.id === m.id;
      return h(
        "tr",
        { class: selected ? "selected" : "" },
        h("th", { scope: "row" }, m.tag, m.loaded ? h("span", { class: "flag ok", title: "Kept in memory" }, "loaded") : null),
        h("td", {}, modelName(m)),
        h("td", {}, m.backbone || ""),
        h("td", {}, sizeText(m.image_size)),
        h("td", { class: "num" }, auroc === null ? "n/a" : auroc.toFixed(3)),
        h("td", {}, fmtDate(m.created_at)),
        h(
          "td",
          { class: "row-actions" },
          h("button", { type: "button", class: "secondary small", onclick: guard(() => showModel(m.id)), "aria-label": `Details of ${m.tag}` }, "Details"),
          h("button", { type: "button", class: "secondary small", onclick: () => predictWith(m.tag), "aria-label": `Predict with ${m.tag}` }, "Predict"),
          h("button", { type: "button", class: "danger-outline small", onclick: guard(() => deleteModel(m)), "aria-label": `Delete ${m.tag}` }, "Delete"),
        ),
      );
    }),
  );
}

async function showModel(id) {
  const model = await api(`api/v1/models/${encodeURIComponent(id)}`);
  shownModel = model;
  const box = $("#model-detail");
  releaseWithin(box);
  const card = modelCard(model);
  box.replaceChildren(card);
  renderTable(state.models);
  card.scrollIntoView({ behavior: "smooth", block: "start" });
  $("h2", card).focus();
}

async function deleteModel(m) {
  if (!confirmAction(`Delete the model “${m.tag}” and its saved results?`)) return;
  await api(`api/v1/models/${encodeURIComponent(m.id)}`, { method: "DELETE" });
  if (shownModel && shownModel.id === m.id) {
    releaseWithin($("#model-detail"));
    $("#model-detail").replaceChildren();
    shownModel = null;
  }
  showStatus(`Deleted the model ${m.tag}.`);
  await refreshModels();
}

async function importModel() {
  const file = $("#im-file").files[0];
  const tag = $("#im-tag").value.trim();
  if (!file) throw new Error("Choose a model.pt or .zip file to import.");
  if (!tag) throw new Error("Enter a model tag for the imported model.");
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("tag", tag);
  const model = await api("api/v1/models/import", { method: "POST", form });
  $("#import-form").reset();
  showStatus(`Imported ${model.tag}.`);
  await refreshModels();
  await showModel(model.id);
}

// One model ------------------------------------------------------------------------------------

/** The card of a model: facts, metrics, thresholds, report link, download and example pictures. */
export function modelCard(model, { heading = `Model “${model.tag}”` } = {}) {
  const facts = [
    ["Model", modelName(model)],
    ["Backbone", model.backbone],
    ["Image size", sizeText(model.image_size)],
    ["Source", model.source === "imported" ? "imported" : "trained here"],
    ["Created", fmtDate(model.created_at)],
    ["Images", datasetCounts(model.dataset)],
  ].filter(([, v]) => v);

  const actions = h("div", { class: "actions" });
  actions.append(
    h("button", { type: "button", class: "primary", onclick: () => predictWith(model.tag) }, "Predict with this model"),
  );
  if (model.report_url) actions.append(reportLink(model.report_url));
  if (model.download_url) {
    const btn = h("button", { type: "button", class: "secondary" }, "Download");
    btn.addEventListener("click", guard(() => download(model.download_url, `${model.tag}.pt`), btn));
    actions.append(btn);
  }

  const card = h(
    "section",
    { class: "card model-card", "aria-label": heading },
    h("div", { class: "card-head row" }, h("h2", { tabindex: "-1" }, heading), actions),
    h("dl", { class: "facts" }, ...facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    h("div", { class: "two-col" }, metricsBlock(model), thresholdsBlock(model.thresholds, model.synthetic_recall)),
  );
  if (model.comparison) card.append(comparisonBlock(model.comparison, model.tag));
  const pictures = (model.pictures || []).map((p) => (typeof p === "string" ? { url: p } : p)).filter((p) => p && p.url);
  if (pictures.length) {
    const grid = h("div", { class: "pictures" });
    for (const p of pictures) {
      const title = p.title || p.name || pictureTitle(p.url);
      const img = h("img", { alt: title, loading: "lazy" });
      loadImage(img, p.url);
      const fig = h("figure", { class: "picture" }, img, h("figcaption", {}, title));
      img.addEventListener("click", () => fig.classList.toggle("zoomed"));
      grid.append(fig);
    }
    card.append(h("h3", {}, "Example pictures from the test images"), grid);
  }
  return card;
}

function countText(counts) {
  const parts = [];
  for (const [key, label] of [["good", "good"], ["bad", "defective"], ["mask", "masks"]]) {
    if (isNumber(counts[key])) parts.push(`${counts[key]} ${label}`);
  }
  return parts.join(", ");
}

/** "train 6 good · test 2 good, 3 defective" from the model's dataset facts (or flat counts). */
function datasetCounts(dataset) {
  if (!dataset || typeof dataset !== "object") return "";
  const counts = dataset.counts && typeof dataset.counts === "object" ? dataset.counts : dataset;
  const flat = countText(counts);
  if (flat) return flat;
  const parts = [];
  for (const [split, value] of Object.entries(counts)) {
    if (value && typeof value === "object") {
      const text = countText(value);
      if (text) parts.push(`${split} ${text}`);
    }
  }
  return parts.join(" · ");
}

/** A caption from a picture's URL: ".../images/bad/10.png" -> "defective, test image 10". */
function pictureTitle(url) {
  const parts = String(url).split("?")[0].split("/").map(decodeURIComponent);
  const name = (parts.pop() || "").replace(/\.[a-z0-9]+$/i, "");
  const folder = parts.pop() || "";
  const label = { bad: "defective", good: "good" }[folder] || (folder === "images" ? "" : folder);
  const what = /^\d+$/.test(name) ? `test image ${name}` : name.replace(/[_-]+/g, " ");
  return label ? `${label}, ${what}` : what;
}

function flatten(obj, prefix = "", out = []) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, v]);
  }
  return out;
}

const COUNT_ROWS = [["image_AUROC", "image AUROC"], ["image_F1", "image F1"], ["false_alarms", "false alarms"], ["missed_defects", "missed defects"]];

/** A metric with 4 decimals, a count (false alarms, missed defects) as it is. */
function value(v, key) {
  if (!isNumber(v)) return "n/a";
  return key === "false_alarms" || key === "missed_defects" ? String(v) : v.toFixed(4);
}

/** Metrics on the held-out images first (they did not set the threshold), then on every test image. */
function metricsBlock(model) {
  const rows = flatten(model.metrics);
  rows.sort((a, b) => rank(a[0]) - rank(b[0]));
  const block = h("div", { class: "block" }, h("h3", {}, "Metrics"));
  if (!rows.some(([, v]) => isNumber(v))) { // good images only: every metric undefined
    block.append(h("p", { class: "muted" }, "No metrics: the test images need both good and defective images."));
    return block;
  }
  const held = model.held_out;
  if (held) {
    block.append(
      h("p", { class: "metrics-caption" }, `On ${plural(held.images, "held-out image")} (${held.good} good, ${held.defective} defective) that did not set the threshold:`),
      h("table", { class: "table compact metrics", "aria-label": "Metrics on the held-out images" },
        h("tbody", {}, ...COUNT_ROWS.map(([k, label]) => h("tr", {}, h("th", { scope: "row" }, label), h("td", { class: "num" }, value(held[k], k)))))),
    );
    if (held.warning) block.append(h("p", { class: "warn-note" }, `Few images: ${held.warning}.`));
  }
  block.append(
    h("p", { class: held ? "metrics-caption muted" : "warn-note" }, held
      ? "On every test image (some set the threshold, so F1 is optimistic):"
      : "These images also set the threshold, so F1 is optimistic for new parts (AUROC does not depend on it). Train with held-out images (dataset.holdout, 0.3 by default here) for figures to trust."),
    h(
      "table",
      { class: "table compact metrics" },
      h("tbody", {}, ...rows.map(([k, v]) =>
        h("tr", {},
          h("th", { scope: "row" }, k.replace(/_/g, " "), METRIC_HELP[k] ? h("span", { class: "help" }, METRIC_HELP[k]) : null),
          h("td", { class: "num" }, value(v, k)),
        ))),
    ),
  );
  return block;
}

/** A retrained model against the one it replaces, on the same held-out images. */
function comparisonBlock(c, tag) {
  const block = h("section", { class: "block comparison", "aria-label": "Before and after" },
    h("h3", {}, `Before and after, on the same ${plural(c.images, "held-out image")}`));
  if (!c.images) {
    block.append(h("p", { class: "muted" }, `No held-out image is new to both models, so ${c.earlier} and ${tag} cannot be compared fairly.`));
    return block;
  }
  block.append(h("table", { class: "table compact metrics" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), h("th", { scope: "col", class: "num" }, `Before: ${c.earlier}`), h("th", { scope: "col", class: "num" }, `After: ${tag}`))),
    h("tbody", {}, ...COUNT_ROWS.map(([k, label]) => h("tr", {}, h("th", { scope: "row" }, label),
      h("td", { class: "num" }, value(c.before[k], k)), h("td", { class: "num" }, value(c.after[k], k)))))));
  block.append(h("p", { class: "muted small-text" }, `Images neither model was fitted or calibrated on (${c.before.good} good, ${c.before.defective} defective), each at the threshold its model decides with.${c.note ? ` Note: ${c.note}.` : ""}`));
  return block;
}

function rank(name) {
  const i = METRIC_ORDER.indexOf(name);
  return i < 0 ? METRIC_ORDER.length : i;
}

/** "Synthetic defects flagged: about 83 % of 90 (cut-paste patches 90 %, ...)", an estimate without real defects. */
function syntheticRow(found) {
  const kinds = Object.entries(found.by_kind || {}).map(([k, v]) => `${(found.kinds || {})[k] || k} ${Math.round(v * 100)} %`).join(", ");
  return ["Synthetic defects flagged", `about ${Math.round(found.flagged * 100)} % of ${found.defects}`,
    `An estimate without real defects: ${kinds}, pasted on ${found.images} held-out good images.`];
}

function thresholdsBlock(thresholds, synthetic) {
  const block = h("div", { class: "block" }, h("h3", {}, "Thresholds"));
  if (!thresholds || typeof thresholds !== "object") {
    block.append(h("p", { class: "muted" }, "Not available."));
    return block;
  }
  const rows = [];
  if (thresholds.method) rows.push(["Method", methodText(thresholds.method, thresholds.rule)]);
  if (thresholds.version) rows.push(["Version", `${thresholds.version}, saved on the Predict screen (training: 0.50)`]);
  for (const [key, label] of [["image", "Image (OK/NG)"], ["pixel", "Pixel (defect area)"]]) {
    const t = thresholds[key];
    if (t === undefined || t === null) continue;
    if (typeof t === "object") {
      const parts = [];
      if (isNumber(t.normalized)) parts.push(`${fmt(t.normalized, 2)} normalized`);
      if (isNumber(t.raw)) parts.push(`raw ${fmtRaw(t.raw)}`);
      rows.push([label, parts.join(", ") || "n/a", t.source ? String(t.source) : ""]);
    } else {
      rows.push([label, isNumber(t) ? fmtRaw(t) : String(t)]);
    }
  }
  const fa = thresholds.false_alarms;
  if (fa && typeof fa === "object") {
    const few = fa.good_images < 30 ? " Few images: this rate is uncertain; more good images narrow it." : "";
    rows.push([
      "Expected false alarms",
      `${percent(fa.expected_fpr)} of good parts`,
      `95% range ${percent(fa.expected_fpr_low)}–${percent(fa.expected_fpr_high)}, from ${fa.good_images} good images (${FALSE_ALARM_SOURCE[thresholds.rule] || FALSE_ALARM_SOURCE.fpr}).${few}`,
    ]);
  }
  if (synthetic && isNumber(synthetic.flagged)) rows.push(syntheticRow(synthetic));
  block.append(
    h("table", { class: "table compact" }, h("tbody", {}, ...rows.map(([k, v, note]) =>
      h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v, note ? h("span", { class: "help" }, note) : null))))),
  );
  return block;
}

/** How the expected false-alarm rate came about, by the rule that set the threshold. */
const FALSE_ALARM_SOURCE = {
  fpr: "no defective images set the threshold",
  balanced: "the threshold weighs good images against defect scores, at most threshold.max_fpr false alarms",
  "f1-bounded": "a few defective images moved the threshold within the good-image bounds",
};

/** "auto", or "auto (chose f1-bounded)" when the method resolved to another rule. */
function methodText(method, rule) {
  return rule && rule !== method ? `${method} (chose ${rule})` : String(method);
}

/** 0.0123 -> "1.2%", below 0.01 %: "<0.01%". */
function percent(value) {
  if (!isNumber(value)) return "n/a";
  const p = 100 * value;
  if (p < 0.01) return "<0.01%";
  return p < 10 ? `${Number(p.toPrecision(2))}%` : `${Math.round(p)}%`;
}

/** A link to the training report (with a token, the page's cookie carries it: see api.js). */
function reportLink(url) {
  return h("a", { class: "button secondary", href: resolve(url), target: "_blank", rel: "noopener" }, "Open report ↗");
}

/** "256 px", or "256×320 px" (height × width) for a non-square model input. */
function sizeText(size) {
  if (!size) return "";
  return Array.isArray(size) ? `${size.join("×")} px` : `${size} px`;
}
