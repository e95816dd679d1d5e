// One job: live progress and training curve while it runs (its event stream), then the result
// table (the rows `w1 estimate` prints), the critic choice, sources, space, timings, notes and
// the artifacts; cancel while it is queued or running.

import { download, follow, getJSON, request, saveBlob } from "../api.js";
import { COLORS, DASHES, legend, lineChart } from "../chart.js";
import { announce, append, dl, errorBox, fmt, fmtTime, h, progressOf, replace, sourceName, statusBadge } from "../dom.js";
import { names } from "../names.js";

const ACTIVE = new Set(["queued", "running"]);

// Curve points: [step, value] with null where the steps start again (a new candidate critic).
export function curveSeries(points, key) {
  const out = [];
  let last = -Infinity;
  for (const p of points) {
    if (p[key] === null || p[key] === undefined) continue;
    if (p.step < last) out.push(null);
    out.push([p.step, p[key]]);
    last = p.step;
  }
  return out;
}

function curveChart(job, live) {
  const r = job.result;
  const points = r ? r.curve : live;
  const pct = r ? `${Math.round(r.confidence * 100)}%` : "";
  const bands = r ? [{ name: `held-out estimate, ${pct} interval`, lo: r.ci[0], hi: r.ci[1], color: COLORS[2] }] : [];
  const chart = lineChart({
    title: `Training curve of job ${job.label || job.id}`,
    desc: r ? `Validation estimate and training objective against step; the band is the held-out estimate's ${pct} interval.`
      : "Validation estimate and training objective against step, as the job reports them.",
    series: [{ name: "validation", points: curveSeries(points, "validation"), color: COLORS[0], dash: DASHES[0] },
      { name: "objective", points: curveSeries(points, "objective"), color: COLORS[1], dash: DASHES[1] }],
    bands, yTitle: "critic's dual value (before / L)" });
  return h("figure", { class: "chart-box", id: "curve" }, chart, legend([
    { label: "validation estimate (for early stopping and the critic choice)", color: COLORS[0], kind: "line" },
    { label: "training objective", color: COLORS[1], dash: DASHES[1], kind: "line" },
    ...(r ? [{ label: `held-out estimate, ${pct} interval (the reported number, before / L)`, color: COLORS[2], kind: "band" }] : []),
  ]));
}

function progressBlock(job) {
  const p = job.progress;
  if (!ACTIVE.has(job.status)) return null;
  if (!p) return h("p", { id: "progress" }, job.status === "queued" ? "Waiting for a worker…" : "Starting…");
  const shown = progressOf(job);
  return h("p", { id: "progress", dataset: { step: p.step } }, h("progress", { max: shown.max, value: shown.value, "aria-label": "training progress" }),
    ` ${shown.text}; validation estimate ${fmt(p.estimate)}, objective ${fmt(p.objective)}`);
}

// The number this product reports, with its uncertainty, at the top of the page.
function headlineBlock(job) {
  const r = job.result;
  if (!r) return null;
  const pct = `${Math.round(r.confidence * 100)}%`;
  return h("p", { class: "headline", id: "headline" }, h("strong", {}, `W1 ≥ ${fmt(r.lower_confidence_bound)}`),
    ` (${pct} lower confidence bound); certified lower bound ${fmt(r.certified_lower_bound)}, certified ${pct} interval `,
    `[${fmt(r.certified_ci[0])}, ${fmt(r.certified_ci[1])}]`);
}

