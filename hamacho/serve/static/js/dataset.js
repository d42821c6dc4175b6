// Dataset screen: a tag, three drop zones (good, defective, mask), thumbnails with counts and remove.
import { api, loadImage, releaseImage, releaseWithin } from "./api.js";
import { $, $$, h, setupDropzone, showError, showSkipped, showStatus, guard, confirmAction, plural, fmtBytes, showTab, onRoute, routeArg, setRouteArg } from "./ui.js";
import { state, on, emit, refreshTags } from "./state.js";

const PAGE = 60;
const UPLOAD_CHUNK = 16;
const TAG_KEY = "hamacho.tag";
const GROUP_NAMES = { good: "good", bad: "defective", mask: "mask" };

let currentTag = "";
const groups = {}; // group -> {section, list, count, more, items, total}

export function getCurrentTag() {
  return currentTag;
}

export function initDataset() {
  for (const section of $$("#panel-dataset .group")) {
    const group = section.dataset.group;
    const g = {
      section,
      zone: $(".dropzone", section),
      input: $(".file-input", section),
      list: $(".thumbs", section),
      count: $("[data-count]", section),
      more: $(".more", section),
      items: [],
      total: 0,
    };
    groups[group] = g;
    setupDropzone(g.zone, g.input, (files) => upload(group, files));
    g.more.addEventListener("click", guard(() => loadGroup(group, { append: true }), g.more));
  }

  $("#tag-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const tag = $("#ds-tag").value.trim();
    if (!tag) {
      showError("Enter a tag name, e.g. bottle-line1.");
      $("#ds-tag").focus();
      return;
    }
    guard(() => openTag(tag))();
  });
  $("#ds-delete-tag").addEventListener("click", guard(deleteTag, $("#ds-delete-tag")));
  $("#ds-to-train").addEventListener("click", () => showTab("train"));

  on("tags", renderTagList);
  onRoute((tab, tag) => {
    if (tab === "dataset" && tag && tag !== currentTag) {
      $("#ds-tag").value = tag;
      guard(() => openTag(tag))();
    }
  });
  renderGroups();
}

/** After sign-in: reopen the tag of the last visit (or the one open now). */
export async function restoreDataset() {
  const tag = currentTag || routeArg("dataset") || localStorage.getItem(TAG_KEY) || "";
  if (!tag) return;
  $("#ds-tag").value = tag;
  await openTag(tag);
}

function renderTagList(tags) {
  $("#tag-options").replaceChildren(...tags.map((t) => h("option", { value: t.tag })));
  const list = $("#tag-list");
  if (!tags.length) {
    list.replaceChildren(h("p", { class: "muted small-text" }, "No datasets yet: type a new tag above and drop images below."));
    return;
  }
  list.replaceChildren(
    h("span", { class: "muted small-text" }, "Existing:"),
    ...tags.map((t) =>
      h(
        "button",
        {
          type: "button",
          class: "chip",
          "aria-pressed": String(t.tag === currentTag),
          onclick: guard(() => {
            $("#ds-tag").value = t.tag;
            return openTag(t.tag);
          }),
        },
        h("strong", {}, t.tag || "(no tag)"),
        h("span", { class: "chip-counts" }, `${t.good ?? 0} good · ${t.bad ?? 0} defective · ${t.mask ?? 0} masks`),
      ),
    ),
  );
}

export async function openTag(tag) {
  currentTag = tag;
  localStorage.setItem(TAG_KEY, tag);
  setRouteArg("dataset", tag);
  $("#ds-delete-tag").disabled = false;
  renderTagList(state.tags);
  emit("current-tag", tag);
  await Promise.all(Object.keys(groups).map((g) => loadGroup(g)));
}

async function loadGroup(group, { append = false } = {}) {
  const g = groups[group];
  const tag = currentTag;
  const offset = append ? g.items.length : 0;
  const params = new URLSearchParams({ group, tag, offset: String(offset), limit: String(PAGE) });
  const data = await api(`api/v1/images?${params}`);
  if (tag !== currentTag) return; // another tag was opened meanwhile
  const items = (data && data.items) || [];
  g.items = append ? g.items.concat(items) : items;
  g.total = typeof data.total === "number" ? data.total : g.items.length;
  renderGroup(group, append ? items : null);
}

function renderGroups() {
  Object.keys(groups).forEach((g) => renderGroup(g));
}

/** Draw a group's thumbnails; `added` only appends those (Show more). */
function renderGroup(group, added = null) {
  const g = groups[group];
  g.count.textContent = String(g.total);
  g.count.setAttribute("aria-label", plural(g.total, `${GROUP_NAMES[group]} image`));
  if (!added) {
    releaseWithin(g.list);
    g.list.replaceChildren();
  }
  for (const item of added || g.items) g.list.append(thumb(group, item));
  g.more.hidden = g.items.length >= g.total;
  g.more.textContent = `Show more (${g.total - g.items.length} left)`;
  g.section.classList.toggle("has-items", g.total > 0);
}

