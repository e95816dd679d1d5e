// The owner's uploaded data sets and generators, by id (to name a job's sources), loaded once
// per sign-in and refreshed after an upload.

import { getJSON } from "./api.js";

let cache = null;

export function clearNames() {
  cache = null;
}

// Not tied to one view's AbortSignal: the next view may share the same pending answer.
export async function sources() {
  if (!cache) {
    cache = Promise.all([getJSON("/v1/datasets"), getJSON("/v1/generators"), getJSON("/v1/catalog")])
      .then(([datasets, generators, catalog]) => ({ datasets, generators, catalog }))
      .catch((err) => { cache = null; throw err; });
  }
  return cache;
}

export async function names() {
  const { datasets, generators } = await sources();
  return Object.fromEntries([...datasets, ...generators].map((x) => [x.id, x.name]));
}
