// A model's form, generated from its request schema in /openapi.json: each property's widget
// follows its type, its default, bounds (minimum/maximum, maxLength, maxItems), enum or const,
// whether it is required, and its description. Nothing about a model is written here twice.

import { upload } from "./api.js";
import { basename, h, uid } from "./dom.js";

// Fields the page never shows: it watches every prediction itself.
const HIDDEN = new Set(["enable_sync_mode"]);
// Media fields take a file from the user (uploaded first) or a URL. The WaveSpeed wire names are
// fixed, so the kind of file each takes is known by its name.
const MEDIA = { image: "image", last_image: "image", data: "zip" };
const LONG_TEXT = 300; // strings allowed longer than this get a textarea

export function resolveRef(schema, components) {
  if (schema && schema.$ref) return components[schema.$ref.split("/").pop()];
  return schema;
}

// {schema, nullable} of a property: `X | None` is anyOf [X, null] in the schema.
function unwrapNullable(prop, components) {
  if (Array.isArray(prop.anyOf)) {
    const options = prop.anyOf.filter((s) => s.type !== "null");
    if (options.length === 1) {
      return { schema: { ...resolveRef(options[0], components), ...omit(prop, ["anyOf"]) }, nullable: true };
    }
  }
  return { schema: resolveRef(prop, components), nullable: false };
}

function omit(obj, keys) {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));
}

function label(name, schema, required, forId) {
  return h(
    "label",
    { for: forId },
    schema.title || name,
    required ? h("span", { class: "req", title: "required", "aria-hidden": "true" }, " *") : null,
    required ? h("span", { class: "sr-only" }, " (required)") : null,
  );
}

function bounds(schema) {
  const parts = [];
  if (schema.minimum !== undefined && schema.maximum !== undefined) parts.push(`${schema.minimum} to ${schema.maximum}`);
  else if (schema.minimum !== undefined) parts.push(`at least ${schema.minimum}`);
  else if (schema.maximum !== undefined) parts.push(`at most ${schema.maximum}`);
  if (schema.maxLength !== undefined) parts.push(`at most ${schema.maxLength} characters`);
  if (schema.default !== undefined && schema.default !== null && typeof schema.default !== "object") {
    parts.push(`default ${JSON.stringify(schema.default)}`);
  }
  return parts.join("; ");
}

function describe(schema, id) {
  const text = [schema.description, bounds(schema)].filter(Boolean).join(" · ");
  return text ? h("small", { id, class: "desc" }, text) : null;
}

