// What several screens share: form options, the dataset tags and the models, with change events.
import { api, listAll } from "./api.js";

export const state = {
  // models: [{name, display_name, summary}]; settings: {model: [{key, label, default, choices, summary, ...}]}
  options: { models: [], backbones: [], settings: {}, defaults: {}, training: { available: true, reason: null } },
  tags: [],
  models: [],
};

const events = new EventTarget();

export function on(name, fn) {
  events.addEventListener(name, (e) => fn(e.detail));
}

export function emit(name, detail) {
  events.dispatchEvent(new CustomEvent(name, { detail }));
}

export async function refreshOptions() {
  const data = await api("api/v1/options");
  state.options = { ...state.options, ...(data || {}) };
  emit("options", state.options);
}

export async function refreshTags() {
  const data = await api("api/v1/tags");
  state.tags = (data && data.items) || [];
  emit("tags", state.tags);
}

export async function refreshModels() {
  state.models = await listAll("api/v1/models");
  emit("models", state.models);
}

/** Ask another screen to open a model for prediction. */
export function predictWith(ref) {
  emit("predict-with", ref);
}
