// What several screens share: form options, the dataset tags and the models, with change events.
import { api, listAll } from "./api.js";

export const state = {
  options: { models: ["padim", "patchcore"], backbones: ["resnet18"], defaults: {} },
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
  state.options = {
    models: (data && data.models) || state.options.models,
    backbones: (data && data.backbones) || state.options.backbones,
    defaults: (data && data.defaults) || {},
  };
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

/** A default of a model's form: `defaults[model]["model.backbone"]` or nested `.model.backbone`. */
export function modelDefault(model, key) {
  const d = (state.options.defaults || {})[model] || {};
  if (key in d) return d[key];
  let node = d;
  for (const part of key.split(".")) {
    if (node && typeof node === "object" && part in node) node = node[part];
    else return undefined;
  }
  return node;
}

/** Ask another screen to open a model for prediction. */
export function predictWith(ref) {
  emit("predict-with", ref);
}
