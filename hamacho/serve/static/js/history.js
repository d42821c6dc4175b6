// History screen: saved prediction results, newest first, by model, with delete.
import { api, releaseWithin } from "./api.js";
import { $, h, guard, showStatus, onTabShown, fmtDate } from "./ui.js";
import { state, on } from "./state.js";
import { predictionCard } from "./prediction.js";

const PAGE = 12;
let loaded = [];
let total = 0;
let stale = true;

export function initHistory() {
  on("models", fillModels);
  on("results-saved", () => {
    stale = true;
  });
  $("#hi-model").addEventListener("change", guard(() => load()));
  $("#hi-refresh").addEventListener("click", guard(() => load(), $("#hi-refresh")));
  $("#hi-more").addEventListener("click", guard(() => load({ append: true }), $("#hi-more")));
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

async function load({ append = false } = {}) {
  stale = false;
  const model = $("#hi-model").value;
  const params = new URLSearchParams({ offset: String(append ? loaded.length : 0), limit: String(PAGE) });
  if (model) params.set("model", model);
  const data = await api(`api/v1/results?${params}`);
  const items = (data && data.items) || [];
  loaded = append ? loaded.concat(items) : items;
  total = typeof data.total === "number" ? data.total : loaded.length + (items.length === PAGE ? 1 : 0);
  const box = $("#hi-results");
  if (!append) {
    releaseWithin(box);
    box.replaceChildren();
  }
  box.append(...items.map(card));
  $("#hi-empty").hidden = loaded.length > 0;
  $("#hi-more").hidden = loaded.length >= total;
}

function modelTag(p) {
  if (p.model_tag) return p.model_tag;
  const m = state.models.find((x) => x.id === p.model_id);
  return m ? m.tag : "";
}

function card(p) {
  const id = p.result_id ?? p.id;
  const remove = h("button", { type: "button", class: "icon-button", "aria-label": `Delete the result of ${p.name}`, title: "Delete" }, "×");
  const el = predictionCard(p, { meta: [modelTag(p), fmtDate(p.created_at)], actions: [remove] });
  remove.addEventListener("click", guard(async () => {
    await api(`api/v1/results/${encodeURIComponent(id)}`, { method: "DELETE" });
    const next = el.nextElementSibling || el.previousElementSibling;
    releaseWithin(el);
    el.remove();
    loaded = loaded.filter((x) => (x.result_id ?? x.id) !== id);
    total = Math.max(0, total - 1);
    $("#hi-empty").hidden = loaded.length > 0;
    showStatus(`Deleted the result of ${p.name}.`);
    const focusable = next && next.querySelector("button");
    if (focusable) focusable.focus();
    else $("#hi-refresh").focus();
  }, remove));
  return el;
}
