// The trainer's own views: the dataset report, the loss curve, and the two LoRA files.

import { basename, fmtSeconds, h } from "./dom.js";

const EXPERT_COLOURS = { high_noise: "#d9480f", low_noise: "#1971c2" };

export function datasetReport(report) {
  if (!report) return null;
  const skipped = report.clips_skipped || [];
  const captions = Object.entries(report.captions || {})
    .map(([k, v]) => `${v} ${k.replace("_", " ")}`)
    .join(", ");
  const buckets = Object.entries(report.buckets || {})
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
  return h(
    "details",
    { class: "dataset", open: true },
    h("summary", {}, "Dataset report"),
    h(
      "dl",
      {},
      h("dt", {}, "clips"),
      h("dd", { "data-k": "clips" }, `${report.clips_used} used of ${report.clips_found} found`),
      h("dt", {}, "training windows"),
      h("dd", {}, String(report.windows_total)),
      h("dt", {}, "duration"),
      h("dd", {}, fmtSeconds(report.total_duration_s)),
      h("dt", {}, "captions"),
      h("dd", {}, captions || "none"),
      buckets ? [h("dt", {}, "buckets"), h("dd", {}, buckets)] : null,
      report.scene_cuts ? [h("dt", {}, "scene cuts"), h("dd", {}, String(report.scene_cuts))] : null,
    ),
    skipped.length
      ? h("ul", { class: "skipped" }, skipped.map((s) => h("li", {}, `${s.name}: ${s.reason}`)))
      : null,
    (report.ignored_files || []).length ? h("p", { class: "muted" }, `ignored: ${report.ignored_files.join(", ")}`) : null,
  );
}

// Loss samples per expert, as the page saw them while polling: {expert: [[step, loss], ...]}.
export class LossLog {
  constructor() {
    this.points = {};
  }

  add(progress) {
    if (!progress || typeof progress.loss !== "number" || !progress.expert) return;
    const list = (this.points[progress.expert] ||= []);
    const last = list[list.length - 1];
    if (!last || last[0] !== progress.step) list.push([progress.step, progress.loss]);
  }

  get size() {
    return Object.values(this.points).reduce((n, list) => n + list.length, 0);
  }
}

// A small loss curve on a canvas: one line per expert, steps on x, loss on y.
export function lossCurve(log, totalSteps) {
  const canvas = h("canvas", { class: "loss", width: 320, height: 120, role: "img" });
  const all = Object.values(log.points).flat();
  canvas.setAttribute(
    "aria-label",
    all.length ? `loss curve: ${Object.entries(log.points).map(([e, l]) => `${e} last ${l[l.length - 1][1].toFixed(4)}`).join(", ")}` : "loss curve: no samples yet",
  );
  const ctx = canvas.getContext("2d");
  if (!ctx || all.length === 0) return canvas;
  const losses = all.map((p) => p[1]);
  const lo = Math.min(...losses);
  const hi = Math.max(...losses);
  const span = hi - lo || 1;
  const maxStep = Math.max(totalSteps || 1, ...all.map((p) => p[0]));
  const pad = 6;
  const x = (step) => pad + ((canvas.width - 2 * pad) * step) / maxStep;
  const y = (loss) => canvas.height - pad - ((canvas.height - 2 * pad) * (loss - lo)) / span;
  ctx.strokeStyle = "#adb5bd";
  ctx.strokeRect(0.5, 0.5, canvas.width - 1, canvas.height - 1);
  for (const [expert, list] of Object.entries(log.points)) {
    ctx.strokeStyle = EXPERT_COLOURS[expert] || "#495057";
    ctx.lineWidth = 2;
    ctx.beginPath();
    list.forEach(([step, loss], i) => (i ? ctx.lineTo(x(step), y(loss)) : ctx.moveTo(x(step), y(loss))));
    ctx.stroke();
    if (list.length === 1) ctx.fillRect(x(list[0][0]) - 2, y(list[0][1]) - 2, 4, 4);
  }
  return canvas;
}

export function lossLegend() {
  return h(
    "p",
    { class: "legend" },
    Object.entries(EXPERT_COLOURS).map(([expert, colour]) => h("span", { class: `swatch ${expert}`, title: colour }, expert.replace("_", "-"))),
  );
}

// The two LoRA files of a completed training, and the button that takes them to the LoRA form.
export function loraLinks(prediction, onGenerate) {
  const high = prediction.result?.high_noise_lora;
  const low = prediction.result?.low_noise_lora;
  if (!high || !low) return null;
  return h(
    "div",
    { class: "lora-links" },
    h(
      "ul",
      {},
      h("li", {}, "high-noise expert: ", h("a", { href: high, download: basename(high), class: "lora-link", dataset: { expert: "high_noise" } }, basename(high))),
      h("li", {}, "low-noise expert: ", h("a", { href: low, download: basename(low), class: "lora-link", dataset: { expert: "low_noise" } }, basename(low))),
    ),
    h("button", { type: "button", class: "primary generate-with-lora", onclick: () => onGenerate(high, low) }, "Generate with this LoRA"),
  );
}
