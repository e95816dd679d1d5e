// Building the page: every piece of data becomes a text node or an attribute value, never HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function set(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return add(set(document.createElement(tag), attrs), children);
}

export function s(tag, attrs, ...children) {
  return add(set(document.createElementNS(SVG_NS, tag), attrs), children);
}

export function append(el, ...children) {
  return add(el, children);
}

export function replace(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

export function fmt(x, digits = 4) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

export function announce(message) {
  const el = document.getElementById("status");
  if (el) el.textContent = message;
}

// A job's headline in words: "W1 ≥ 0.1234" with its certified interval, or its status.
export function headline(job) {
  const r = job.result;
  if (!r) return "";
  return `W1 ≥ ${fmt(r.lower_confidence_bound)}`;
}

// A source reference by its name (the id in a tooltip): "real.npz", "catalog:digits", "gen.onnx × 1000".
export function sourceName(ref, names) {
  if (!ref) return "–";
  if (ref.catalog) return h("span", {}, `catalog:${ref.catalog}`);
  const id = ref.dataset || ref.generator;
  if (!id) return JSON.stringify(ref);
  return h("span", { title: id }, names?.[id] || id, ref.samples ? ` × ${ref.samples}` : "");
}

// How far a job has come: steps of the cap, or time against the budget when one is set (it
// usually ends the run first; loading and evaluation come on top of it).
export function progressOf(job) {
  // whichever ends the job first: its steps or its time budget (every estimate has one by default)
  const p = job.progress, budget = job.spec?.options?.time_budget_s;
  if (!p) return null;
  const what = [p.phase, p.candidate].filter(Boolean).join(" of ");
  const label = `step ${p.step} of ${p.total}${what ? ` (${what})` : ""}`;
  const byStep = p.total ? p.step / p.total : 0;
  if (budget && job.started_at) {
    const elapsed = Math.max(0, (Date.now() - new Date(job.started_at).getTime()) / 1000);
    if (elapsed / budget > byStep) {
      return { value: Math.min(elapsed, budget), max: budget,
        text: `${label}, running ${Math.round(elapsed)} s of its ${budget} s time budget` };
    }
  }
  return { value: p.step, max: p.total, text: label };
}

export function statusBadge(status) {
  return h("span", { class: `badge st-${status}`, dataset: { status } }, status);
}

// Key/value pairs of an object as a definition list (nested values as JSON text).
export function dl(obj, keys) {
  const list = h("dl", { class: "kv" });
  for (const key of keys || Object.keys(obj || {})) {
    const value = obj?.[key];
    if (value === undefined) continue;
    const shown = value instanceof Node ? value : typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
    list.append(h("dt", {}, key.replaceAll("_", " ")), h("dd", {}, shown));
  }
  return list;
}

export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err instanceof Error ? err.message : String(err));
}
