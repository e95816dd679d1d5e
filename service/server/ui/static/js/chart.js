// SVG charts without a library: training curves, and W1 with its certified interval per item.
// Colours are the Okabe-Ito palette (readable with colour-blindness), and every series also has
// its own dash pattern or marker, so colour is never the only cue. Each chart carries a text
// alternative (role="img" + <title>/<desc>); the tables beside the charts hold the same numbers.

import { fmt, h, s } from "./dom.js";

export const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
export const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4", "4 4"];
const W = 680, H = 320, M = { left: 64, right: 16, top: 16, bottom: 56 };

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw)), r = raw / mag;
  const step = mag * (r >= 7.5 ? 10 : r >= 3.5 ? 5 : r >= 1.5 ? 2 : 1);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(12)));
  return out;
}

function scale(d0, d1, r0, r1) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return (v) => r0 + (v - d0) * k;
}

function frame(title, desc) {
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title },
    s("title", {}, title), s("desc", {}, desc));
}

function yAxis(svg, y, lo, hi, label) {
  for (const t of niceTicks(lo, hi)) {
    if (t < lo || t > hi) continue;
    svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t, Math.abs(hi - lo) < 0.1 ? 3 : 2)));
  }
  svg.append(s("text", { x: 14, y: M.top + (H - M.top - M.bottom) / 2, class: "axis-label", "text-anchor": "middle",
    transform: `rotate(-90 14 ${M.top + (H - M.top - M.bottom) / 2})` }, label));
}

