// A batch (one real set, many fakes; or a checkpoint series): W1's lower confidence bound and
// certified interval per item as a chart, the table beside it, CSV export; it fills in live as
// items finish (one event stream for all of the batch's unfinished jobs).
//
// `items()` is the one place that reads the batch resource (GET /v1/batches/{id}, a BatchOut). An
// item's checkpoint `step` is the job's `spec.step` (the summary row's `step` says the same); a
// series item's start ('cold', 'warm' or 'fallback': cold after the warm start validated below a
// short cold trial) is its result's `series.start`, else the summary row's `start` (the summary is
// read with the batch, so a job that finished on the event stream has only its result). When every
// item has a step the chart's x axis is the step, else the submission order.

import { follow, getJSON, saveBlob } from "../api.js";
import { intervalChart } from "../chart.js";
import { append, errorBox, fmt, h, replace, statusBadge } from "../dom.js";

const ACTIVE = new Set(["queued", "running"]);
const MAX_STREAM = 200;  // jobs per event stream (service/server/ui/router.py)

// The batch's summary row of job i (rows are in job order), when it is that job's.
function summaryRow(batch, job, i) {
  const row = batch.summary?.[i];
  return row && (row.label ?? null) === (job.label ?? null) ? row : {};
}

function finiteOrNull(v) {
  return Number.isFinite(v) ? v : null;
}

export function items(batch) {
  return batch.jobs.map((job, i) => {
    const r = job.result, row = summaryRow(batch, job, i);
    const step = finiteOrNull(job.spec?.step ?? row.step ?? r?.series?.step ?? null);
    const start = r?.series?.start ?? row.start ?? null;
    return {
      jobId: job.id, label: job.label || job.id, status: job.status, done: Boolean(r),
      step, x: step ?? i, start, warmStarted: start === null ? null : start === "warm",
      lcb: r?.lower_confidence_bound ?? null, point: r?.certified_lower_bound ?? null,
      lo: r?.certified_ci[0] ?? null, hi: r?.certified_ci[1] ?? null,
      estimate: r?.estimate ?? null, stderr: r?.stderr ?? null, lipschitz: r?.lipschitz_bound ?? null,
      confidence: r?.confidence ?? null, space: r?.space ?? null, error: job.error,
      decision: r?.series?.decision || "",
    };
  });
}

const COLUMNS = [["label", "label"], ["step", "step"], ["status", "status"], ["lower_confidence_bound", "lcb"],
  ["certified_lower_bound", "point"], ["certified_ci_low", "lo"], ["certified_ci_high", "hi"], ["estimate", "estimate"],
  ["stderr", "stderr"], ["lipschitz_bound", "lipschitz"], ["confidence", "confidence"], ["warm_started", "warmStarted"], ["start", "start"], ["job", "jobId"]];

// A spreadsheet must not run a label as a formula (=, +, -, @ first): such a cell gets a leading '.
function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function toCSV(rows) {
  return [COLUMNS.map(([name]) => name).join(","),
    ...rows.map((it) => COLUMNS.map(([, key]) => csvCell(it[key])).join(","))].join("\r\n") + "\r\n";
}

const START = { warm: "warm", cold: "cold", fallback: "cold (fallback)" };

function table(rows, series) {
  const stepped = rows.some((it) => it.step !== null), started = series || rows.some((it) => it.start !== null);
  const cols = ["item", ...(stepped ? ["step"] : []), "status", "W1 ≥ (LCB)", "certified lower bound", "certified interval",
    "estimate ± s.e.", "L", ...(started ? ["critic start"] : [])];
  return h("table", { class: "batch-table", id: "batch-table" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((it) => h("tr", { dataset: { job: it.jobId } },
      h("th", { scope: "row" }, h("a", { href: `#/jobs/${encodeURIComponent(it.jobId)}` }, it.label)),
      stepped ? h("td", { class: "num step" }, it.step ?? "–") : null,
      h("td", {}, statusBadge(it.status), it.error ? h("div", { class: "error-text" }, it.error) : null),
      h("td", { class: "num" }, fmt(it.lcb)), h("td", { class: "num" }, fmt(it.point)),
      h("td", { class: "num" }, it.done ? `[${fmt(it.lo)}, ${fmt(it.hi)}]` : "–"),
      h("td", { class: "num" }, it.done ? `${fmt(it.estimate)} ± ${fmt(it.stderr)}` : "–"),
      h("td", { class: "num" }, fmt(it.lipschitz, 4)),
      started ? h("td", { class: "start", dataset: { start: it.start ?? "" }, title: it.decision || null },
        it.start === null ? "–" : START[it.start] ?? it.start) : null))));
}

