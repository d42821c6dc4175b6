// History screen: the inspection log. Every saved prediction in a table with filters, sort, search, a
// large view, a reviewer's verdicts, CSV export, and the reviewed images added to a dataset for a retrain.
import { api, download, loadImage, releaseWithin } from "./api.js";
import { $, h, guard, showError, showSkipped, showStatus, onTabShown, fmt, fmtRaw, fmtDate, plural } from "./ui.js";
import { state, on, emit, refreshTags } from "./state.js";

const PAGE = 50;
const BY_KEY = "hamacho.reviewer"; // shared with the Predict screen
const VERDICTS = {
  correct: "Correct",
  false_alarm: "False alarm",
  missed_defect: "Missed defect",
};
const FILTERS = ["model", "decision", "verdict", "since", "until", "q", "sort"];
let loaded = [];
let total = 0;
let stale = true;
let searchTimer = 0;

export function initHistory() {
  on("models", fillModels);
  on("results-saved", () => {
    stale = true;
  });
  for (const name of FILTERS) {
    const field = $(`#hi-${name}`);
    field.addEventListener(name === "q" ? "input" : "change", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(guard(() => load()), name === "q" ? 300 : 0);
    });
  }
  $("#hi-filters").addEventListener("submit", (e) => e.preventDefault());
  $("#hi-by").value = localStorage.getItem(BY_KEY) || "";
  $("#hi-by").addEventListener("change", () => localStorage.setItem(BY_KEY, $("#hi-by").value.trim()));
  $("#hi-refresh").addEventListener("click", guard(() => load(), $("#hi-refresh")));
  $("#hi-more").addEventListener("click", guard(() => load({ append: true }), $("#hi-more")));
  $("#hi-export").addEventListener("click", guard(() => download(`api/v1/results.csv?${query()}`, "inspection-log.csv"), $("#hi-export")));
  $("#hi-to-dataset").addEventListener("click", openDatasetDialog);
  $("#hi-ds-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guard(addToDataset, $("#hi-ds-add"))();
  });
  $("#hi-ds-cancel").addEventListener("click", () => $("#hi-ds-dialog").close());
  $("#hi-ds-retrain").addEventListener("click", retrain);
  $("#hi-view-close").addEventListener("click", () => $("#hi-view").close());
  $("#hi-view").addEventListener("close", () => releaseWithin($("#hi-view-body")));
  onTabShown((tab) => {
    if (tab === "history" && stale) guard(() => load())();
  });
}

function fillModels(models) {
  const select = $("#hi-model");
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, "All models"), ...models.map((m) => h("option", { value: String(m.id) }, m.tag)));
  if (models.some((m) => String(m.id) === current)) select.value = current;
  stale = true;
}

/** The filters as a query string (the table's page and the CSV export alike). */
function query(extra = {}) {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = $(`#hi-${name}`).value.trim();
    if (value) params.set(name, value);
  }
  for (const [k, v] of Object.entries(extra)) params.set(k, String(v));
  return params.toString();
}

async function load({ append = false } = {}) {
  stale = false;
  const data = await api(`api/v1/results?${query({ offset: append ? loaded.length : 0, limit: PAGE })}`);
  const items = (data && data.items) || [];
  loaded = append ? loaded.concat(items) : items;
  total = typeof data.total === "number" ? data.total : loaded.length;
  const body = $("#hi-table tbody");
  if (!append) body.replaceChildren();
  body.append(...items.map(row));
  renderCounts();
}

function renderCounts() {
  const filtered = FILTERS.some((n) => n !== "sort" && $(`#hi-${n}`).value.trim());
  $("#hi-empty").hidden = loaded.length > 0;
  $("#hi-empty").textContent = filtered
    ? "No saved result matches these filters."
    : "No saved results. Predictions made with “Save results to history” appear here.";
  $("#hi-table").hidden = loaded.length === 0;
  $("#hi-count").textContent = total ? `${plural(total, "result")}${loaded.length < total ? `, ${loaded.length} shown` : ""}` : "";
  $("#hi-more").hidden = loaded.length >= total;
}

function modelTag(p) {
  const m = state.models.find((x) => x.id === p.model_id);
  return m ? m.tag : `model ${p.model_id}`;
}

