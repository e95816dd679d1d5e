// Submit from the page: a real set and one or more fakes chosen from the owner's uploaded data
// sets and generators or the server's catalog, a time budget, a critic, a label. One fake is a
// job, several are a batch. Uploading a data set file is here too.

import { getJSON, request } from "../api.js";
import { announce, append, errorBox, h, replace } from "../dom.js";
import { clearNames, sources } from "../names.js";

let fakeCount = 0;

// An Idempotency-Key, so a double click submits one job (crypto.randomUUID needs https).
function randomKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function sourceOptions({ datasets, generators, catalog }, withGenerators) {
  const shape = (x) => (x.shape || x.output_shape ? ` ${(x.shape || x.output_shape).join("×")}` : "");
  const groups = [
    h("optgroup", { label: "Your data sets" }, datasets.map((d) => h("option", { value: JSON.stringify({ dataset: d.id }) },
      `${d.name} (${d.count} samples${shape(d)}, ${d.id})`))),
    h("optgroup", { label: "Server catalog" }, catalog.map((c) => h("option", { value: JSON.stringify({ catalog: c.name }) },
      `${c.name}${c.count ? ` (${c.count} samples${shape(c)})` : ""}: ${c.description}`))),
  ];
  if (withGenerators) {
    groups.push(h("optgroup", { label: "Your generators" }, generators.map((g) => h("option", { value: JSON.stringify({ generator: g.id }) },
      `${g.name} (generator${shape(g)}, ${g.id})`))));
  }
  return groups;
}

function fakeRow(list, all) {
  const n = ++fakeCount;
  const select = h("select", { id: `fake-${n}`, class: "fake-source", required: true }, sourceOptions(all, true));
  const label = h("input", { id: `fake-label-${n}`, class: "fake-label", maxlength: 300 });
  const samples = h("input", { id: `fake-samples-${n}`, class: "fake-samples", type: "number", min: 2, placeholder: "eval_samples" });
  const samplesField = h("span", { class: "field" }, h("label", { for: `fake-samples-${n}` }, "Samples to draw"), samples);
  const toggle = () => { samplesField.hidden = !("generator" in JSON.parse(select.value || "{}")); };
  select.addEventListener("change", toggle);
  const remove = h("button", { type: "button", class: "link" }, "Remove");
  const row = h("div", { class: "fake-row" },
    h("span", { class: "field" }, h("label", { for: `fake-${n}` }, "Fake set"), select),
    h("span", { class: "field" }, h("label", { for: `fake-label-${n}` }, "Label"), label), samplesField, remove);
  remove.addEventListener("click", () => { if (list.children.length > 1) row.remove(); });
  toggle();
  return row;
}

function readFakes(list) {
  return [...list.querySelectorAll(".fake-row")].map((row) => {
    const fake = JSON.parse(row.querySelector(".fake-source").value);
    const samples = row.querySelector(".fake-samples").value;
    if (fake.generator && samples) fake.samples = Number(samples);
    const option = row.querySelector(".fake-source").selectedOptions[0];
    return { fake, label: row.querySelector(".fake-label").value.trim() || option.textContent.split(" (")[0] };
  });
}

function readOptions(form) {
  const extra = form.querySelector("#more-options").value.trim();
  let options = {};
  if (extra) {
    options = JSON.parse(extra);
    if (typeof options !== "object" || Array.isArray(options) || options === null) throw new Error("More options must be a JSON object.");
  }
  const critic = form.querySelector("#critic").value, steps = form.querySelector("#steps").value;
  const budget = form.querySelector("#time-budget").value, seed = form.querySelector("#seed").value;
  if (critic) options.critic = critic;
  if (steps) options.steps = Number(steps);
  if (budget) options.time_budget_s = Number(budget);
  if (seed) options.seed = Number(seed);
  return options;
}

