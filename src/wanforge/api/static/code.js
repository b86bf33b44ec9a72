// "Copy as code": the curl command and the `wavespeed` Python SDK call equivalent to a submission.
// The key is never written out: both read it from $WAVESPEED_API_KEY.

import { h } from "./dom.js";

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

export function curlSnippet(base, modelId, input) {
  return [
    `curl -X POST ${shellQuote(`${base}/api/v3/${modelId}`)} \\`,
    `  -H "Authorization: Bearer $WAVESPEED_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  --data-raw ${shellQuote(JSON.stringify(input))}`,
  ].join("\n");
}

// A JSON value as a Python literal.
export function pyLiteral(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => `${inner}${pyLiteral(v, inner)},`).join("\n")}\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return "{}";
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pyLiteral(v, inner)},`).join("\n")}\n${indent}}`;
}

export function pythonSnippet(base, modelId, input) {
  return [
    "import os",
    "",
    "import wavespeed",
    "",
    `client = wavespeed.Client(api_key=os.environ["WAVESPEED_API_KEY"], base_url=${JSON.stringify(base)})`,
    `output = client.run(`,
    `    ${JSON.stringify(modelId)},`,
    `    ${pyLiteral(input, "    ")},`,
    `)`,
    `print(output["outputs"])`,
  ].join("\n");
}

function copyButton(pre, what) {
  const button = h("button", { type: "button", class: "small" }, `Copy ${what}`);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(pre.textContent);
      button.textContent = "Copied";
    } catch {
      // no clipboard (an insecure origin): select the text for Ctrl+C instead
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => (button.textContent = `Copy ${what}`), 2000);
  });
  return button;
}

export function codePanel(modelId, input) {
  const base = location.origin;
  const curl = h("pre", { class: "code", tabindex: "0", dataset: { lang: "curl" } }, curlSnippet(base, modelId, input));
  const py = h("pre", { class: "code", tabindex: "0", dataset: { lang: "python" } }, pythonSnippet(base, modelId, input));
  return h(
    "details",
    { class: "copy-code" },
    h("summary", {}, "Copy as code"),
    h("div", { class: "row" }, h("strong", {}, "curl"), copyButton(curl, "curl")),
    curl,
    h("div", { class: "row" }, h("strong", {}, "Python (wavespeed SDK)"), copyButton(py, "Python")),
    py,
  );
}
