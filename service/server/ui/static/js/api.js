// Talking to the API: the key, JSON requests, downloads and event streams.
//
// The key lives in this tab's sessionStorage (gone when the tab closes) and travels only in the
// Authorization header, never in a URL, a cookie or a log. Event streams are read with fetch()
// instead of EventSource, because EventSource cannot send that header. Without a cookie no request
// carries credentials by itself, so another site cannot make one for the user (no CSRF).

const KEY = "w1.token";

export const session = { token: sessionStorage.getItem(KEY), owner: null, local: false };

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function setToken(token) {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
  session.token = token || null;
}

function headers(extra) {
  const h = new Headers(extra || {});
  if (session.token) h.set("Authorization", `Bearer ${session.token}`);
  return h;
}

export async function request(path, { method = "GET", json, body, headers: extra, signal } = {}) {
  const init = { method, headers: headers(extra), signal, credentials: "omit", cache: "no-store" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers.set("Content-Type", "application/json");
  } else if (body !== undefined) {
    init.body = body;
  }
  const res = await fetch(path, init);
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      detail = (await res.json()).detail || detail;
    } catch { /* not JSON */ }
    throw new ApiError(res.status, detail);
  }
  return res;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

export async function download(path, filename) {
  saveBlob(await (await request(path)).blob(), filename);
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue;
    const [field, ...rest] = line.split(":");
    const value = rest.join(":").replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});

// Reads a Server-Sent Events stream, calling onEvent(name, data) per event. Resolves when the
// server ends the stream (every job it follows is finished) or `signal` aborts; a dropped
// connection is retried with back-off; a 4xx answer rejects.
export async function follow(path, onEvent, signal) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const res = await request(path, { signal, headers: { Accept: "text/event-stream" } });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      delay = 1000;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const parsed = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          if (parsed) onEvent(parsed.event, parsed.data);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500) throw err;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 15000);
    }
  }
}
