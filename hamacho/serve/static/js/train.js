// Train screen: the form, the live progress of a job (polled every second), cancel, and the result.
import { api, releaseWithin } from "./api.js";
import { $, h, guard, showError, showStatus, clearErrors, fmtDate } from "./ui.js";
import { state, on, emit, modelDefault, refreshModels } from "./state.js";
import { modelCard } from "./models.js";

const POLL_MS = 1000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const PHASES = {
  queued: "Waiting for a free worker",
  "": "Starting",
  starting: "Starting",
  loading: "Loading the backbone and the images",
  "feature extraction": "Reading the good images",
  fit: "Learning what good looks like",
  calibration: "Setting the thresholds",
  test: "Scoring the test images",
  report: "Writing the report",
  saving: "Saving the model",
  done: "Done",
};

let watching = null; // id of the job shown in the progress card
let pollTimer = 0;
let modelTagEdited = false;
let preferredTag = "";

export function initTrain() {
  const form = $("#train-form");
  on("options", fillOptions);
  on("tags", fillTags);
  on("current-tag", (tag) => {
    preferredTag = tag;
    fillTags(state.tags);
  });
  for (const id of ["#tr-backbone", "#tr-size", "#tr-weights"]) {
    $(id).addEventListener(id === "#tr-backbone" ? "change" : "input", () => {
      $(id).dataset.touched = "1";
    });
  }
  $("#tr-model").addEventListener("change", () => {
    applyDefaults();
    suggestModelTag();
  });
  $("#tr-tag").addEventListener("change", () => {
    showCounts();
    suggestModelTag();
  });
  $("#tr-model-tag").addEventListener("input", () => {
    modelTagEdited = $("#tr-model-tag").value.trim() !== "";
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    guard(startJob, $("#tr-start"))();
  });
  $("#job-cancel").addEventListener("click", guard(cancelJob, $("#job-cancel")));
  $("#jobs-refresh").addEventListener("click", guard(loadJobs, $("#jobs-refresh")));
  fillOptions(state.options);
}

export async function resumeJobs() {
  const jobs = await loadJobs();
  const active = jobs.find((j) => !TERMINAL.has(j.status));
  if (active) watchJob(active);
}

function fillOptions(options) {
  const model = $("#tr-model");
  const current = model.value;
  model.replaceChildren(...options.models.map((m) => h("option", { value: m }, m === "padim" ? "PaDiM" : m === "patchcore" ? "PatchCore" : m)));
  if (options.models.includes(current)) model.value = current;
  const backbone = $("#tr-backbone");
  const chosen = backbone.value;
  backbone.replaceChildren(...options.backbones.map((b) => h("option", { value: b }, b)));
  if (backbone.dataset.touched && options.backbones.includes(chosen)) backbone.value = chosen;
  applyDefaults();
  suggestModelTag();
}

/** The chosen model's defaults, in the fields the user has not changed (options may arrive late). */
function applyDefaults() {
  const model = $("#tr-model").value;
  const untouched = (id) => !$(id).dataset.touched;
  const backbone = modelDefault(model, "model.backbone");
  if (backbone && untouched("#tr-backbone")) {
    if (![...$("#tr-backbone").options].some((o) => o.value === backbone)) $("#tr-backbone").append(h("option", { value: backbone }, backbone));
    $("#tr-backbone").value = backbone;
  }
  if (untouched("#tr-size")) $("#tr-size").value = modelDefault(model, "dataset.image_size") ?? 256;
  if (untouched("#tr-weights")) $("#tr-weights").value = modelDefault(model, "model.backbone_weights") ?? "imagenet";
}

function fillTags(tags) {
  const select = $("#tr-tag");
  const current = preferredTag || select.value;
  const names = tags.map((t) => t.tag).filter((t) => t);
  if (!names.length) {
    select.replaceChildren(h("option", { value: "" }, "No datasets yet: add images on the Dataset screen"));
  } else {
    select.replaceChildren(...names.map((t) => h("option", { value: t }, t)));
    if (names.includes(current)) select.value = current;
  }
  preferredTag = "";
  showCounts();
  suggestModelTag();
}

function showCounts() {
  const t = state.tags.find((x) => x.tag === $("#tr-tag").value);
  $("#tr-tag-counts").textContent = t ? `${t.good ?? 0} good · ${t.bad ?? 0} defective · ${t.mask ?? 0} masks` : "";
}

function suggestModelTag() {
  if (modelTagEdited) return;
  const tag = $("#tr-tag").value;
  const model = $("#tr-model").value;
  if (!tag || !model) return;
  const taken = new Set(state.models.map((m) => m.tag));
  let name = `${tag}-${model}`;
  for (let i = 2; taken.has(name); i += 1) name = `${tag}-${model}-${i}`;
  $("#tr-model-tag").value = name;
}

function parseExtra(text) {
  const parameters = {};
  text.split(/\r?\n/).forEach((line, i) => {
    const s = line.trim();
    if (!s || s.startsWith("#")) return;
    const eq = s.indexOf("=");
    if (eq <= 0) throw new Error(`More settings, line ${i + 1}: write key=value, e.g. model.num_features=50`);
    const key = s.slice(0, eq).trim();
    const raw = s.slice(eq + 1).trim();
    let value = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // a plain string
    }
    parameters[key] = value;
  });
  return parameters;
}