function thumb(group, item) {
  const img = h("img", { alt: item.name, width: 96, height: 96, decoding: "async" });
  loadImage(img, item.thumbnail_url);
  let flag = null;
  if (group === "mask") {
    flag = item.image_id
      ? h("span", { class: "flag ok", title: "Linked to its image" }, "linked")
      : h("span", { class: "flag warn", title: "No image with the same name in this tag" }, "no image");
  } else if (item.mask_id) {
    flag = h("span", { class: "flag", title: "Has a mask" }, "mask");
  }
  const details = [item.width && item.height ? `${item.width}×${item.height}` : "", fmtBytes(item.bytes)].filter(Boolean).join(", ");
  const li = h(
    "li",
    { class: "thumb", dataset: { id: item.id } },
    h("div", { class: "thumb-img" }, img, flag),
    h("span", { class: "thumb-name", title: details ? `${item.name} (${details})` : item.name }, item.name),
    h("button", { type: "button", class: "thumb-remove", "aria-label": `Remove ${item.name}`, title: "Remove" }, "×"),
  );
  const remove = $(".thumb-remove", li);
  remove.addEventListener("click", guard(() => removeImage(group, item, li), remove));
  return li;
}

async function removeImage(group, item, li) {
  await api(`api/v1/images/${encodeURIComponent(item.id)}`, { method: "DELETE" });
  const g = groups[group];
  g.items = g.items.filter((x) => x.id !== item.id);
  g.total = Math.max(0, g.total - 1);
  // Focus moves to the next remove button (or the drop zone) so keyboard users keep their place.
  const next = li.nextElementSibling || li.previousElementSibling;
  $$("img", li).forEach(releaseImage);
  li.remove();
  renderGroup(group, []);
  (next ? $(".thumb-remove", next) : g.zone).focus();
  showStatus(`Removed ${item.name}.`);
  // A removed mask or image changes the links of the other groups.
  if (group === "mask" || item.mask_id) {
    await Promise.all(Object.keys(groups).filter((x) => x !== group).map((x) => loadGroup(x)));
  }
  await refreshTags();
}

async function upload(group, files) {
  let tag = $("#ds-tag").value.trim();
  if (!tag) tag = currentTag;
  if (!tag) {
    showError("Enter a tag name for this dataset first, e.g. bottle-line1.");
    $("#ds-tag").focus();
    return;
  }
  if (tag !== currentTag) await guard(() => openTag(tag))();
  const g = groups[group];
  const zone = g.zone;
  const label = zone.querySelector("span:not(.dz-icon)");
  const original = label.innerHTML;
  zone.classList.add("busy");
  zone.setAttribute("aria-busy", "true");
  let done = 0;
  const skipped = [];
  try {
    for (let i = 0; i < files.length; i += UPLOAD_CHUNK) {
      const chunk = files.slice(i, i + UPLOAD_CHUNK);
      label.textContent = `Uploading ${Math.min(i + chunk.length, files.length)} of ${files.length}…`;
      const form = new FormData();
      for (const f of chunk) form.append("files", f, f.name);
      form.append("group", group);
      form.append("tag", tag);
      try {
        const data = await api("api/v1/images", { method: "POST", form });
        done += ((data && data.items) || []).length;
        skipped.push(...((data && data.skipped) || []));
      } catch (err) {
        if (err.skipped && err.skipped.length) {
          skipped.push(...err.skipped); // every file of this chunk refused, each with its reason
          continue;
        }
        const what = chunk.length === 1 ? chunk[0].name : `${chunk.length} files`;
        showError(chunk.some((f) => err.message.includes(f.name)) ? err.message : `${what}: ${err.message}`);
        if (err.status === 0 || err.status === 401) break;
      }
    }
  } finally {
    zone.classList.remove("busy");
    zone.removeAttribute("aria-busy");
    label.innerHTML = original;
  }
  const noun = GROUP_NAMES[group] === "mask" ? "mask" : `${GROUP_NAMES[group]} image`;
  showSkipped(`${tag}: ${done} added, ${skipped.length} skipped`, skipped);
  if (done) showStatus(`Added ${plural(done, noun)} to ${tag}${skipped.length ? `; ${skipped.length} skipped (listed above)` : ""}.`);
  if (!done) return;
  await guard(async () => {
    await Promise.all(Object.keys(groups).map((x) => loadGroup(x)));
    await refreshTags();
  })();
}

async function deleteTag() {
  const tag = currentTag;
  if (!tag) return;
  const total = Object.values(groups).reduce((n, g) => n + g.total, 0);
  if (!confirmAction(`Delete all ${total} images and masks of “${tag}”? Trained models are kept.`)) return;
  const data = await api(`api/v1/images?tag=${encodeURIComponent(tag)}`, { method: "DELETE" });
  showStatus(`Deleted ${plural((data && data.deleted) || 0, "file")} of ${tag}.`);
  await Promise.all(Object.keys(groups).map((x) => loadGroup(x)));
  await refreshTags();
}
