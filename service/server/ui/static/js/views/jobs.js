// The job list: filters (status, label, batch), cursor paging, live progress of the jobs shown
// (one event stream for all of them), and a selection to compare.

import { follow, getJSON } from "../api.js";
import { append, fmt, fmtTime, h, headline, progressOf, sourceName, statusBadge } from "../dom.js";
import { names } from "../names.js";

const PAGE = 20;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const ACTIVE = new Set(["queued", "running"]);
const selected = new Set();

function hashFor(params) {
  const q = new URLSearchParams([...params].filter(([, v]) => v));
  return `#/jobs${q.toString() ? `?${q}` : ""}`;
}

function filters(params) {
  const status = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"), STATUSES.map((st) => h("option", { value: st, selected: params.get("status") === st }, st)));
  const label = h("input", { id: "f-label", name: "label", type: "search", value: params.get("label") || "" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs" },
    h("label", { for: "f-status" }, "Status"), status,
    h("label", { for: "f-label" }, "Label (exact)"), label,
    h("button", { type: "submit" }, "Filter"));
  if (params.get("batch")) form.append(h("span", { class: "chip" }, `batch ${params.get("batch")} `,
    h("a", { href: hashFor(new URLSearchParams({ status: params.get("status") || "", label: params.get("label") || "" })) }, "(all jobs)")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = hashFor(new URLSearchParams({ status: status.value, label: label.value, batch: params.get("batch") || "" }));
  });
  return form;
}

function progressCell(job) {
  const p = job.progress, shown = progressOf(job);
  if (job.status === "running" && shown) {
    return h("td", { class: "progress-cell" }, h("progress", { max: shown.max, value: shown.value, "aria-label": shown.text,
      dataset: { step: p.step } }), h("div", { class: "small" }, shown.text));
  }
  if (job.status === "queued") return h("td", {}, "waiting for a worker");
  return h("td", {}, p ? `${p.step} steps` : "–");
}

function row(job, sourceNames, onSelect) {
  const r = job.result;
  const box = h("input", { type: "checkbox", "aria-label": `compare job ${job.label || job.id}`,
    disabled: job.status !== "succeeded", checked: selected.has(job.id) });
  box.addEventListener("change", () => { box.checked ? selected.add(job.id) : selected.delete(job.id); onSelect(); });
  return h("tr", { dataset: { job: job.id, status: job.status } },
    h("td", {}, box),
    h("td", { class: "id" }, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
    h("td", { class: "label" }, job.label || "–"),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "sources" }, sourceName(job.spec.real, sourceNames), " vs ", sourceName(job.spec.fake, sourceNames)),
    h("td", { class: "num" }, r ? headline(job) : "–",
      r ? h("div", { class: "muted small" }, `[${fmt(r.certified_ci[0])}, ${fmt(r.certified_ci[1])}]`) : null),
    progressCell(job),
    h("td", { class: "id" }, job.batch_id ? h("a", { href: `#/batches/${encodeURIComponent(job.batch_id)}`, title: job.batch_id }, `…${job.batch_id.slice(-6)}`) : "–"),
    h("td", {}, fmtTime(job.created_at)));
}

export async function render({ main, signal, params }) {
  document.title = "Jobs · w1";
  const limit = Math.min(Math.max(Number(params.get("limit")) || PAGE, 1), 100);
  const q = new URLSearchParams({ limit });
  for (const [key, name] of [["status", "status"], ["label", "label"], ["batch", "batch_id"], ["cursor", "cursor"]]) {
    if (params.get(key)) q.set(name, params.get(key));
  }
  const [page, sourceNames] = await Promise.all([getJSON(`/v1/jobs?${q}`, { signal }), names()]);
  const compareButton = h("button", { type: "button", id: "compare-selected" });
  const updateCompare = () => {
    compareButton.textContent = `Compare selected (${selected.size})`;
    compareButton.disabled = selected.size < 2;
  };
  compareButton.addEventListener("click", () => { location.hash = `#/compare/${[...selected].join(",")}`; selected.clear(); });
  updateCompare();
  const rows = new Map(page.items.map((job) => [job.id, row(job, sourceNames, updateCompare)]));
  const table = h("table", { class: "jobs" },
    h("caption", { class: "sr-only" }, "Jobs, newest first"),
    h("thead", {}, h("tr", {}, ["compare", "job", "label", "status", "real vs fake", "W1 ≥ (95% LCB) [certified interval]",
      "progress", "batch", "created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, [...rows.values()]));
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  if (params.get("cursor")) {
    const first = new URLSearchParams(params);
    first.delete("cursor");
    pager.append(h("a", { href: hashFor(first) }, "← Newest"));
  }
  if (page.next_cursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", page.next_cursor);
    pager.append(h("a", { href: hashFor(next), id: "older" }, "Older →"));
  }
  append(main, h("div", { class: "heading" }, h("h1", {}, "Jobs"), h("a", { class: "button", href: "#/submit" }, "New estimate")),
    filters(params),
    page.items.length ? h("div", { class: "scroll" }, table) : h("p", { class: "empty-state" }, "No jobs here yet."),
    h("div", { class: "actions" }, compareButton, pager));
  const active = page.items.filter((job) => ACTIVE.has(job.status)).map((job) => job.id);
  if (active.length) {
    follow(`/ui/api/events?jobs=${active.join(",")}`, (event, job) => {
      const old = rows.get(job.id);
      if (event !== "job" || !old) return;
      const fresh = row(job, sourceNames, updateCompare);
      old.replaceWith(fresh);
      rows.set(job.id, fresh);
    }, signal).catch(() => {});
  }
}
