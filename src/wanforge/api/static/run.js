// One submission as it runs: live status, progress bar, then the video (or the two LoRA files),
// the seed and the timings, or the error. Updated in place on each poll: the video element is
// made once, when the prediction completes, so it keeps playing.

import { TERMINAL } from "./api.js";
import { codePanel } from "./code.js";
import { basename, clear, fmtMs, fmtSeconds, h } from "./dom.js";
import { datasetReport, LossLog, lossCurve, lossLegend, loraLinks } from "./trainer.js";

const STATUS_LABEL = { created: "queued", processing: "processing", completed: "completed", failed: "failed", cancelled: "cancelled" };

export function statusBadge(status) {
  return h("span", { class: `status s-${status}` }, STATUS_LABEL[status] || status);
}

function progressText(p) {
  const parts = [];
  if (p.stage) parts.push(p.stage);
  if (typeof p.total === "number" && p.total > 1) parts.push(`step ${p.step} of ${p.total}`);
  if (p.expert) parts.push(`${String(p.expert).replace("_", "-")} expert`);
  if (typeof p.loss === "number") parts.push(`loss ${p.loss.toFixed(4)}`);
  if (typeof p.eta_s === "number") parts.push(`ETA ${fmtSeconds(p.eta_s)}`);
  if (typeof p.elapsed_s === "number") parts.push(`${fmtSeconds(p.elapsed_s)} elapsed`);
  return parts.join(" · ");
}

function timingsText(prediction) {
  const t = prediction.timings || {};
  return Object.entries(t)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k.replace("_", " ")} ${fmtMs(v)}`)
    .join(" · ");
}

export class RunCard {
  constructor({ modelId, kind, input, onCancel, onGenerateWithLora }) {
    this.modelId = modelId;
    this.kind = kind;
    this.input = input;
    this.onCancel = onCancel;
    this.onGenerateWithLora = onGenerateWithLora;
    this.lossLog = new LossLog();
    this.seen = [];
    this.done = false;
    this.status = h("p", { class: "run-status", role: "status" }, statusBadge("created"), " submitting…");
    this.bar = h("progress", { class: "steps", max: 100, value: 0, "aria-label": "progress" });
    this.detail = h("p", { class: "progress-text muted" });
    this.dataset = h("div", { class: "dataset-slot" });
    this.curve = h("div", { class: "curve-slot" });
    this.output = h("div", { class: "output" });
    this.cancelButton = h("button", { type: "button", class: "small cancel", hidden: true }, "Cancel");
    this.cancelButton.addEventListener("click", () => this.id && this.onCancel(this.id));
    this.element = h(
      "article",
      { class: "run-card", dataset: { model: modelId } },
      h("header", {}, h("strong", {}, modelId), h("span", { class: "run-id muted" })),
      this.status,
      h("div", { class: "row" }, this.bar, this.cancelButton),
      this.detail,
      this.dataset,
      this.curve,
      this.output,
      codePanel(modelId, input),
    );
  }

  submitted(prediction) {
    this.id = prediction.id;
    this.element.dataset.id = prediction.id;
    this.element.querySelector(".run-id").textContent = prediction.id;
    this.update(prediction);
  }

  failedToSubmit(error) {
    this.done = true;
    this.element.dataset.status = "rejected";
    clear(this.status, statusBadge("failed"), " not submitted");
    clear(this.output, h("p", { class: "error", role: "alert" }, error.message));
    this.bar.hidden = true;
  }

  update(prediction) {
    if (this.done) return;
    const p = prediction.progress || {};
    this.element.dataset.status = prediction.status;
    const label = prediction.status === "created" && typeof prediction.queue_position === "number"
      ? (prediction.queue_position === 0 ? " (next in the queue)" : ` (${prediction.queue_position} ahead in the queue)`)
      : "";
    clear(this.status, statusBadge(prediction.status), label, prediction.status === "processing" && p.stage ? ` · ${p.stage}` : "");
    if (typeof p.percent === "number") {
      this.bar.value = prediction.status === "completed" ? 100 : p.percent;
      if (this.seen[this.seen.length - 1] !== p.percent) this.seen.push(p.percent);
      this.bar.dataset.seen = this.seen.join(",");
    }
    if (prediction.status === "completed") this.bar.value = 100;
    this.detail.textContent = prediction.status === "processing" ? progressText(p) : "";
    this.cancelButton.hidden = TERMINAL.has(prediction.status);
    if (this.kind === "train") this.updateTraining(prediction, p);
    if (TERMINAL.has(prediction.status)) this.finish(prediction);
  }

  updateTraining(prediction, p) {
    if (prediction.result?.dataset && !this.dataset.firstChild) this.dataset.append(datasetReport(prediction.result.dataset));
    const before = this.lossLog.size;
    this.lossLog.add(p);
    if (this.lossLog.size !== before) clear(this.curve, lossCurve(this.lossLog, p.total), lossLegend());
  }

  finish(prediction) {
    this.done = true;
    if (prediction.status === "failed") {
      const code = prediction.error_code ? ` (code ${prediction.error_code})` : "";
      clear(this.output, h("p", { class: "error", role: "alert" }, `${prediction.error || "the task failed"}${code}`));
      return;
    }
    if (prediction.status === "cancelled") {
      clear(this.output, h("p", { class: "muted" }, prediction.error || "cancelled"));
      return;
    }
    const facts = h("dl", { class: "facts" });
    const fact = (k, v) => v !== undefined && v !== null && v !== "" && facts.append(h("dt", {}, k), h("dd", { dataset: { k } }, String(v)));
    if (this.kind === "train") {
      clear(this.output, loraLinks(prediction, this.onGenerateWithLora), facts);
      fact("training time", fmtSeconds(prediction.result?.training_s));
      fact("timings", timingsText(prediction));
      return;
    }
    const url = prediction.outputs[0];
    const video = h("video", { class: "player", controls: true, playsinline: true, muted: true, loop: true, preload: "auto", src: url });
    video.muted = true;
    const flagged = (prediction.has_nsfw_contents || [])[0] === true;
    clear(
      this.output,
      video,
      h("p", {}, h("a", { href: url, download: basename(url), class: "download" }, "Download video"), flagged ? h("span", { class: "flag" }, " · flagged by the content checker") : null),
      facts,
    );
    fact("seed", prediction.seed);
    const r = prediction.result || {};
    if (r.width) fact("size", `${r.width}×${r.height}, ${r.frames} frames at ${r.fps} fps`);
    fact("timings", timingsText(prediction));
    if (prediction.expanded_prompt) fact("expanded prompt", prediction.expanded_prompt);
  }
}
