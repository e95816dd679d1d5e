// Two or more finished jobs side by side: their training curves on one chart, their W1 with its
// interval on another, their result rows in one table; a warning when their input spaces differ
// (distances in different spaces are not comparable).

import { getJSON } from "../api.js";
import { COLORS, DASHES, intervalChart, legend, lineChart } from "../chart.js";
import { append, errorBox, h } from "../dom.js";
import { items } from "./batch.js";
import { curveSeries } from "./job.js";

async function picker(main, signal) {
  const { items: jobs } = await getJSON("/v1/jobs?status=succeeded&limit=50", { signal });
  const boxes = jobs.map((job) => h("input", { type: "checkbox", id: `pick-${job.id}`, value: job.id }));
  const form = h("form", { class: "card" }, h("fieldset", {}, h("legend", {}, "Finished jobs (newest 50)"),
    jobs.length ? jobs.map((job, i) => h("div", { class: "pick" }, boxes[i],
      h("label", { for: `pick-${job.id}` }, job.label || job.id, h("span", { class: "muted" }, ` ${job.id}`))))
      : h("p", {}, "No finished jobs yet.")),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Compare")));
  const problem = h("div");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = boxes.filter((b) => b.checked).map((b) => b.value);
    if (ids.length < 2) problem.replaceChildren(errorBox("Choose two or more jobs."));
    else location.hash = `#/compare/${ids.join(",")}`;
  });
  append(main, h("h1", {}, "Compare jobs"), h("p", {}, "Choose two or more finished jobs (or tick them in the job list)."), form, problem);
}

function spaceWarning(jobs) {
  const spaces = jobs.map((job) => JSON.stringify(job.result?.space ?? null));
  if (new Set(spaces).size < 2) return null;
  return h("div", { class: "warning", role: "alert", id: "space-warning" },
    h("strong", {}, "Input spaces differ: these distances are not comparable. "),
    h("ul", {}, jobs.map((job) => h("li", {}, `${job.label || job.id}: ${JSON.stringify(job.result?.space ?? "no result")}`))));
}

function rowsTable(jobs, rowSets) {
  const labels = [];
  for (const rows of rowSets) for (const [label] of rows) if (!labels.includes(label) && label !== "note") labels.push(label);
  const value = (rows, label) => rows.filter(([l]) => l === label).map(([, v]) => v).join("; ") || "–";
  return h("table", { class: "compare", id: "compare-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), jobs.map((job) => h("th", { scope: "col" },
      h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.label || job.id))))),
    h("tbody", {}, labels.map((label) => h("tr", {}, h("th", { scope: "row" }, label), rowSets.map((rows) => h("td", {}, value(rows, label))))),
      h("tr", {}, h("th", { scope: "row" }, "notes"), rowSets.map((rows) => h("td", {}, value(rows, "note"))))));
}

export async function render({ main, signal, arg }) {
  document.title = "Compare · w1";
  const ids = (arg || "").split(",").filter(Boolean);
  if (ids.length < 2) return picker(main, signal);
  const jobs = await Promise.all(ids.map((id) => getJSON(`/v1/jobs/${encodeURIComponent(id)}`, { signal })));
  const rowSets = await Promise.all(ids.map((id) => getJSON(`/ui/api/jobs/${encodeURIComponent(id)}/rows`, { signal }).then((x) => x.rows)));
  const unfinished = jobs.filter((job) => !job.result);
  const series = jobs.map((job, i) => ({ name: job.label || job.id, points: curveSeries(job.result?.curve || [], "validation"),
    color: COLORS[i % COLORS.length], dash: DASHES[i % DASHES.length] }));
  const conf = jobs.find((job) => job.result)?.result.confidence || 0.95;
  append(main, h("h1", {}, `Compare ${jobs.length} jobs`),
    spaceWarning(jobs),
    unfinished.length ? h("p", { class: "warning", role: "alert" }, `Without a result: ${unfinished.map((j) => j.label || j.id).join(", ")}.`) : null,
    h("section", {}, h("h2", {}, "W1 with its certified interval"),
      intervalChart({ title: "W1 of each job", desc: "Lower confidence bound and certified interval of each job.",
        items: items({ jobs }), numeric: false, xTitle: "job", confidence: conf })),
    h("section", {}, h("h2", {}, "Training curves (validation estimate)"),
      h("figure", { class: "chart-box", id: "compare-curves" }, lineChart({ title: "Validation estimate against step",
        desc: "One line per job.", series, yTitle: "critic's dual value (before / L)" }),
      legend(series.map((sr) => ({ label: sr.name, color: sr.color, dash: sr.dash, kind: "line" }))))),
    h("section", {}, h("h2", {}, "Numbers"), h("div", { class: "scroll" }, rowsTable(jobs, rowSets))));
}
