// One prediction as a card: OK/NG badge, score gauge, heatmap, defect area and the image.
// The decision and the defect area can be redrawn at other thresholds without the model.
import { fetchBlob, loadImage } from "./api.js";
import { h, $, fmt, fmtRaw, fmtDate, isNumber } from "./ui.js";

/** OK/NG from a normalized score and threshold: NG when score >= threshold. */
export function decide(score, threshold) {
  if (!isNumber(score)) return "";
  return score >= threshold ? "NG" : "OK";
}

function normalized(t, fallback = 0.5) {
  if (t && typeof t === "object" && isNumber(t.normalized)) return t.normalized;
  return isNumber(t) ? t : fallback;
}

/**
 * Build the card of prediction `p`.
 * Options: `threshold`/`pixelThreshold` (client-side cuts; default: the prediction's own),
 * `meta` (extra line parts), `actions` (elements in the header).
 */
export function predictionCard(p, { threshold, pixelThreshold, meta = [], actions = [] } = {}) {
  const card = h("article", { class: "pred", "aria-label": p.name || "image" });
  card.prediction = p;
  card.serverPixel = normalized(p.pixel_threshold);
  const title = h("h3", { title: p.name }, p.name || "image");

  if (p.error || !isNumber(p.score)) {
    card.dataset.decision = "error";
    card.append(
      h("header", { class: "pred-head" }, h("span", { class: "badge", dataset: { decision: "error" } }, "—"), h("div", { class: "pred-title" }, title), ...actions),
      h("p", { class: "pred-error" }, p.error || "This image could not be scored."),
    );
    return card;
  }

  const badge = h("span", { class: "badge" });
  const scoreText = h("strong", { class: "score" }, fmt(p.score, 3));
  const cutText = h("span", { class: "cut" });
  const gauge = h(
    "div",
    { class: "gauge", "aria-hidden": "true" },
    h("div", { class: "gauge-fill", style: `width:${Math.min(100, Math.max(0, p.score * 100))}%` }),
    h("div", { class: "gauge-mark" }),
  );
  card.append(
    h(
      "header",
      { class: "pred-head" },
      badge,
      h("div", { class: "pred-title" }, title, h("p", { class: "pred-score" }, "Score ", scoreText, " ", cutText)),
      ...actions,
    ),
    gauge,
  );

  const heat = h("img", { alt: `Heatmap of ${p.name}`, class: "pic", "data-kind": "heatmap" });
  const seg = h("img", { alt: `Defect area of ${p.name}`, class: "pic", "data-kind": "segmentation" });
  const canvas = h("canvas", { class: "pic", hidden: true, role: "img", "aria-label": `Defect area of ${p.name} at the chosen pixel threshold` });
  const orig = h("img", { alt: p.name, class: "pic", "data-kind": "image" });
  const segCaption = h("figcaption", {}, "Defect area");
  const pics = h("div", { class: "pred-pics" });
  if (p.heatmap_url) {
    loadImage(heat, p.heatmap_url);
    pics.append(h("figure", {}, heat, h("figcaption", {}, "Heatmap")));
  }
  if (p.segmentation_url || p.map_url) {
    if (p.segmentation_url) loadImage(seg, p.segmentation_url);
    pics.append(h("figure", { class: "seg" }, seg, canvas, segCaption));
  }
  if (p.image_url) {
    loadImage(orig, p.image_url);
    pics.append(h("figure", {}, orig, h("figcaption", {}, "Image")));
  }
  card.append(pics);
  card.seg = { img: seg, canvas, caption: segCaption };

  const parts = [`raw score ${fmtRaw(p.raw_score)}`];
  if (p.width && p.height) parts.push(`${p.width}×${p.height}`);
  parts.push(...meta.filter(Boolean));
  if (p.created_at && !meta.length) parts.push(fmtDate(p.created_at));
  card.append(h("p", { class: "pred-meta" }, parts.join(" · ")));

  card.parts = { badge, cutText, gauge };
  redecide(card, threshold ?? normalized(p.image_threshold));
  if (isNumber(pixelThreshold) && Math.abs(pixelThreshold - card.serverPixel) > 1e-9) resegment(card, pixelThreshold);
  return card;
}