/** The score cell: the normalized score, and the raw one that still ranks images past 1.000. */
function scoreCell(p) {
  if (p.error || typeof p.score !== "number") return h("td", { class: "num score muted" }, "—");
  return h("td", { class: "num score" }, h("strong", {}, fmt(p.score, 3)), h("span", { class: "raw", title: "Raw score: ranks images whose normalized scores are both 1.000" }, `raw ${fmtRaw(p.raw_score)}`));
}

function decisionBadge(p) {
  const decision = p.error ? "error" : p.decision;
  return h("span", { class: "badge", dataset: { decision }, "aria-label": decision === "NG" ? "NG: defective" : decision === "OK" ? "OK: good" : "not scored" }, decision === "error" ? "—" : decision);
}

/** The verdicts a reviewer can give a result of this decision. */
function choices(p) {
  if (p.decision === "NG") return ["correct", "false_alarm"];
  if (p.decision === "OK") return ["correct", "missed_defect"];
  return [];
}

function reviewCell(p, tr) {
  const cell = h("td", { class: "review" });
  const verdict = p.verdict ? h("span", { class: "verdict", dataset: { verdict: p.verdict }, title: [p.reviewed_by, fmtDate(p.reviewed_at), p.review_note].filter(Boolean).join(" · ") }, VERDICTS[p.verdict]) : h("span", { class: "muted" }, "Not reviewed");
  const buttons = choices(p)
    .filter((v) => v !== p.verdict)
    .map((v) => h("button", { type: "button", class: "secondary small", "aria-label": `Mark ${p.name} ${VERDICTS[v].toLowerCase()}`, onclick: (e) => guard(() => review(p, v, tr), e.currentTarget)() }, VERDICTS[v]));
  if (p.verdict) buttons.push(h("button", { type: "button", class: "link-button small", "aria-label": `Clear the review of ${p.name}`, onclick: (e) => guard(() => review(p, null, tr), e.currentTarget)() }, "Clear"));
  cell.append(verdict, h("div", { class: "review-buttons" }, ...buttons));
  return cell;
}

function row(p) {
  const id = p.result_id;
  const tr = h("tr", { dataset: { result: String(id) } });
  const view = h("button", { type: "button", class: "link-button", "aria-label": `View ${p.name} large` , onclick: () => openView(p) }, p.name || "image");
  const remove = h("button", { type: "button", class: "icon-button", "aria-label": `Delete the result of ${p.name}`, title: "Delete" }, "×");
  remove.addEventListener("click", guard(async () => {
    await api(`api/v1/results/${encodeURIComponent(id)}`, { method: "DELETE" });
    tr.remove();
    loaded = loaded.filter((x) => x.result_id !== id);
    total = Math.max(0, total - 1);
    renderCounts();
    showStatus(`Deleted the result of ${p.name}.`);
  }, remove));
  const version = typeof p.threshold_version === "number" ? ` · thr. v${p.threshold_version}` : "";
  tr.append(
    h("td", { class: "nowrap saved" }, fmtDate(p.created_at)),
    h("td", { class: "model" }, modelTag(p), h("span", { class: "muted small-text" }, version)),
    h("th", { scope: "row", class: "name" }, view, p.error ? h("span", { class: "muted small-text" }, ` ${p.error}`) : null),
    scoreCell(p),
    h("td", { class: "decision" }, decisionBadge(p)),
    reviewCell(p, tr),
    h("td", { class: "row-actions" }, remove),
  );
  return tr;
}

async function review(p, verdict, tr) {
  const by = $("#hi-by").value.trim();
  const updated = await api(`api/v1/results/${encodeURIComponent(p.result_id)}/review`, { method: "PUT", json: { verdict, by: by || null } });
  Object.assign(p, updated);
  const fresh = row(p);
  tr.replaceWith(fresh);
  showStatus(verdict ? `${p.name}: ${VERDICTS[verdict].toLowerCase()}.` : `${p.name}: review cleared.`);
  const next = fresh.querySelector(".review-buttons button");
  if (next) next.focus();
  if ($("#hi-view").open) openView(p);
}