async function startJob() {
  const tag = $("#tr-tag").value;
  const modelTag = $("#tr-model-tag").value.trim();
  if (!tag) throw new Error("Choose a dataset tag. Add images on the Dataset screen first.");
  if (!modelTag) {
    $("#tr-model-tag").focus();
    throw new Error("Enter a model tag: a unique name for the new model.");
  }
  const size = Number($("#tr-size").value);
  if (!Number.isInteger(size) || size < 32 || size % 32) {
    $("#tr-size").focus();
    throw new Error("Image size must be a whole number, a multiple of 32 (e.g. 256).");
  }
  const parameters = {
    ...parseExtra($("#tr-extra").value),
    "model.backbone": $("#tr-backbone").value,
    "dataset.image_size": size,
  };
  const weights = $("#tr-weights").value.trim();
  if (weights) parameters["model.backbone_weights"] = weights;
  const job = await api("api/v1/jobs", {
    method: "POST",
    json: { model_tag: modelTag, model: $("#tr-model").value, tag, parameters },
  });
  clearErrors();
  showStatus(`Training ${job.model_tag || modelTag} started.`);
  modelTagEdited = false;
  releaseWithin($("#train-result"));
  $("#train-result").replaceChildren();
  watchJob(job);
  loadJobs().catch(() => {});
}

function watchJob(job) {
  watching = job.id;
  clearTimeout(pollTimer);
  renderJob(job);
  const card = $("#job-card");
  card.hidden = false;
  if (!TERMINAL.has(job.status)) schedulePoll(job.id);
  else if (job.status === "succeeded") showResult(job).catch(showError);
}

function schedulePoll(id) {
  pollTimer = setTimeout(async () => {
    if (watching !== id) return;
    let job;
    try {
      job = await api(`api/v1/jobs/${encodeURIComponent(id)}`);
    } catch (err) {
      showError(`Training progress: ${err.message}`);
      if (err.status === 404) return;
      schedulePoll(id); // a network blip: keep trying
      return;
    }
    if (watching !== id) return;
    renderJob(job);
    if (TERMINAL.has(job.status)) finished(job);
    else schedulePoll(id);
  }, POLL_MS);
}

function percentOf(job) {
  let p = Number(job.percent);
  if (!Number.isFinite(p)) p = 0;
  if (job.status === "succeeded") p = 100;
  return Math.max(0, Math.min(100, p));
}

function phaseText(job) {
  if (job.status === "queued") return PHASES.queued;
  if (job.status === "succeeded") return "Finished";
  if (job.status === "failed") return "Failed";
  if (job.status === "cancelled") return "Cancelled";
  if (job.cancel_requested) return "Stopping…";
  const phase = String(job.phase || "").toLowerCase();
  return PHASES[phase] || phase.charAt(0).toUpperCase() + phase.slice(1);
}

function renderJob(job) {
  const pct = percentOf(job);
  const status = job.status || "queued";
  $("#job-status").textContent = status;
  $("#job-status").dataset.status = status;
  $("#job-name").textContent = `${job.model_tag} · ${job.model || ""}${job.images ? ` · ${job.images.good ?? 0} good, ${job.images.bad ?? 0} defective, ${job.images.mask ?? 0} masks` : ""}`;
  const bar = $("#job-progress");
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  bar.setAttribute("aria-valuetext", `${Math.round(pct)} percent, ${phaseText(job)}`);
  bar.dataset.status = status;
  $(".progress-bar", bar).style.width = `${pct}%`;
  $("#job-phase").textContent = phaseText(job);
  $("#job-percent").textContent = `${Math.round(pct)} %`;
  const err = $("#job-error");
  err.hidden = !job.error;
  err.textContent = job.error || "";
  const cancel = $("#job-cancel");
  cancel.hidden = TERMINAL.has(status);
  cancel.disabled = Boolean(job.cancel_requested);
}

async function finished(job) {
  loadJobs().catch(() => {});
  if (job.status === "succeeded") {
    showStatus(`Training ${job.model_tag} finished.`);
    await refreshModels().catch(showError);
    await showResult(job).catch(showError);
  } else if (job.status === "failed") {
    showError(`Training ${job.model_tag} failed: ${job.error || "no reason given"}`);
  } else {
    showStatus(`Training ${job.model_tag} was cancelled.`);
  }
  emit("job-finished", job);
}

async function showResult(job) {
  if (!job.model_id && !job.model_tag) return;
  const model = await api(`api/v1/models/${encodeURIComponent(job.model_id ?? job.model_tag)}`);
  const box = $("#train-result");
  releaseWithin(box);
  box.replaceChildren(modelCard(model, { heading: `Trained: ${model.tag}` }));
}

async function cancelJob() {
  if (!watching) return;
  const job = await api(`api/v1/jobs/${encodeURIComponent(watching)}/cancel`, { method: "POST" });
  renderJob(job);
  showStatus("Cancelling the training…");
}

async function loadJobs() {
  const data = await api("api/v1/jobs?offset=0&limit=8");
  const jobs = (data && data.items) || [];
  const body = $("#jobs-table tbody");
  if (!jobs.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No training jobs yet.")));
    return jobs;
  }
  body.replaceChildren(
    ...jobs.map((j) =>
      h(
        "tr",
        { class: j.id === watching ? "selected" : "" },
        h("th", { scope: "row" }, j.model_tag),
        h("td", {}, j.model || ""),
        h("td", {}, h("span", { class: "status-pill", dataset: { status: j.status } }, j.status)),
        h("td", {}, fmtDate(j.started_at || j.created_at)),
        h("td", { class: "row-actions" }, h("button", { type: "button", class: "secondary small", "aria-label": `Show job ${j.model_tag}`, onclick: () => showJob(j) }, "Show")),
      ),
    ),
  );
  return jobs;
}

function showJob(job) {
  releaseWithin($("#train-result"));
  $("#train-result").replaceChildren();
  watchJob(job);
  $("#job-card").scrollIntoView({ behavior: "smooth", block: "nearest" });
}