function xLabel(svg, label) {
  svg.append(s("text", { x: M.left + (W - M.left - M.right) / 2, y: H - 8, class: "axis-label", "text-anchor": "middle" }, label),
    s("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "axis" }));
}

function polyline(points, x, y, attrs) {
  // points: [[x, y] | null]; null breaks the line (e.g. a new candidate critic restarts at step 0)
  const out = [];
  let run = [];
  for (const p of [...points, null]) {
    if (p && Number.isFinite(p[1])) run.push(`${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    else if (run.length) { out.push(s("polyline", { points: run.join(" "), fill: "none", ...attrs })); run = []; }
  }
  return out;
}

export function legend(entries) {
  // entries: [{label, color, dash, kind: "line" | "band" | "dot" | "tick"}]
  return h("ul", { class: "legend" }, entries.map((e) => {
    const mark = s("svg", { viewBox: "0 0 28 12", width: 28, height: 12, "aria-hidden": "true" });
    if (e.kind === "band") mark.append(s("rect", { x: 1, y: 1, width: 26, height: 10, fill: e.color, "fill-opacity": 0.22, stroke: e.color, "stroke-opacity": 0.5 }));
    else if (e.kind === "tick") mark.append(s("line", { x1: 8, x2: 20, y1: 6, y2: 6, stroke: e.color, "stroke-width": 3 }));
    else {
      mark.append(s("line", { x1: 1, x2: 27, y1: 6, y2: 6, stroke: e.color, "stroke-width": 2, "stroke-dasharray": e.dash || "" }));
      if (e.kind === "dot") mark.append(s("circle", { cx: 14, cy: 6, r: 4, fill: e.color }));
    }
    return h("li", {}, mark, " ", e.label);
  }));
}

// Lines against step. series: [{name, points: [[x, y] | null], color, dash}];
// bands: [{name, lo, hi, color}] drawn across the whole width (e.g. the held-out interval).
export function lineChart({ title, desc, series, bands = [], xTitle = "step", yTitle }) {
  const pts = series.flatMap((sr) => sr.points.filter((p) => p && Number.isFinite(p[1])));
  const ys = [...pts.map((p) => p[1]), ...bands.flatMap((b) => [b.lo, b.hi])].filter(Number.isFinite);
  const xs = pts.map((p) => p[0]);
  const svg = frame(title, desc);
  if (!ys.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no points yet"));
    return svg;
  }
  let lo = Math.min(...ys), hi = Math.max(...ys);
  const pad = (hi - lo || Math.abs(hi) || 1) * 0.08;
  lo -= pad; hi += pad;
  const x = scale(Math.min(0, ...xs), Math.max(1, ...xs), M.left, W - M.right);
  const y = scale(lo, hi, H - M.bottom, M.top);
  yAxis(svg, y, lo, hi, yTitle);
  for (const t of niceTicks(Math.min(0, ...xs), Math.max(1, ...xs), 6)) {
    svg.append(s("text", { x: x(t), y: H - M.bottom + 16, "text-anchor": "middle", class: "tick" }, String(t)));
  }
  xLabel(svg, xTitle);
  for (const b of bands) {
    svg.append(s("rect", { x: M.left, width: W - M.left - M.right, y: y(b.hi), height: Math.max(1, y(b.lo) - y(b.hi)),
      fill: b.color, "fill-opacity": 0.18, class: "band" }, s("title", {}, `${b.name}: [${fmt(b.lo)}, ${fmt(b.hi)}]`)));
  }
  for (const sr of series) {
    svg.append(...polyline(sr.points, x, y, { stroke: sr.color, "stroke-width": 2, "stroke-dasharray": sr.dash || "",
      "data-series": sr.name, "data-count": String(sr.points.filter(Boolean).length) }));
  }
  return svg;
}

// W1 per item: the certified interval as a band (and a bar per item), the lower confidence bound
// as the line with dots, the certified point estimate as a tick. items: [{x, label, lo, hi, lcb,
// point, done}], x numeric (checkpoint step) when `numeric`, else the item's position.
export function intervalChart({ title, desc, items, numeric, xTitle, confidence = 0.95 }) {
  const svg = frame(title, desc);
  const done = items.filter((it) => it.done && Number.isFinite(it.lcb));
  const ys = done.flatMap((it) => [it.lo, it.hi, it.lcb, it.point]).filter(Number.isFinite);
  const lo = Math.min(0, ...ys), hi = ys.length ? Math.max(...ys) * 1.08 || 1 : 1;
  const xs = items.map((it, i) => (numeric ? it.x : i));
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const span = x1 - x0 || 1;
  const x = scale(x0 - span * 0.06, x1 + span * 0.06, M.left, W - M.right);
  const y = scale(lo, hi, H - M.bottom, M.top);
  const at = (it) => x(numeric ? it.x : items.indexOf(it));
  yAxis(svg, y, lo, hi, "W1 (certified)");
  const every = Math.ceil(items.length / 12);  // at most about 12 labels on the axis
  items.forEach((it, i) => {
    if (i % every && i !== items.length - 1) return;
    const t = s("text", { x: at(it), y: H - M.bottom + 16, "text-anchor": "middle", class: "tick" },
      numeric ? String(it.x) : shorten(it.label || `#${i + 1}`), s("title", {}, it.label || `#${i + 1}`));
    svg.append(t);
  });
  xLabel(svg, xTitle || (numeric ? "checkpoint step" : "item"));
  const pct = `${Math.round(confidence * 100)}%`;
  if (done.length > 1) {
    const upper = done.map((it) => `${at(it).toFixed(1)},${y(it.hi).toFixed(1)}`);
    const lower = done.slice().reverse().map((it) => `${at(it).toFixed(1)},${y(it.lo).toFixed(1)}`);
    svg.append(s("polygon", { points: [...upper, ...lower].join(" "), fill: COLORS[0], "fill-opacity": 0.18, class: "band" }));
    svg.append(...polyline(done.map((it) => [it, it.lcb]), (it) => at(it), y, { stroke: COLORS[0], "stroke-width": 2 }));
  }
  for (const it of done) {
    const cx = at(it);
    svg.append(s("line", { x1: cx, x2: cx, y1: y(it.hi), y2: y(it.lo), stroke: COLORS[0], "stroke-opacity": 0.6, "stroke-width": 6 }),
      s("line", { x1: cx - 7, x2: cx + 7, y1: y(it.point), y2: y(it.point), stroke: COLORS[1], "stroke-width": 3 }),
      s("circle", { cx, cy: y(it.lcb), r: 5, fill: COLORS[0], "data-point": "lcb" },
        s("title", {}, `${it.label}: W1 ≥ ${fmt(it.lcb)} (${pct} lower confidence bound); certified ${pct} interval [${fmt(it.lo)}, ${fmt(it.hi)}]`)));
  }
  for (const it of items.filter((i) => !i.done)) {
    svg.append(s("circle", { cx: at(it), cy: H - M.bottom, r: 4, fill: "#fff", stroke: "#666", "data-point": "pending" },
      s("title", {}, `${it.label}: ${it.status}`)));
  }
  return h("figure", { class: "chart-box" }, svg, legend([
    { label: `certified ${pct} interval`, color: COLORS[0], kind: "band" },
    { label: `W1 ≥ (${pct} lower confidence bound)`, color: COLORS[0], kind: "dot" },
    { label: "certified lower bound (point estimate / L)", color: COLORS[1], kind: "tick" },
  ]));
}

function shorten(text) {
  return text.length > 14 ? `${text.slice(0, 13)}…` : text;
}