// One field of the form: {name, element, read(), write(value)}.
function field(name, prop, required, ctx) {
  const { schema, nullable } = unwrapNullable(prop, ctx.components);
  const id = uid(`f-${name}`);
  const descId = `${id}-desc`;
  const common = { id, name, "aria-describedby": descId };
  const wrap = (control, extraClass = "") =>
    h("div", { class: `field ${extraClass}`.trim(), dataset: { field: name } }, label(name, schema, required, id), control, describe(schema, descId));

  const enumValues = schema.enum || (schema.const !== undefined ? [schema.const] : null);
  if (MEDIA[name]) return mediaField(name, schema, required, nullable, ctx, { id, descId, wrap });
  if (schema.type === "array" && resolveRef(schema.items, ctx.components)?.properties?.path) {
    return loraField(name, schema, ctx, descId);
  }
  if (enumValues) {
    const select = h("select", common, enumValues.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
    if (schema.default !== undefined) select.value = JSON.stringify(schema.default);
    return {
      name,
      element: wrap(select),
      read: () => JSON.parse(select.value),
      write: (v) => (select.value = JSON.stringify(v)),
    };
  }
  if (schema.type === "boolean") {
    const box = h("input", { ...common, type: "checkbox", checked: Boolean(schema.default) });
    if (name === "enable_prompt_expansion" && ctx.features && !ctx.features.prompt_expansion?.configured) {
      box.disabled = true;
      box.title = "prompt expansion is not configured on this server";
      return { name, element: wrap(h("span", { class: "row" }, box, h("small", { class: "muted" }, "not configured on this server")), "check"), read: () => false, write: () => {} };
    }
    return { name, element: wrap(box, "check"), read: () => box.checked, write: (v) => (box.checked = Boolean(v)) };
  }
  if (schema.type === "integer" || schema.type === "number") {
    // "any": a step would make values off its grid (a learning rate of 0.0002) invalid
    const step = schema.type === "integer" ? "1" : "any";
    const input = h("input", {
      ...common,
      type: "number",
      inputmode: schema.type === "integer" ? "numeric" : "decimal",
      min: schema.minimum,
      max: schema.maximum,
      step,
      required,
    });
    if (schema.default !== undefined) input.value = String(schema.default);
    const read = () => (input.value === "" ? undefined : Number(input.value));
    if (name === "seed" && schema.minimum === -1) return seedField(name, schema, input, wrap, read);
    return { name, element: wrap(input), read, write: (v) => (input.value = v ?? "") };
  }
  // strings
  const long = name.includes("prompt") || (schema.maxLength || 0) > LONG_TEXT;
  const input = long
    ? h("textarea", { ...common, rows: name === "prompt" ? 3 : 2, maxLength: schema.maxLength, required })
    : h("input", { ...common, type: "text", maxLength: schema.maxLength, required });
  if (typeof schema.default === "string") input.value = schema.default;
  return {
    name,
    element: wrap(input),
    read: () => (input.value === "" && (nullable || !required) && schema.default === undefined ? undefined : input.value),
    write: (v) => (input.value = v ?? ""),
  };
}

function seedField(name, schema, input, wrap, read) {
  const random = h("input", { type: "checkbox", id: uid("seed-random"), checked: schema.default === -1 });
  const sync = () => {
    input.disabled = random.checked;
    if (random.checked) input.value = "-1";
    else if (input.value === "-1") input.value = String(Math.floor(Math.random() * 2147483647));
  };
  random.addEventListener("change", sync);
  const toggle = h("label", { class: "inline", for: random.id }, random, " random");
  const row = h("div", { class: "row" }, input, toggle);
  sync();
  return {
    name,
    element: wrap(row),
    read: () => (random.checked ? -1 : read()),
    write: (v) => {
      random.checked = v === -1 || v === undefined || v === null;
      input.value = String(v ?? -1);
      sync();
    },
  };
}

// An image or a ZIP: drop it, paste it (images), or pick it; it is uploaded at once and its URL
// fills the field (which also takes a URL typed in).
function mediaField(name, schema, required, nullable, ctx, { id, descId, wrap }) {
  const kind = MEDIA[name];
  const url = h("input", { id, name, type: "text", required, "aria-describedby": descId, placeholder: "or paste a URL" });
  const picker = h("input", { type: "file", accept: kind === "image" ? "image/*" : ".zip,application/zip", hidden: true, tabindex: "-1" });
  const preview = h("img", { class: "preview", alt: "", hidden: true });
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": `${name} upload progress` });
  const note = h("span", { class: "drop-note" });
  const zone = h(
    "div",
    { class: "drop", role: "button", tabindex: "0", dataset: { media: kind }, "aria-label": `Choose a file for ${schema.title || name}` },
    h("span", {}, kind === "image" ? "Drop an image, paste one, or press to pick" : "Drop a ZIP of clips, or press to pick"),
    preview,
    note,
    bar,
  );
  const take = async (file) => {
    if (!file) return;
    if (kind === "image") {
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }
    note.textContent = `${file.name || "pasted image"} · uploading`;
    bar.hidden = false;
    bar.value = 0;
    zone.classList.add("busy");
    try {
      url.value = await upload(file, (f) => (bar.value = f));
      note.textContent = `${file.name || "pasted image"} · uploaded`;
      url.dispatchEvent(new Event("change"));
    } catch (error) {
      note.textContent = `upload failed: ${error.message}`;
      ctx.onError?.(error);
    } finally {
      zone.classList.remove("busy");
    }
  };
  zone.addEventListener("click", () => picker.click());
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      picker.click();
    }
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });
  picker.addEventListener("change", () => take(picker.files[0]));
  const showUrl = () => {
    if (kind === "image" && url.value && !url.value.startsWith("data:")) {
      preview.src = url.value;
      preview.hidden = false;
    }
  };
  url.addEventListener("change", showUrl);
  return {
    name,
    media: kind,
    take,
    element: wrap(h("div", { class: "media" }, zone, picker, url), "media-field"),
    read: () => (url.value.trim() === "" ? (nullable ? undefined : "") : url.value.trim()),
    write: (v) => {
      url.value = v ?? "";
      note.textContent = v ? basename(v) : "";
      preview.hidden = true;
      showUrl();
    },
  };
}