function candidates(selection) {
  if (!selection) return null;
  return h("section", {}, h("h2", {}, "Critic choice"),
    h("p", {}, `Rule: ${selection.rule}. Trial: ${selection.trial_steps} steps each.`),
    h("table", { id: "candidates" }, h("thead", {}, h("tr", {}, ["candidate", "certified validation value", "Lipschitz bound",
      "steps", "train time (s)", "stopped early", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, selection.candidates.map((c) => h("tr", { class: c.name === selection.chosen ? "chosen" : "" },
      h("td", {}, c.name), h("td", { class: "num" }, fmt(c.validation)), h("td", { class: "num" }, fmt(c.lipschitz_bound, 6)),
      h("td", { class: "num" }, String(c.steps)), h("td", { class: "num" }, fmt(c.train_s, 1)),
      h("td", {}, c.stopped_early ? "yes" : "no"), h("td", {}, c.name === selection.chosen ? "chosen" : ""))))));
}

async function artifacts(job, signal) {
  const box = h("section", { id: "artifacts" }, h("h2", {}, "Downloads"));
  const list = h("ul", { class: "downloads" });
  const json = h("button", { type: "button", id: "download-result" }, "result.json");
  json.addEventListener("click", () => saveBlob(new Blob([JSON.stringify(job, null, 2)], { type: "application/json" }), `${job.id}.json`));
  list.append(h("li", {}, json, " the job and its full result"));
  const { items } = await getJSON(`/v1/jobs/${encodeURIComponent(job.id)}/artifacts`, { signal });
  const what = { "curve.json": "training curve", "curve.png": "plot", "critic.onnx": "trained critic (ONNX)", "critic.pt": "trained critic (state_dict)" };
  for (const name of items) {
    const button = h("button", { type: "button", dataset: { artifact: name } }, name);
    button.addEventListener("click", () => download(`/v1/jobs/${encodeURIComponent(job.id)}/artifacts/${name}`, `${job.id}-${name}`)
      .catch((err) => box.append(errorBox(err))));
    list.append(h("li", {}, button, ` ${what[name] || ""}`));
  }
  box.append(list);
  return box;
}

function details(job, sourceNames) {
  const r = job.result;
  const parts = [h("section", {}, h("h2", {}, "Sources"),
    r ? h("div", { class: "grid3" }, ["real", "fake"].map((side) => h("div", {}, h("h3", {}, side), dl(r.sources[side]))))
      : dl({ real: sourceName(job.spec.real, sourceNames), fake: sourceName(job.spec.fake, sourceNames) }))];
  if (r) {
    const seconds = Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, typeof v === "number" ? v.toFixed(2) : v]));
    parts.push(h("div", { class: "grid3" }, h("section", {}, h("h2", {}, "Input space"), dl(r.space)),
      h("section", {}, h("h2", {}, "Timings (s)"), dl(seconds)),
      h("section", {}, h("h2", {}, "Notes"), r.notes.length ? h("ul", { id: "notes" }, r.notes.map((n) => h("li", {}, n))) : h("p", {}, "None."))));
  }
  parts.push(h("details", {}, h("summary", {}, "Options (the full spec after defaults)"),
    h("pre", {}, JSON.stringify(job.spec.options, null, 2))));
  return parts;
}

async function resultTable(job, signal) {
  const { rows } = await getJSON(`/ui/api/jobs/${encodeURIComponent(job.id)}/rows`, { signal });
  return h("section", {}, h("h2", {}, "Result"), h("p", { class: "muted" }, "The rows `w1 estimate` prints."),
    h("table", { class: "result", id: "result" },
      h("tbody", {}, rows.map(([label, value]) => h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, value))))));
}

function header(job, onCancel) {
  const cancel = ACTIVE.has(job.status) ? h("button", { type: "button", id: "cancel", class: "danger" }, "Cancel job") : null;
  cancel?.addEventListener("click", onCancel);
  return h("div", { class: "heading" },
    h("h1", {}, "Job ", h("span", { class: "label" }, job.label || job.id), " ", statusBadge(job.status)), cancel);
}

export async function render({ main, signal, arg: id }) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const [first, sourceNames] = await Promise.all([getJSON(path, { signal }), names()]);
  let job = first;
  const live = job.progress ? [{ ...job.progress, validation: job.progress.estimate }] : [];
  let lastEstimate = job.progress?.estimate;
  const draw = async () => {
    document.title = `Job ${job.label || job.id} · w1`;
    const finished = !ACTIVE.has(job.status);
    const body = [header(job, cancel), h("p", { class: "muted" }, `${job.id} · created ${fmtTime(job.created_at)}`,
      job.batch_id ? [" · batch ", h("a", { href: `#/batches/${encodeURIComponent(job.batch_id)}` }, job.batch_id)] : null),
    headlineBlock(job), progressBlock(job), job.error ? h("p", { class: "error", role: "alert" }, job.error) : null,
    h("section", {}, h("h2", {}, "Training curve"), curveChart(job, live))];
    if (job.result) body.push(await resultTable(job, signal), candidates(job.result.selection));
    body.push(...details(job, sourceNames));
    if (finished) body.push(await artifacts(job, signal));
    if (!signal.aborted) replace(main, ...body);
  };
  async function cancel() {
    try {
      job = await getJSON(`${path}/cancel`, { method: "POST", signal });
      announce("Cancel requested");
    } catch (err) {
      append(main, errorBox(err));
    }
  }
  await draw();
  if (ACTIVE.has(job.status)) {  // followed in the background: render returns after the first draw
    follow(`${path}/events`, (event, data) => {
      if (event === "progress") {
        // a progress report repeats the latest validation estimate: keep it once, where it changed
        live.push({ ...data, validation: data.estimate !== lastEstimate ? data.estimate : null });
        lastEstimate = data.estimate;
        job = { ...job, progress: data };
        document.getElementById("progress")?.replaceWith(progressBlock(job) || "");
        document.getElementById("curve")?.replaceWith(curveChart(job, live));
      } else if (event === "status") {
        job = data;
        draw();
      }
    }, signal).catch((err) => append(main, errorBox(err)));
  }
}
