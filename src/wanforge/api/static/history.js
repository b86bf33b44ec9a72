// The key's recent predictions: status, a player or the LoRA files, the inputs, and re-run,
// cancel and delete.

import { api, TERMINAL } from "./api.js";
import { basename, clear, h } from "./dom.js";
import { statusBadge } from "./run.js";

const PAGE_SIZE = 20;

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export class History {
  constructor(container, { onRerun, onOpen, onError, onChange, onGenerateWithLora }) {
    this.onGenerateWithLora = onGenerateWithLora;
    this.container = container;
    this.onRerun = onRerun;
    this.onOpen = onOpen;
    this.onError = onError;
    this.onChange = onChange;
    this.items = [];
  }

  async refresh() {
    try {
      const page = await api.list({ page: 1, page_size: PAGE_SIZE });
      this.items = page.items;
      this.render(page.total);
      this.onChange?.(this.items);
    } catch (error) {
      this.onError(error);
    }
  }

  render(total) {
    if (this.items.length === 0) {
      clear(this.container, h("p", { class: "muted" }, "Nothing yet: your predictions show here."));
      return;
    }
    clear(
      this.container,
      h("p", { class: "muted" }, `${this.items.length} most recent of ${total}`),
      h("ol", { class: "history-list" }, this.items.map((item) => this.row(item))),
    );
  }

  row(item) {
    const media = [];
    if (item.status === "completed") {
      for (const url of item.outputs) {
        if (url.endsWith(".mp4")) {
          media.push(h("video", { class: "thumb", src: `${url}#t=0.5`, preload: "metadata", muted: true, controls: true, playsinline: true, "aria-label": `video of ${item.id}` }));
        } else {
          media.push(h("a", { href: url, download: basename(url), class: "file" }, basename(url)));
        }
      }
    }
    const inputs = h("details", { class: "inputs" }, h("summary", {}, "Inputs"));
    inputs.addEventListener("toggle", async () => {
      if (!inputs.open || inputs.dataset.loaded) return;
      try {
        const detail = await api.detail(item.id);
        inputs.dataset.loaded = "1";
        inputs.append(h("pre", { class: "code", tabindex: "0" }, JSON.stringify(detail.input, shorten, 2)));
        if (detail.logs?.length) inputs.append(h("pre", { class: "code logs", tabindex: "0" }, detail.logs.join("\n")));
      } catch (error) {
        this.onError(error);
      }
    });
    const buttons = [
      h("button", { type: "button", class: "small", onclick: () => this.onOpen(item) }, "Open"),
      h("button", { type: "button", class: "small", onclick: () => this.rerun(item) }, "Re-run"),
    ];
    const { high_noise_lora: high, low_noise_lora: low } = item.result || {};
    if (item.status === "completed" && high && low) {
      buttons.push(h("button", { type: "button", class: "small", onclick: () => this.onGenerateWithLora(high, low) }, "Generate with this LoRA"));
    }
    if (!TERMINAL.has(item.status)) {
      buttons.push(h("button", { type: "button", class: "small", onclick: () => this.cancel(item) }, "Cancel"));
    }
    const del = h("button", { type: "button", class: "small danger" }, "Delete");
    del.addEventListener("click", () => {
      if (del.dataset.armed) return this.remove(item);
      del.dataset.armed = "1";
      del.textContent = "Confirm delete";
      setTimeout(() => {
        delete del.dataset.armed;
        del.textContent = "Delete";
      }, 4000);
    });
    buttons.push(del);
    return h(
      "li",
      { class: "history-item", dataset: { id: item.id, status: item.status, model: item.model } },
      h("div", { class: "row" }, statusBadge(item.status), h("strong", {}, item.model), h("span", { class: "muted" }, when(item.created_at))),
      item.prompt ? h("p", { class: "prompt" }, item.prompt) : null,
      item.error ? h("p", { class: "error" }, item.error) : null,
      media.length ? h("div", { class: "media-row" }, media) : null,
      inputs,
      h("div", { class: "row actions" }, buttons),
    );
  }

  async rerun(item) {
    try {
      const detail = await api.detail(item.id);
      this.onRerun(item.model, detail.input || {});
    } catch (error) {
      this.onError(error);
    }
  }

  async cancel(item) {
    try {
      await api.cancel(item.id);
      await this.refresh();
    } catch (error) {
      this.onError(error);
    }
  }

  async remove(item) {
    try {
      await api.remove([item.id]);
      await this.refresh();
    } catch (error) {
      this.onError(error);
    }
  }
}

// data: URIs are long: show their start only
function shorten(key, value) {
  return typeof value === "string" && value.startsWith("data:") && value.length > 80 ? `${value.slice(0, 60)}… (${value.length} characters)` : value;
}