// A list of LoRAs: rows of {path, scale}, at most `maxItems`, with a picker of the key's own
// trained LoRAs (the file of the matching expert).
function loraField(name, schema, ctx, descId) {
  const entry = resolveRef(schema.items, ctx.components);
  const pathSchema = entry.properties.path;
  const scaleSchema = entry.properties.scale;
  const max = schema.maxItems ?? 3;
  const expert = name.startsWith("high_noise") ? "high" : name.startsWith("low_noise") ? "low" : "both";
  const rows = h("div", { class: "lora-rows" });
  const addButton = h("button", { type: "button", class: "small" }, "Add LoRA");
  const pick = h("select", { "aria-label": `Add one of your trained LoRAs to ${name}`, class: "small" });
  const title = schema.title || name;

  const refresh = () => {
    const count = rows.children.length;
    addButton.disabled = count >= max;
    pick.disabled = count >= max || pick.options.length <= 1;
  };
  const addRow = (path = "", scale = scaleSchema.default ?? 1) => {
    if (rows.children.length >= max) return;
    const n = rows.children.length;
    const pathInput = h("input", {
      type: "text",
      class: "lora-path",
      "aria-label": `${title} ${n + 1}: path`,
      placeholder: "URL, /files/… or a name in the LoRA directory",
      maxLength: pathSchema.maxLength,
      required: true,
      list: ctx.loraListId,
    });
    pathInput.value = path;
    const scaleInput = h("input", {
      type: "number",
      class: "lora-scale",
      "aria-label": `${title} ${n + 1}: scale`,
      min: scaleSchema.minimum,
      max: scaleSchema.maximum,
      step: "any",
      required: true,
    });
    scaleInput.value = String(scale);
    const remove = h("button", { type: "button", class: "small", "aria-label": `Remove ${title} ${n + 1}` }, "Remove");
    const row = h("div", { class: "lora-row" }, pathInput, scaleInput, remove);
    remove.addEventListener("click", () => {
      row.remove();
      refresh();
    });
    rows.append(row);
    refresh();
  };
  addButton.addEventListener("click", () => addRow());
  const fillPicker = () => {
    pick.replaceChildren(h("option", { value: "" }, "Add a trained LoRA…"));
    for (const lora of ctx.myLoras || []) {
      const files = expert === "high" ? [lora.high] : expert === "low" ? [lora.low] : [lora.high, lora.low];
      for (const file of files) pick.append(h("option", { value: file }, `${lora.label}: ${basename(file)}`));
    }
    refresh();
  };
  pick.addEventListener("change", () => {
    if (pick.value) addRow(pick.value);
    pick.value = "";
  });
  fillPicker();
  const legend = h("legend", {}, title);
  const element = h(
    "fieldset",
    { class: "field loras", dataset: { field: name }, "aria-describedby": descId },
    legend,
    h("small", { id: descId, class: "desc" }, [entry.properties.path.description, `scale ${scaleSchema.minimum} to ${scaleSchema.maximum}`, schema.description].filter(Boolean).join(" · ")),
    rows,
    h("div", { class: "row" }, addButton, pick),
  );
  return {
    name,
    element,
    fillPicker,
    read: () =>
      [...rows.children].map((row) => ({
        path: row.querySelector(".lora-path").value.trim(),
        scale: Number(row.querySelector(".lora-scale").value),
      })),
    write: (list) => {
      rows.replaceChildren();
      for (const item of list || []) addRow(item.path, item.scale);
      refresh();
    },
  };
}

// The whole form of one model: {element, fields, read(), write(input)}.
export function buildForm(schema, ctx) {
  const required = new Set(schema.required || []);
  const fields = Object.entries(schema.properties || {})
    .filter(([name]) => !HIDDEN.has(name))
    .map(([name, prop]) => field(name, prop, required.has(name), ctx));
  const element = h("div", { class: "fields" }, fields.map((f) => f.element));
  return {
    element,
    fields,
    read() {
      const body = {};
      for (const f of fields) {
        const value = f.read();
        if (value !== undefined) body[f.name] = value;
      }
      return body;
    },
    write(input) {
      for (const f of fields) if (input && input[f.name] !== undefined) f.write(input[f.name]);
    },
    refreshLoras() {
      for (const f of fields) f.fillPicker?.();
    },
    mediaField(kind) {
      return fields.find((f) => f.media === kind);
    },
  };
}
