// The playground: key, model picker and its generated form, the current run, and history.

import { api, clearKey, getKey, setKey, watch } from "./api.js";
import { clear, h } from "./dom.js";
import { buildForm, resolveRef } from "./form.js";
import { History } from "./history.js";
import { RunCard } from "./run.js";

const TRAINER_KIND = "train";
const LAST_MODEL = "wanforge.model";
const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  components: {},
  features: null,
  form: null,
  model: null,
  myLoras: [],
  stopWatch: null,
  lastGenerate: null,
};

function showError(error) {
  const box = $("errors");
  box.hidden = false;
  clear(box, h("p", {}, error.message || String(error)), h("button", { type: "button", class: "small", onclick: () => (box.hidden = true) }, "Dismiss"));
}

// --- the key ---------------------------------------------------------------------------------

function showKeyState() {
  const key = getKey();
  $("key-state").textContent = key ? `key saved (…${key.slice(-4)})` : "no key saved";
  $("key-clear").disabled = !key;
  document.body.classList.toggle("has-key", Boolean(key));
  $("key-input").value = "";
  $("key-input").placeholder = key ? "saved: enter another to replace it" : "wf_…";
}

async function onKeySubmit(event) {
  event.preventDefault();
  const value = $("key-input").value.trim();
  if (!value) return;
  setKey(value);
  showKeyState();
  await start();
}

function onKeyClear() {
  clearKey();
  showKeyState();
  state.stopWatch?.();
  clear($("model-form"));
  clear($("run"));
  clear($("history"));
  $("model-select").replaceChildren();
  $("workspace").hidden = true;
}

// --- models and forms --------------------------------------------------------------------------

function groupOf(model) {
  if (model.kind === TRAINER_KIND) return "Train a LoRA";
  return model.id.includes("lora") ? "Image to video with LoRAs" : "Image to video";
}

function fillModelSelect() {
  const select = $("model-select");
  const groups = new Map();
  for (const model of state.models) {
    const name = groupOf(model);
    if (!groups.has(name)) groups.set(name, h("optgroup", { label: name }));
    groups.get(name).append(h("option", { value: model.id }, model.id));
  }
  select.replaceChildren(...groups.values());
}

function selectModel(modelId, input) {
  const model = state.models.find((m) => m.id === modelId) || state.models[0];
  state.model = model;
  localStorage.setItem(LAST_MODEL, model.id);
  $("model-select").value = model.id;
  $("model-summary").textContent = model.summary;
  const schema = resolveRef({ $ref: model.input_schema }, state.components);
  state.form = buildForm(schema, { components: state.components, features: state.features, myLoras: state.myLoras, loraListId: "my-loras", onError: showError });
  clear($("model-form"), state.form.element, h("div", { class: "row submit-row" }, h("button", { type: "submit", class: "primary", id: "run-button" }, model.kind === TRAINER_KIND ? "Train" : "Generate")));
  if (input) state.form.write(input);
}

async function loadMyLoras() {
  const trainer = state.models.find((m) => m.kind === TRAINER_KIND);
  if (!trainer) return;
  try {
    const page = await api.list({ model: trainer.id, status: "completed", page_size: 50 });
    state.myLoras = page.items
      .filter((p) => p.result?.high_noise_lora && p.result?.low_noise_lora)
      .map((p) => ({ label: `trained ${new Date(p.created_at).toLocaleString()}`, high: p.result.high_noise_lora, low: p.result.low_noise_lora }));
  } catch (error) {
    showError(error);
    return;
  }
  clear($("my-loras"), state.myLoras.flatMap((l) => [h("option", { value: l.high }), h("option", { value: l.low })]));
  state.form?.refreshLoras();
}

// --- running ---------------------------------------------------------------------------------