/** The large view: image, heatmap and defect area side by side, with the facts and the review buttons. */
function openView(p) {
  const body = $("#hi-view-body");
  releaseWithin(body);
  const figure = (url, caption) => {
    const img = h("img", { alt: `${caption} of ${p.name}` });
    if (url) loadImage(img, url);
    return h("figure", {}, img, h("figcaption", {}, caption));
  };
  const facts = [
    ["Model", `${modelTag(p)}${typeof p.threshold_version === "number" ? `, thresholds v${p.threshold_version}` : ""}`],
    ["Saved", fmtDate(p.created_at)],
    ["Decision", p.decision || "not scored"],
    ["Score", typeof p.score === "number" ? `${fmt(p.score, 3)} (raw ${fmtRaw(p.raw_score)}; cut ${fmt(p.image_threshold && p.image_threshold.normalized, 2)})` : "—"],
    ["Review", p.verdict ? `${VERDICTS[p.verdict]}${p.reviewed_by ? ` by ${p.reviewed_by}` : ""}${p.reviewed_at ? `, ${fmtDate(p.reviewed_at)}` : ""}${p.review_note ? `: ${p.review_note}` : ""}` : "not reviewed"],
  ];
  const tr = $(`#hi-table tr[data-result="${p.result_id}"]`);
  body.replaceChildren(
    h("div", { class: "view-pics" }, figure(p.image_url, "Image"), figure(p.heatmap_url, "Heatmap"), figure(p.segmentation_url, "Defect area")),
    h("dl", { class: "facts" }, ...facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    h("div", { class: "review-buttons" }, ...choices(p).filter((v) => v !== p.verdict).map((v) =>
      h("button", { type: "button", class: "secondary", onclick: (e) => guard(() => review(p, v, tr || h("tr")), e.currentTarget)() }, `Mark ${VERDICTS[v].toLowerCase()}`))),
  );
  $("#hi-view-title").textContent = p.name || "image";
  if (!$("#hi-view").open) $("#hi-view").showModal();
}

// Reviewed images into a dataset, then a retrain compared with the model ---------------------------------

/** The model whose reviews are added: the filter's, else the one model of the reviewed results shown. */
function reviewedModel() {
  const chosen = $("#hi-model").value;
  const ids = chosen ? [chosen] : [...new Set(loaded.filter((p) => p.verdict).map((p) => String(p.model_id)))];
  return ids.length === 1 ? state.models.find((m) => String(m.id) === ids[0]) : undefined;
}

function openDatasetDialog() {
  const model = reviewedModel();
  const tags = state.tags.map((t) => t.tag).filter(Boolean);
  const select = $("#hi-ds-tag");
  select.replaceChildren(...tags.map((t) => h("option", { value: t }, t)));
  if (model && model.dataset_tag && tags.includes(model.dataset_tag)) select.value = model.dataset_tag;
  $("#hi-ds-model").textContent = model ? `Reviewed results of model “${model.tag}”.` : "Reviewed results of every model (choose a model in the filters to take only its results).";
  $("#hi-ds-outcome").textContent = "";
  $("#hi-ds-retrain").hidden = true;
  $("#hi-ds-add").disabled = !tags.length;
  if (!tags.length) $("#hi-ds-outcome").textContent = "There is no dataset yet: create one on the Dataset screen first.";
  $("#hi-ds-dialog").showModal();
}

async function addToDataset() {
  const model = $("#hi-model").value || null;
  const tag = $("#hi-ds-tag").value;
  const verdicts = ["false_alarm", "missed_defect", ...($("#hi-ds-correct").checked ? ["correct"] : [])];
  let data;
  try {
    data = await api("api/v1/results/to-dataset", { method: "POST", json: { tag, model, verdicts } });
  } catch (err) {
    $("#hi-ds-outcome").textContent = err.message;
    if (err.skipped && err.skipped.length) showSkipped(err.message, err.skipped);
    return;
  }
  const items = data.items || [];
  const good = items.filter((i) => i.group === "good").length;
  const skipped = data.skipped || [];
  const text = `Added to “${tag}”: ${plural(good, "good image")}, ${plural(items.length - good, "defective image")}${skipped.length ? `; ${skipped.length} skipped` : ""}.`;
  $("#hi-ds-outcome").textContent = text;
  if (skipped.length) showSkipped(text, skipped);
  showStatus(text);
  await refreshTags().catch(showError);
  $("#hi-ds-retrain").hidden = false;
  $("#hi-ds-retrain").focus();
}

function retrain() {
  const model = reviewedModel();
  $("#hi-ds-dialog").close();
  emit("retrain", { tag: $("#hi-ds-tag").value, model: model ? model.model : null, compareWith: model ? model.tag : "" });
}