const SERIES_NOTE = "A checkpoint series: one real set against each checkpoint, run in training order on one worker; "
  + "each item's critic starts from the previous item's (warm), unless that validates below a short cold trial "
  + "(cold, fallback). ";

function spaceNote(rows) {
  const spaces = new Set(rows.filter((it) => it.space).map((it) => JSON.stringify(it.space)));
  return spaces.size > 1 ? h("p", { class: "warning", role: "alert" }, "Items were measured in different input spaces: their distances are not comparable.") : null;
}

// The batch's status as the API computes it (service/views.batch_status), kept current while live.
function status(rows) {
  const st = new Set(rows.map((it) => it.status));
  if ([...st].some((x) => ACTIVE.has(x))) return [...st].some((x) => x !== "queued") ? "running" : "queued";
  if (st.size === 1) return st.has("succeeded") ? "succeeded" : st.has("cancelled") ? "cancelled" : "failed";
  return "failed";
}

export async function render({ main, signal, arg: id }) {
  const path = `/v1/batches/${encodeURIComponent(id)}`;
  let batch = await getJSON(path, { signal });
  document.title = `Batch ${id} · w1`;
  const body = h("div", { class: "batch-grid" });
  const series = batch.mode === "series";
  const csv = h("button", { type: "button", id: "export-csv" }, "Export CSV");
  csv.addEventListener("click", () => saveBlob(new Blob([toCSV(items(batch))], { type: "text/csv" }), `batch-${id}.csv`));
  const count = h("p", { id: "batch-count", "aria-live": "polite" });
  const badge = h("span");
  const draw = () => {
    const rows = items(batch), done = rows.filter((it) => it.done).length;
    const finished = rows.filter((it) => !ACTIVE.has(it.status)).length;
    count.textContent = `${done} of ${rows.length} items have a result${finished > done ? `, ${finished - done} ended without one` : ""}.`;
    replace(badge, statusBadge(status(rows)));
    const numeric = rows.every((it) => it.step !== null);
    replace(body, h("section", { class: "chart-col" }, spaceNote(rows),
      intervalChart({ title: `W1 per ${series ? "checkpoint" : "item"} of batch ${id}`, items: rows, numeric, confidence: rows.find((it) => it.confidence)?.confidence || 0.95,
        desc: "For each item: the lower confidence bound (dots), the certified interval (band) and the certified point estimate (ticks).",
        xTitle: numeric ? "checkpoint step" : "item (label, in submission order)" })),
    h("section", { class: "table-col" }, table(rows, series)));
  };
  append(main, h("div", { class: "heading" }, h("h1", {}, `Batch ${id} `, badge), csv),
    h("p", { id: "batch-kind" }, series ? SERIES_NOTE : "One real set against each fake. ", h("a", { href: `#/jobs?batch=${encodeURIComponent(id)}` }, "Its jobs in the list")),
    count, body);
  draw();
  live(path, () => batch, (next) => { batch = next; draw(); }, signal)
    .catch((err) => { if (!signal.aborted) append(main, errorBox(err)); });
}

// Follows the batch's unfinished jobs (one stream, at most MAX_STREAM of them at a time, in
// order), then reads the batch again; until every job is finished or the view is left.
async function live(path, current, update, signal) {
  for (;;) {
    const active = current().jobs.filter((job) => ACTIVE.has(job.status)).map((job) => job.id);
    if (!active.length || signal.aborted) return;
    await follow(`/ui/api/events?jobs=${active.slice(0, MAX_STREAM).join(",")}`, (event, job) => {
      if (event === "job") update({ ...current(), jobs: current().jobs.map((j) => (j.id === job.id ? job : j)) });
    }, signal);
    if (signal.aborted) return;
    update(await getJSON(path, { signal }));
  }
}

