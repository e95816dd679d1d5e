// The owner's uploaded data sets and generators, by id (to name a job's sources), loaded once
// per sign-in and refreshed after an upload.

import { getJSON } from "./api.js";

let cache = null;

export function clearNames() {
  cache = null;
}

export async function sources(signal) {
  if (!cache) {
    cache = Promise.all([getJSON("/v1/datasets", { signal }), getJSON("/v1/generators", { signal }),
      getJSON("/v1/catalog", { signal })])
      .then(([datasets, generators, catalog]) => ({ datasets, generators, catalog }))
      .catch((err) => { cache = null; throw err; });
  }
  return cache;
}

export async function names(signal) {
  const { datasets, generators } = await sources(signal);
  return Object.fromEntries([...datasets, ...generators].map((x) => [x.id, x.name]));
}