/** Re-decide OK/NG at `threshold` (normalized 0..1). */
export function redecide(card, threshold) {
  const p = card.prediction;
  if (!card.parts) return card.dataset.decision;
  const decision = decide(p.score, threshold);
  card.dataset.decision = decision;
  const { badge, cutText, gauge } = card.parts;
  badge.textContent = decision;
  badge.dataset.decision = decision;
  badge.setAttribute("aria-label", decision === "NG" ? "NG: defective" : "OK: good");
  cutText.textContent = `${decision === "NG" ? "≥" : "<"} threshold ${fmt(threshold, 2)}`;
  $(".gauge-mark", gauge).style.left = `${threshold * 100}%`;
  return decision;
}

// Defect area at another pixel threshold, from the normalized map (8-bit PNG, value = round(255 * map)).

async function bitmap(url) {
  const blob = await fetchBlob(url);
  return createImageBitmap(blob);
}

async function segmentationData(card) {
  if (card.segData) return card.segData;
  const p = card.prediction;
  card.segData = (async () => {
    const [map, image] = await Promise.all([bitmap(p.map_url), p.image_url ? bitmap(p.image_url) : null]);
    const w = map.width;
    const hgt = map.height;
    const c = document.createElement("canvas");
    c.width = w;
    c.height = hgt;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(map, 0, 0);
    const mapData = ctx.getImageData(0, 0, w, hgt).data;
    const values = new Uint8Array(w * hgt);
    for (let i = 0; i < values.length; i += 1) values[i] = mapData[i * 4];
    ctx.clearRect(0, 0, w, hgt);
    if (image) ctx.drawImage(image, 0, 0, w, hgt);
    const base = ctx.getImageData(0, 0, w, hgt);
    return { w, h: hgt, values, base };
  })();
  return card.segData;
}

/** Show the defect area at `pixelThreshold`; the server's own picture when it is the threshold used. */
export async function resegment(card, pixelThreshold) {
  const p = card.prediction;
  if (!card.seg || !p.map_url) return;
  const { img, canvas, caption } = card.seg;
  card.wantedPixel = pixelThreshold;
  if (Math.abs(pixelThreshold - card.serverPixel) < 1e-9 && p.segmentation_url) {
    img.hidden = false;
    canvas.hidden = true;
    caption.textContent = "Defect area";
    return;
  }
  let data;
  try {
    data = await segmentationData(card);
  } catch (err) {
    card.segData = null;
    caption.textContent = `Defect area (cannot redraw: ${err.message})`;
    return;
  }
  if (card.wantedPixel !== pixelThreshold) return; // the slider moved on
  const { w, h: hgt, values, base } = data;
  const cut = pixelThreshold * 255;
  const out = new ImageData(new Uint8ClampedArray(base.data), w, hgt);
  const px = out.data;
  const inside = (i) => values[i] >= cut - 1e-6;
  for (let y = 0; y < hgt; y += 1) {
    for (let x = 0; x < w; x += 1) {
      const i = y * w + x;
      if (!inside(i)) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === hgt - 1 ||
        !inside(i - 1) || !inside(i + 1) || !inside(i - w) || !inside(i + w);
      const o = i * 4;
      if (edge) {
        px[o] = 255; px[o + 1] = 40; px[o + 2] = 40;
      } else {
        px[o] = Math.round(px[o] * 0.55 + 255 * 0.45);
        px[o + 1] = Math.round(px[o + 1] * 0.55);
        px[o + 2] = Math.round(px[o + 2] * 0.55);
      }
    }
  }
  canvas.width = w;
  canvas.height = hgt;
  canvas.getContext("2d").putImageData(out, 0, 0);
  img.hidden = true;
  canvas.hidden = false;
  caption.textContent = `Defect area at ${fmt(pixelThreshold, 2)}`;
}
