// Train screen: the form, the live progress of a job (polled every second), cancel, and the result.
import { api, releaseWithin } from "./api.js";
import { $, h, guard, showError, showStatus, showTab, clearErrors, fmtDate } from "./ui.js";
import { state, on, emit, refreshModels } from "./state.js";
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
  comparison: "Comparing with the earlier model",
  done: "Done",
};

const SETTINGS_KEY = "hamacho.trainSettings"; // {model: {key: text}}: the form as the last job started with it
const WEIGHTS_KEY = "model.backbone_weights";
let weightFiles = null; // {items: [{path, name, bytes}], roots: [...]} from the server, once
let watching = null; // id of the job shown in the progress card
let pollTimer = 0;
let modelTagEdited = false;
let preferredTag = ""; // the tag open on the Dataset screen (or chosen here last): the form trains that one

export function initTrain() {
  const form = $("#train-form");
  on("options", fillOptions);
  on("tags", fillTags);
  on("current-tag", (tag) => {
    preferredTag = tag;
    fillTags(state.tags);
  });
  on("models", fillCompare);
  on("retrain", retrainFrom);
  $("#tr-model").addEventListener("change", () => {
    renderSettings();
    suggestModelTag();
  });
  $("#tr-tag").addEventListener("change", () => {
    preferredTag = $("#tr-tag").value; // the user's own choice, until the Dataset screen opens another tag
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
  api("api/v1/weights")
    .then((data) => {
      weightFiles = data;
      renderSettings();
    })
    .catch(() => {}); // an older server: the field stays free text
}

function remembered() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function remember(model, fields) {
  const all = remembered();
  all[model] = Object.fromEntries([...fields].map((f) => [f.name, f.value]));
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(all));
}

/** The backbone-weights field's choices: imagenet, none and the weight files in the server's allowed folders. */
function weightsNote(input, summary) {
  const list = h("datalist", { id: "tr-weights-list" },
    h("option", { value: "imagenet" }, "torchvision's download (needs a network once)"),
    h("option", { value: "none" }, "random weights (tests only)"),
    ...((weightFiles && weightFiles.items) || []).map((f) => h("option", { value: f.path }, f.name)));
  input.setAttribute("list", "tr-weights-list");
  if (!weightFiles) return [list, h("p", { class: "field-note" }, summary)];
  const files = weightFiles.items.length;
  const where = weightFiles.roots.join(", ");
  const text = files
    ? `${files} weight file${files === 1 ? "" : "s"} on the server (in ${where}): pick one from the list.`
    : `No weight files in the server's allowed folders (${where}). Without a network, copy torchvision's .pth file there and pick it here.`;
  return [list, h("p", { class: "field-note" }, summary), h("p", { class: "field-note", id: "tr-weights-files" }, text)];
}

export async function resumeJobs() {
  const jobs = await loadJobs();
  const active = jobs.find((j) => !TERMINAL.has(j.status));
  if (active) watchJob(active);
}

function fillOptions(options) {
  const model = $("#tr-model");
  const current = model.value;
  model.replaceChildren(...options.models.map((m) => h("option", { value: m.name, title: m.summary }, m.display_name)));
  if (options.models.some((m) => m.name === current)) model.value = current;
  const unavailable = options.training && !options.training.available;
  $("#tr-unavailable").hidden = !unavailable;
  $("#tr-unavailable").textContent = unavailable ? `Training is not available on this server: ${options.training.reason}` : "";
  $("#tr-start").disabled = Boolean(unavailable);
  renderSettings();
  suggestModelTag();
}

/** The chosen model's form settings (those with a label in /options), as label + field + note. Values the
 * user changed are kept when the model or the options change; the others show the model's defaults. */
function renderSettings() {
  const box = $("#tr-settings");
  const settings = (state.options.settings || {})[$("#tr-model").value] || [];
  const previous = new Map([...box.querySelectorAll("[name]")].map((el) => [el.name, el]));
  box.replaceChildren(
    ...settings
      .filter((s) => s.label)
      .flatMap((s) => {
        const id = `tr-${s.key.replace(/[._]/g, "-")}`;
        const input = s.choices
          ? h("select", { id, name: s.key }, ...s.choices.map((c) => h("option", { value: c }, c)))
          : h("input", { id, name: s.key, type: "text", autocomplete: "off", spellcheck: "false" });
        const old = previous.get(s.key);
        const last = (remembered()[$("#tr-model").value] || {})[s.key];
        if (old && old.dataset.touched) {
          input.value = old.value;
          input.dataset.touched = "1";
        } else if (last !== undefined && (!s.choices || s.choices.includes(last))) {
          input.value = last; // as the last job of this model started with it, in this browser
          if (last !== fieldText(s.default)) input.dataset.touched = "1";
        } else {
          input.value = fieldText(s.default);
        }
        input.addEventListener(s.choices ? "change" : "input", () => {
          input.dataset.touched = "1";
        });
        const notes = s.key === WEIGHTS_KEY ? weightsNote(input, s.summary) : [h("p", { class: "field-note" }, s.summary)];
        return [h("label", { for: id }, s.label), h("div", {}, input, ...notes)];
      }),
  );
}

function fieldText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** A form field's text as a parameter value: JSON where it parses (256, [256, 320], true), else the text
 * itself (the server parses and checks it, e.g. 256x320); empty: the model's default. */
function fieldValue(text) {
  const s = text.trim();
  if (!s) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
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
  // preferredTag stays: a tag opened on the Dataset screen before it has images (not listed yet) is chosen as
  // soon as its first upload lists it
  showCounts();
  suggestModelTag();
}

function fillCompare(models) {
  const select = $("#tr-compare");
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, "No comparison"), ...models.map((m) => h("option", { value: m.tag }, m.tag)));
  if (models.some((m) => m.tag === current)) select.value = current;
}