function uploadForm(refresh) {
  const file = h("input", { id: "upload-file", type: "file", required: true, accept: ".npz,.npy,.zip,.tar,.tar.gz,.tgz" });
  const name = h("input", { id: "upload-name", maxlength: 300 });
  const out = h("div", { id: "upload-result", "aria-live": "polite" });
  const form = h("form", { class: "card", id: "upload" }, h("h2", {}, "Upload a data set"),
    h("p", { class: "muted" }, ".npz / .npy arrays, or a .zip / .tar(.gz) of PNG or JPEG images. Generators: ", h("code", {}, "w1 generators add"), "."),
    h("span", { class: "field" }, h("label", { for: "upload-file" }, "File"), file),
    h("span", { class: "field" }, h("label", { for: "upload-name" }, "Name (optional)"), name),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Upload")), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    body.append("file", file.files[0]);
    if (name.value.trim()) body.append("name", name.value.trim());
    replace(out, h("p", {}, "Uploading…"));
    try {
      const d = await (await request("/v1/datasets", { method: "POST", body })).json();
      clearNames();
      announce(`Uploaded ${d.name}`);
      await refresh(`Uploaded ${d.name}: ${d.count} samples, ${d.shape.join("×")} (${d.id}).`);
    } catch (err) {
      replace(out, errorBox(err));
    }
  });
  return form;
}

export async function render({ main, signal }, message) {
  document.title = "Submit · w1";
  const all = await sources();
  const real = h("select", { id: "real", required: true }, sourceOptions(all, false));
  const fakes = h("div", { id: "fakes" });
  fakes.append(fakeRow(fakes, all));
  const add = h("button", { type: "button", id: "add-fake" }, "Add another fake");
  add.addEventListener("click", () => fakes.append(fakeRow(fakes, all)));
  const problem = h("div", { id: "submit-problem" });
  const form = h("form", { class: "card", id: "submit" }, h("h2", {}, "New estimate"),
    h("fieldset", {}, h("legend", {}, "Samples"),
      h("span", { class: "field" }, h("label", { for: "real" }, "Real set"), real), fakes, add,
      h("p", { class: "muted" }, "One fake makes a job; several make a batch (one job per fake, against the same real set).")),
    h("fieldset", {}, h("legend", {}, "Budget and critic"),
      h("span", { class: "field" }, h("label", { for: "time-budget" }, "Time budget (s)"), h("input", { id: "time-budget", type: "number", min: 1, step: "any" })),
      h("span", { class: "field" }, h("label", { for: "critic" }, "Critic"), h("select", { id: "critic" },
        h("option", { value: "" }, "auto (best of conv and fc on validation)"), ["conv", "fc", "dcgan"].map((c) => h("option", { value: c }, c)))),
      h("span", { class: "field" }, h("label", { for: "steps" }, "Steps (max)"), h("input", { id: "steps", type: "number", min: 1 })),
      h("span", { class: "field" }, h("label", { for: "seed" }, "Seed"), h("input", { id: "seed", type: "number", min: 0, value: 0 }))),
    h("details", {}, h("summary", {}, "More options (JSON, any field of EstimateOptions)"),
      h("label", { for: "more-options" }, "Options"), h("textarea", { id: "more-options", rows: 3, spellcheck: "false", placeholder: '{"batch_size": 64, "eval_every": 50}' })),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "submit-button" }, "Submit")), problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const options = readOptions(form), chosen = readFakes(fakes), realRef = JSON.parse(real.value);
      if (chosen.length === 1) {
        const job = await getJSON("/v1/jobs", { method: "POST", json: { real: realRef, fake: chosen[0].fake, options, label: chosen[0].label },
          headers: { "Idempotency-Key": randomKey() } });
        location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      } else {
        const batch = await getJSON("/v1/batches", { method: "POST", json: { real: realRef, fakes: chosen, options } });
        location.hash = `#/batches/${encodeURIComponent(batch.id)}`;
      }
    } catch (err) {
      replace(problem, errorBox(err));
    }
  });
  const refresh = async (msg) => { main.replaceChildren(); await render({ main, signal }, msg); };
  append(main, h("h1", {}, "Submit"), message ? h("p", { class: "ok", role: "status" }, message) : null,
    form, uploadForm(refresh));
}
