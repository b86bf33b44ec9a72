// The server's API as the page uses it: the key (kept in localStorage only, sent only as a
// header), JSON calls in the API's envelope, uploads with progress, and polling.

const KEY_STORE = "wanforge.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function setKey(key) {
  localStorage.setItem(KEY_STORE, key);
}

export function clearKey() {
  localStorage.removeItem(KEY_STORE);
}

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function unwrap(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    throw new ApiError(`HTTP ${resp.status}: the server answered no JSON`, resp.status, resp.status);
  }
  if (!resp.ok || (body && typeof body.code === "number" && body.code !== 200)) {
    const message = (body && body.message) || `HTTP ${resp.status}`;
    throw new ApiError(message, resp.status, body ? body.code : resp.status);
  }
  return body && "data" in body ? body.data : body;
}

export async function call(method, path, body) {
  const init = { method, headers: { ...authHeaders() } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return unwrap(await fetch(path, init));
}

export const api = {
  health: () => fetch("/health", { headers: authHeaders() }).then((r) => r.json()),
  openapi: () => fetch("/openapi.json").then((r) => r.json()),
  models: () => call("GET", "/api/v3/models"),
  submit: (modelId, input) => call("POST", `/api/v3/${modelId}`, input),
  result: (id) => call("GET", `/api/v3/predictions/${encodeURIComponent(id)}/result`),
  detail: (id) => call("GET", `/api/v3/predictions/${encodeURIComponent(id)}`),
  list: (query) => call("POST", "/api/v3/predictions", query),
  cancel: (id) => call("DELETE", `/api/v3/predictions/${encodeURIComponent(id)}`),
  remove: (ids) => call("POST", "/api/v3/predictions/delete", { ids }),
};

// Upload one file through the binary upload API; `onProgress(fraction)` as the bytes go out.
// XMLHttpRequest, not fetch: only it reports upload progress.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v3/media/upload/binary");
    const headers = authHeaders();
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status === 200 && body && body.code === 200) {
        if (onProgress) onProgress(1);
        resolve(body.data.download_url);
      } else {
        const message = (body && body.message) || `upload failed: HTTP ${xhr.status}`;
        reject(new ApiError(message, xhr.status, body ? body.code : xhr.status));
      }
    };
    xhr.onerror = () => reject(new ApiError("upload failed: the server could not be reached", 0, 0));
    const form = new FormData();
    form.append("file", file, file.name || "upload");
    xhr.send(form);
  });
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

// Poll a prediction until it ends; `onUpdate(prediction)` after each read. Returns a stop function.
export function watch(id, onUpdate, intervalMs = 400) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      const prediction = await api.result(id);
      if (stopped) return;
      onUpdate(prediction, null);
      if (TERMINAL.has(prediction.status)) return;
    } catch (error) {
      if (stopped) return;
      onUpdate(null, error);
      if (error instanceof ApiError && error.status === 404) return;
    }
    timer = setTimeout(tick, intervalMs);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