/** From the inspection log: the form set to train again from `tag`, compared with the model `compareWith`. */
function retrainFrom({ tag, model, compareWith }) {
  preferredTag = tag;
  fillTags(state.tags);
  if (model && [...$("#tr-model").options].some((o) => o.value === model)) {
    $("#tr-model").value = model;
    renderSettings();
  }
  fillCompare(state.models);
  $("#tr-compare").value = compareWith || "";
  if (compareWith) {
    const taken = new Set(state.models.map((m) => m.tag));
    let name = `${compareWith}-r2`;
    for (let i = 3; taken.has(name); i += 1) name = `${compareWith}-r${i}`;
    $("#tr-model-tag").value = name;
    modelTagEdited = true;
  }
  showTab("train");
  $("#tr-start").focus();
  showStatus(`Ready to retrain from “${tag}”${compareWith ? `, compared with ${compareWith}` : ""}: check the settings and start.`);
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
  const extra = parseExtra($("#tr-extra").value);
  const parameters = {};
  for (const field of $("#tr-settings").querySelectorAll("[name]")) {
    const value = fieldValue(field.value);
    if (value === undefined) continue;
    if (field.name in extra && field.dataset.touched && JSON.stringify(extra[field.name]) !== JSON.stringify(value)) {
      field.focus();
      throw new Error(`${field.name} is set twice: ${field.value.trim()} in the form and ${JSON.stringify(extra[field.name])} under More settings. Keep one.`);
    }
    parameters[field.name] = value;
  }
  Object.assign(parameters, extra); // a key under More settings wins over the form's default
  const compareWith = $("#tr-compare").value || null;
  const job = await api("api/v1/jobs", {
    method: "POST",
    json: { model_tag: modelTag, model: $("#tr-model").value, tag, parameters, compare_with: compareWith },
  });
  remember($("#tr-model").value, $("#tr-settings").querySelectorAll("[name]"));
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

/** "Attempt 2 of 3 · on worker gpu-box (pid 4242)": which run of the job this is, and the machine running it. */
function whereText(job) {
  const parts = [];
  if ((job.attempt || 0) > 1) parts.push(`Attempt ${job.attempt} of ${job.max_attempts}`);
  if (job.worker && job.status === "running") {
    const [host, pid] = String(job.worker).split(":");
    parts.push(`on worker ${host}${pid ? ` (pid ${pid})` : ""}`);
  }
  return parts.join(" · ");
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
  const where = whereText(job);
  $("#job-where").hidden = !where;
  $("#job-where").textContent = where;
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
  // a failed or cancelled job whose tag a newer job took: the same name twice, so the older one says so
  const newest = new Map();
  for (const j of jobs) newest.set(j.model_tag, Math.max(newest.get(j.model_tag) ?? -1, j.id));
  body.replaceChildren(
    ...jobs.map((j) =>
      h(
        "tr",
        { class: j.id === watching ? "selected" : "" },
        h("th", { scope: "row" }, j.model_tag,
          newest.get(j.model_tag) !== j.id ? h("span", { class: "muted small-text", title: "A newer job took this model tag" }, " (tried again)") : null),
        h("td", {}, j.model || ""),
        h("td", {}, h("span", { class: "status-pill", dataset: { status: j.status } }, j.status),
          (j.attempt || 0) > 1 ? h("span", { class: "muted small-text", title: `Attempt ${j.attempt} of ${j.max_attempts}` }, ` attempt ${j.attempt}`) : null),
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