async function submit(modelId, input) {
  const model = state.models.find((m) => m.id === modelId);
  state.stopWatch?.();
  if (model.kind !== TRAINER_KIND) state.lastGenerate = input;
  const card = new RunCard({ modelId, kind: model.kind, input, onCancel: cancel, onGenerateWithLora: generateWithLora });
  clear($("run"), card.element);
  card.element.scrollIntoView({ block: "nearest" });
  let prediction;
  try {
    prediction = await api.submit(modelId, input);
  } catch (error) {
    card.failedToSubmit(error);
    return;
  }
  card.submitted(prediction);
  history.refresh();
  follow(card, prediction.id);
}

function follow(card, id) {
  state.stopWatch = watch(id, (prediction, error) => {
    if (error) return showError(error);
    const wasDone = card.done;
    card.update(prediction);
    if (!wasDone && card.done) {
      history.refresh();
      if (card.kind === TRAINER_KIND) loadMyLoras();
    }
  });
}

async function cancel(id) {
  try {
    await api.cancel(id);
  } catch (error) {
    showError(error);
  }
}

function onFormSubmit(event) {
  event.preventDefault();
  const form = $("model-form");
  if (!form.reportValidity()) return;
  submit(state.model.id, state.form.read());
}

// "Generate with this LoRA": the LoRA form with each file on its own expert.
function generateWithLora(high, low) {
  const target = state.models.find((m) => m.kind !== TRAINER_KIND && m.id.includes("480p-lora")) || state.models.find((m) => m.id.includes("lora") && m.kind !== TRAINER_KIND);
  const carried = {};
  for (const name of ["image", "prompt", "negative_prompt"]) if (state.lastGenerate?.[name]) carried[name] = state.lastGenerate[name];
  selectModel(target.id, { ...carried, high_noise_loras: [{ path: high, scale: 1 }], low_noise_loras: [{ path: low, scale: 1 }] });
  $("model-pane").scrollIntoView({ block: "start" });
  $("model-select").focus();
}

function open(item) {
  const model = state.models.find((m) => m.id === item.model);
  state.stopWatch?.();
  const card = new RunCard({ modelId: item.model, kind: model?.kind || "generate", input: {}, onCancel: cancel, onGenerateWithLora: generateWithLora });
  clear($("run"), card.element);
  card.submitted(item);
  if (!card.done) follow(card, item.id);
  card.element.scrollIntoView({ block: "nearest" });
}

// Paste an image anywhere on the page: it goes to the form's image field.
function onPaste(event) {
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  const target = state.form?.mediaField("image");
  if (!file || !target) return;
  event.preventDefault();
  target.take(file);
}

// --- start -----------------------------------------------------------------------------------

const history = new History($("history"), {
  onRerun: (modelId, input) => {
    selectModel(modelId, input);
    submit(modelId, input);
  },
  onOpen: open,
  onError: showError,
  onGenerateWithLora: (high, low) => generateWithLora(high, low),
});

async function showHealth() {
  try {
    const health = await api.health();
    state.features = health.prompt_expansion ? { prompt_expansion: health.prompt_expansion } : null;
    const text = `worker: ${health.worker}${health.model ? ` · model: ${health.model}` : ""}`;
    clear($("health"), text);
    $("health").dataset.worker = health.worker;
  } catch {
    clear($("health"), "server unreachable");
  }
}

async function start() {
  await showHealth();
  if (!getKey()) {
    $("workspace").hidden = true;
    $("key-input").focus();
    return;
  }
  try {
    const [models, openapi] = await Promise.all([api.models(), api.openapi()]);
    state.models = models;
    state.components = openapi.components.schemas;
  } catch (error) {
    showError(error.status === 401 ? new Error(`${error.message}: check the key`) : error);
    return;
  }
  $("workspace").hidden = false;
  fillModelSelect();
  selectModel(localStorage.getItem(LAST_MODEL) || state.models[0].id);
  await Promise.all([loadMyLoras(), history.refresh()]);
}

$("key-form").addEventListener("submit", onKeySubmit);
$("key-clear").addEventListener("click", onKeyClear);
$("model-select").addEventListener("change", (e) => selectModel(e.target.value));
$("model-form").addEventListener("submit", onFormSubmit);
$("history-refresh").addEventListener("click", () => history.refresh());
document.addEventListener("paste", onPaste);
showKeyState();
start();
