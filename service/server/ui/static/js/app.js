// The dashboard's entry point: sign-in, navigation (hash routes) and sign-out.
//
// Routes: #/jobs (list, filters and paging in the query), #/jobs/ID, #/batches/ID,
// #/compare/ID,ID,..., #/submit. Ids in routes are public object ids, never a key.

import { ApiError, getJSON, session, setToken } from "./api.js";
import { announce, errorBox, h, replace } from "./dom.js";
import { clearNames } from "./names.js";
import * as batch from "./views/batch.js";
import * as compare from "./views/compare.js";
import * as job from "./views/job.js";
import * as jobs from "./views/jobs.js";
import * as submit from "./views/submit.js";

const main = document.getElementById("main");
let current = null;

async function whoami() {
  try {
    const me = await getJSON("/ui/api/me");
    session.owner = me.owner;
    session.local = me.local_mode;
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    throw err;
  }
}

function chrome(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  document.getElementById("who-name").textContent = session.local
    ? "local mode (this server has no API keys)" : `signed in as ${session.owner}`;
  document.getElementById("sign-out").hidden = session.local;
}

function signIn(message) {
  chrome(false);
  document.title = "Sign in · w1";
  const input = h("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off",
    spellcheck: "false", required: true, "aria-describedby": "api-key-help" });
  const problem = h("div");
  const form = h("form", { class: "card narrow", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("p", { id: "api-key-help" }, "Paste an API key of this server (", h("code", {}, "w1 keys create --owner NAME"),
      " prints one). It stays in this browser tab only, and is sent in the Authorization header, never in a URL."),
    h("label", { for: "api-key" }, "API key"), input,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")), problem);
  if (message) problem.append(errorBox(message));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    input.value = "";
    try {
      if (await whoami()) {
        announce(`Signed in as ${session.owner}`);
        if (!location.hash || location.hash === "#/") location.hash = "#/jobs";
        else route();
        return;
      }
      setToken(null);
      replace(problem, errorBox("That key is not valid on this server (unknown or revoked)."));
    } catch (err) {
      setToken(null);
      replace(problem, errorBox(err));
    }
    input.focus();
  });
  replace(main, form);
  input.focus();
}

function signOut(message) {
  current?.abort();
  setToken(null);
  clearNames();
  session.owner = null;
  session.local = false;
  announce("Signed out");
  history.replaceState(null, "", "#/jobs");
  signIn(message);
}

const VIEWS = { jobs, batches: batch, compare, submit };

async function route(event) {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  try {
    if (!session.owner && !(await whoami())) {
      if (session.token) setToken(null);
      return signIn();
    }
  } catch (err) {
    return replace(main, errorBox(err));
  }
  chrome(true);
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, arg] = path.split("/").filter(Boolean);
  const view = name === "jobs" && arg ? job : VIEWS[name] || jobs;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.toggleAttribute("aria-current", link.dataset.nav === (name || "jobs") && !(name === "jobs" && arg));
  }
  main.replaceChildren();
  try {
    await view.render({ main, signal, params: new URLSearchParams(query || ""), arg: arg && decodeURIComponent(arg) });
    const title = main.querySelector("h1");
    if (event && title) {  // after a navigation, keyboard and screen reader users start at the new page's title
      title.tabIndex = -1;
      title.focus({ preventScroll: true });
    }
  } catch (err) {
    if (signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) return signOut("Your key is no longer accepted; sign in again.");
    main.append(errorBox(err));
  }
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
