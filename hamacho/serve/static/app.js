// Hamacho web UI: plain ES modules, no build step. Screens live in static/js/.
import { api, getToken, setToken, onUnauthorized } from "./js/api.js";
import { $, showError, setupTabs, guard } from "./js/ui.js";
import { refreshOptions, refreshTags, refreshModels } from "./js/state.js";
import { initDataset, restoreDataset } from "./js/dataset.js";
import { initTrain, resumeJobs } from "./js/train.js";
import { initModels } from "./js/models.js";
import { initPredict } from "./js/predict.js";
import { initHistory } from "./js/history.js";

let authRequired = false;
let asking = null;

/** Show the token dialog until a token the server accepts is entered. */
function askToken(message = "") {
  if (asking) return asking;
  const dialog = $("#auth-dialog");
  const input = $("#auth-token");
  $("#auth-error").textContent = message;
  asking = new Promise((resolve) => {
    const form = $("#auth-form");
    const onSubmit = async (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) {
        $("#auth-error").textContent = "Enter the token.";
        return;
      }
      setToken(value);
      try {
        await api("api/v1/version");
      } catch (err) {
        setToken("");
        $("#auth-error").textContent = err.status === 401 ? "This token was not accepted. Check it and try again." : err.message;
        input.select();
        return;
      }
      form.removeEventListener("submit", onSubmit);
      dialog.close();
      input.value = "";
      asking = null;
      $("#sign-out").hidden = false;
      resolve();
    };
    form.addEventListener("submit", onSubmit);
    // Escape must not leave the page without a token.
    dialog.addEventListener("cancel", (e) => e.preventDefault());
  });
  dialog.showModal();
  input.focus();
  return asking;
}

async function loadAll() {
  const results = await Promise.allSettled([refreshOptions(), refreshTags(), refreshModels()]);
  for (const r of results) if (r.status === "rejected") showError(r.reason);
  await Promise.all([guard(restoreDataset)(), guard(resumeJobs)()]);
}

async function showVersion() {
  try {
    const v = await api("api/v1/version");
    $("#server-info").textContent = v && v.hamacho ? `hamacho ${v.hamacho}` : "";
  } catch {
    // not essential
  }
}

async function start() {
  setupTabs();
  initDataset();
  initTrain();
  initModels();
  initPredict();
  initHistory();

  onUnauthorized(() => {
    authRequired = true;
    if (asking) return; // the dialog is open already; it reloads the data once signed in
    setToken("");
    $("#sign-out").hidden = true;
    askToken("The server needs a valid token. Enter it to continue.").then(loadAll);
  });
  $("#sign-out").addEventListener("click", () => {
    setToken("");
    $("#sign-out").hidden = true;
    askToken();
  });

  try {
    const auth = await api("api/v1/auth");
    authRequired = Boolean(auth && auth.required);
  } catch (err) {
    showError(err);
  }
  if (authRequired && !getToken()) await askToken();
  $("#sign-out").hidden = !(authRequired && getToken());
  document.body.dataset.ready = "true";
  await Promise.all([loadAll(), showVersion()]);
}

start();
