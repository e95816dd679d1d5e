"""The dashboard (/ui) in a real browser: Debian's chromium, headless, driven by Playwright, against
a live `w1 serve` on loopback with a real worker (the ``live_service`` fixture).

One scenario walks the page as a user would: sign in, upload a set and submit a job from the page,
watch its progress and curve appear, read the result, download its JSON, submit a batch from the
page and watch its chart fill in, compare jobs (also across input spaces), follow the job list live,
cancel a running job, page and filter, sign out; a label holding markup renders as text; a second
owner sees none of the first's jobs; the browser never asks anything of another server. Beside it:
a checkpoint series' page (steps, the critics' starts, the x axis by step) next to an independent one's;
keyless local mode, and the cross-site guard that stands in for a token there.

Screenshots of each page go to a temp folder; with W1_UPDATE_SCREENSHOTS=1 they also replace the
ones committed in docs/screenshots (shown in the README).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.slow
# The machine may be shared and busy: waits are generous (a passing run never waits them out).
expect.set_options(timeout=20_000)

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("W1_TEST_CHROMIUM", "/usr/bin/chromium")
# The machine's network is closed: no background fetches, no component updates, no sign-in.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
XSS = 'ckpt <script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">'
# Predicates for wait_for_function are written as functions: the page's CSP (rightly) forbids the
# eval that Playwright would use for a bare expression.
# A job that runs a few seconds whatever the machine: the time budget ends it, not the steps.
TIMED = {"critic": "fc", "width": 32, "batch_size": 32, "eval_every": 20, "progress_every": 10, "early_stopping": False,
         "device": "cpu", "eval_samples": 64}
# The third label would run as a formula in a spreadsheet: the CSV export must defuse it.
BATCH_LABELS = ["ckpt-1000", "ckpt-2000", '=HYPERLINK("http://x") ckpt-3000']
SMALL = {"critic": "fc", "width": 16, "steps": 30, "batch_size": 32, "eval_every": 10, "device": "cpu", "eval_samples": 64}


def ref(**kw) -> str:
    """A source reference as the page's <option> values spell it (JSON.stringify)."""
    return json.dumps(kw, separators=(",", ":"))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set "
                    "W1_TEST_CHROMIUM", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")

    def take(page, name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("W1_UPDATE_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SHOTS / path.name)

    return take


@pytest.fixture(scope="module")
def sets(tmp_path_factory, make_npz):
    """8x8 grey images: a real set and three fakes further and further away from it."""
    folder = tmp_path_factory.mktemp("ui-sets")
    rng = np.random.default_rng(1)
    out = {"real": make_npz(folder / "real-digits.npz", rng.integers(0, 128, size=(400, 1, 8, 8), dtype=np.uint8))}
    for i in range(3):
        out[f"fake{i}"] = make_npz(folder / f"fake{i}.npz", rng.integers(20 + 30 * i, 150 + 30 * i, size=(300, 1, 8, 8), dtype=np.uint8))
    return out


class Page:
    """A browser tab on the dashboard that records every request it makes."""

    def __init__(self, browser, url: str):
        self.url = url
        self.context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.finished: list[str] = []
        self.context.on("requestfinished", lambda r: self.finished.append(f"{time.monotonic():.2f} done {r.url}"))
        self.context.on("requestfailed", lambda r: self.finished.append(f"{time.monotonic():.2f} FAILED {r.url} {r.failure}"))
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" and "401" not in m.text
                     and "404" not in m.text and "409" not in m.text else None)

    def go(self, route: str = "") -> None:
        self.page.goto(f"{self.url}/ui/{route}")

    def sign_in(self, token: str) -> None:
        self.page.fill("#api-key", token)
        self.page.click("#sign-in button[type=submit]")
        expect(self.page.locator("#who-name")).to_contain_text("signed in as")

    def download(self, selector: str) -> bytes:
        with self.page.expect_download() as info:
            self.page.click(selector)
        return Path(info.value.path()).read_bytes()

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:  # say what the page showed when the test failed
            print("\n".join(self.finished[-15:]))
            print(f"--- page {self.page.url}\n{self.page.locator('main').inner_text()[:4000]}\n--- problems {self.problems}")
            if os.environ.get("W1_DASHBOARD_FAILURE_SHOT"):
                self.page.screenshot(path=os.environ["W1_DASHBOARD_FAILURE_SHOT"], full_page=True)
        self.close()


# What a screen reader and a keyboard need on every page: one h1, a name for every form control and
# chart, and no control that the keyboard cannot reach.
A11Y = """() => {
    const problems = [];
    if (document.querySelectorAll("main h1").length !== 1) problems.push("not exactly one h1 in main");
    for (const el of document.querySelectorAll("input, select, textarea")) {
        if (!el.labels?.length && !el.getAttribute("aria-label")) problems.push(`unlabelled ${el.tagName} ${el.id || el.className}`);
    }
    for (const el of document.querySelectorAll("svg.chart")) {
        if (el.getAttribute("role") !== "img" || !el.getAttribute("aria-label")) problems.push("chart without a name");
    }
    for (const el of document.querySelectorAll("[onclick], div[tabindex], span[tabindex]")) problems.push(`non-native control ${el.tagName}`);
    return problems;
}"""


def accessible(page) -> None:
    assert page.evaluate(A11Y) == []


def wait_job(svc, job_id, token, timeout=120) -> dict:
    return svc.wait(job_id, timeout=timeout, token=token)


def test_dashboard_end_to_end(live_service, browser, shots, sets):
    svc, alice, bob = live_service, live_service.tokens["alice"], live_service.tokens["bob"]
    fakes = [svc.upload(sets[f"fake{i}"], token=alice).json() for i in range(3)]
    with Page(browser, svc.url) as ui:
        page = ui.page

        # / leads a browser to the dashboard; without a key it asks for one; a wrong key is refused
        page.goto(f"{svc.url}/")
        assert page.url == f"{svc.url}/ui/"
        expect(page.locator("#sign-in h1")).to_have_text("Sign in")
        shots(page, "sign-in")
        accessible(page)
        page.fill("#api-key", "w1_not-a-real-key")
        page.click("#sign-in button[type=submit]")
        expect(page.locator("#sign-in [role=alert]")).to_contain_text("not valid")
        page.fill("#api-key", "")
        page.focus("#api-key")
        page.keyboard.type(alice)  # keyboard only: type the key, Enter signs in
        page.keyboard.press("Enter")
        expect(page.locator("#who-name")).to_have_text("signed in as alice")
        expect(page.locator("main h1")).to_have_text("Jobs")
        accessible(page)
        assert page.evaluate("sessionStorage.getItem('w1.token')") == alice

        # upload the real set from the page, then submit one job from the page (label with markup)
        page.click("nav >> text=Submit")
        page.set_input_files("#upload-file", str(sets["real"]))
        page.fill("#upload-name", "real digits")
        page.click("#upload button[type=submit]")
        expect(page.locator("main [role=status]")).to_contain_text("Uploaded real digits: 400 samples")
        with svc.client(alice) as c:
            real_id = next(d["id"] for d in c.get("/v1/datasets").json() if d["name"] == "real digits")
        page.select_option("#real", ref(dataset=real_id))
        page.select_option(".fake-source", ref(dataset=fakes[0]["id"]))
        page.fill(".fake-label", XSS)
        page.fill("#time-budget", "8")
        page.select_option("#critic", "fc")
        page.fill("#steps", "100000")
        page.click("details summary")
        page.fill("#more-options", json.dumps({k: v for k, v in TIMED.items() if k != "critic"}))
        shots(page, "submit")
        accessible(page)
        page.click("#submit-button")
        expect(page.locator("main h1 .label")).to_have_text(XSS)  # markup shown as text
        job_id = page.url.rsplit("/", 1)[1]
        assert page.evaluate("window.__xss") is None and page.locator("img[src=x]").count() == 0

        # progress and the curve appear while it runs, then the result
        expect(page.locator("#progress progress")).to_be_visible(timeout=60_000)
        page.wait_for_function("() => document.querySelector('#curve polyline[data-series=objective]')?.dataset.count >= 2"
                               " && document.querySelector('[data-status=running]') !== null", timeout=60_000)
        shots(page, "job-running")
        expect(page.locator("main h1 [data-status]")).to_have_text("succeeded", timeout=60_000)
        job = wait_job(svc, job_id, alice)
        lcb = f"{job['result']['lower_confidence_bound']:.4f}"
        expect(page.locator("#headline")).to_contain_text(f"W1 ≥ {lcb}")
        expect(page.locator("#result")).to_contain_text("W1 >= (95% lower confidence bound)")
        expect(page.locator("#result tr").first).to_contain_text(lcb)
        assert page.locator("#curve polyline[data-series=validation]").count() >= 1
        expect(page.locator("#notes, section:has(h2:text('Notes'))").first).to_be_visible()
        shots(page, "job")
        accessible(page)
        saved = json.loads(ui.download("#download-result"))
        assert saved["id"] == job_id and saved["result"]["estimate"] == job["result"]["estimate"]
        curve = json.loads(ui.download("[data-artifact='curve.json']"))
        assert [p["step"] for p in curve] == [p["step"] for p in job["result"]["curve"]]

        # a job in another input space (value range [0, 1]), for the comparison's warning
        with svc.client(alice) as c:
            other = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fakes[1]["id"]}, "label": "range 0-1",
                                              "options": {**SMALL, "space": {"value_range": [0, 1]}}}).json()

        # a batch from the page: three fakes; its chart fills in item by item
        page.click("nav >> text=Submit")
        page.select_option("#real", ref(dataset=real_id))
        for i in range(3):
            if i:
                page.click("#add-fake")
            page.locator(".fake-source").nth(i).select_option(ref(dataset=fakes[i]["id"]))
            page.locator(".fake-label").nth(i).fill(BATCH_LABELS[i])
        page.fill("#time-budget", "3")
        page.fill("#steps", "100000")
        page.click("details summary")
        page.fill("#more-options", json.dumps({k: v for k, v in TIMED.items() if k not in ("critic", "width")}))  # critic: auto
        page.click("#submit-button")
        page.wait_for_url("**/ui/#/batches/*")
        batch_id = page.url.rsplit("/", 1)[1]
        before = len(ui.requests)
        page.wait_for_function("() => document.querySelectorAll('[data-point=lcb]').length >= 1 && "
                               "document.querySelectorAll('[data-point=pending]').length >= 1", timeout=120_000)
        partial = page.locator("[data-point=lcb]").count()
        expect(page.locator("[data-point=lcb]")).to_have_count(3, timeout=120_000)
        assert 1 <= partial < 3
        expect(page.locator("#batch-count")).to_have_text("3 of 3 items have a result.")
        expect(page.locator("main h1 [data-status]")).to_have_text("succeeded")
        # no polling: the batch, one event stream for its jobs, the batch again at the end
        api = [u.split("?")[0].replace(svc.url, "") for u in ui.requests[before:] if "/ui/static/" not in u]
        assert api == \
            [f"/v1/batches/{batch_id}", "/ui/api/events", f"/v1/batches/{batch_id}"]
        shots(page, "batch")
        accessible(page)
        rows = list(csv.DictReader(io.StringIO(ui.download("#export-csv").decode())))
        with svc.client(alice) as c:
            batch = c.get(f"/v1/batches/{batch_id}").json()
        assert [r["label"] for r in rows] == [*BATCH_LABELS[:2], "'" + BATCH_LABELS[2]]
        assert [float(r["lower_confidence_bound"]) for r in rows] == [j["result"]["lower_confidence_bound"] for j in batch["jobs"]]
        for job in batch["jobs"]:  # a finished job's bar is full, and with critic="auto" counts the trials too
            every_critic = sum(c["steps"] for c in job["result"]["selection"]["candidates"])  # the winner's too
            assert job["progress"]["step"] == job["progress"]["total"] == every_critic
            assert job["progress"]["phase"] == "evaluation"
        # critic="auto": the item's page lists every candidate with its validation value
        page.click(f"#batch-table a >> text=ckpt-1000")
        expect(page.locator("#candidates tbody tr")).to_have_count(len(batch["jobs"][0]["result"]["selection"]["candidates"]))
        expect(page.locator("#candidates tr.chosen")).to_contain_text("chosen")

        # compare: tick two finished jobs in the list; then the same jobs with one from another space
        assert wait_job(svc, other["id"], alice)["status"] == "succeeded"
        page.click("nav >> text=Jobs")
        page.check(f"tr[data-job='{job_id}'] input[type=checkbox]")
        page.check(f"tr[data-job='{batch['jobs'][1]['id']}'] input[type=checkbox]")
        page.click("#compare-selected")
        expect(page.locator("#compare-table thead th")).to_have_count(3)
        expect(page.locator("#compare-curves polyline")).to_have_count(2)
        assert page.locator("#space-warning").count() == 0
        shots(page, "compare")
        accessible(page)
        page.goto(f"{svc.url}/ui/#/compare/{job_id},{other['id']}")
        expect(page.locator("#space-warning")).to_contain_text("not comparable")

        # the list follows a running job live; cancel it from its page
        with svc.client(alice) as c:
            long = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fakes[2]["id"]}, "label": "long",
                                             "options": {**TIMED, "steps": 1_000_000, "time_budget_s": 120}}).json()
        page.click("nav >> text=Jobs")
        bar = page.locator(f"tr[data-job='{long['id']}'] progress")
        expect(bar).to_be_visible(timeout=60_000)
        first = int(bar.get_attribute("data-step"))
        page.wait_for_function(f"() => Number(document.querySelector(\"tr[data-job='{long['id']}'] progress\")?.dataset.step) > {first}",
                               timeout=30_000)
        shots(page, "jobs")
        accessible(page)
        page.click(f"tr[data-job='{long['id']}'] a >> text={long['id']}")
        page.click("#cancel")
        expect(page.locator("main h1 [data-status]")).to_have_text("cancelled", timeout=30_000)

        # filters and paging
        page.goto(f"{svc.url}/ui/#/jobs?status=succeeded&limit=2")
        expect(page.locator("tbody tr")).to_have_count(2)
        page.click("#older")
        expect(page.locator("tbody tr")).to_have_count(2)
        page.goto(f"{svc.url}/ui/#/jobs?label=range%200-1")
        expect(page.locator("tbody tr")).to_have_count(1)
        page.select_option("#f-status", "cancelled")
        page.fill("#f-label", "")
        page.click(".filters button")
        expect(page.locator("tbody tr")).to_have_count(1)
        expect(page.locator("tbody tr .label")).to_have_text("long")

        # sign out: the key is gone from the tab, the page asks for one again
        page.click("#sign-out")
        expect(page.locator("#sign-in")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('w1.token')") is None
        page.reload()
        expect(page.locator("#sign-in")).to_be_visible()

        # a second owner sees none of the first's jobs, through the page too
        ui.sign_in(bob)
        expect(page.locator(".empty-state")).to_have_text("No jobs here yet.")
        page.goto(f"{svc.url}/ui/#/jobs/{job_id}")
        expect(page.locator("main [role=alert]")).to_contain_text("no job")
        page.goto(f"{svc.url}/ui/#/batches/{batch_id}")
        expect(page.locator("main [role=alert]")).to_contain_text("no batch")
        with svc.client(bob) as c:
            assert c.get("/ui/api/events", params={"jobs": job_id}).status_code == 404
            assert c.get(f"/ui/api/jobs/{job_id}/rows").status_code == 404

        # nothing outside the server; the key never in a URL or the server's log; no script error
        outside = [u for u in ui.requests if not u.startswith(f"{svc.url}/") and not u.startswith(("blob:", "data:"))]
        assert outside == [], outside
        assert not [u for u in ui.requests if alice in u or bob in u]
        assert alice not in svc.log_tail(10**7) and bob not in svc.log_tail(10**7)
        assert ui.problems == [], ui.problems


# A checkpoint series (mode "series"): the steps are uneven, so an x axis by step and one by order differ.
SERIES_STEPS = [100, 200, 1000]
SERIES_OPTIONS = {**SMALL, "seed": 3, "time_budget_s": 0}


def test_series_batch_page(live_service, browser, sets):
    """A series batch's page shows what makes it a series: its checkpoint steps (a column, and the chart's
    x axis) and how each item's critic started, as the API reports them; an independent batch beside it
    keeps the plain page (no steps, no starts, items in submission order)."""
    svc, alice = live_service, live_service.tokens["alice"]
    ids = [svc.upload(sets[name], token=alice).json()["id"] for name in ("real", "fake0", "fake1", "fake2")]
    with svc.client(alice) as c:
        series = c.post("/v1/batches", json={"real": {"dataset": ids[0]}, "options": SERIES_OPTIONS, "mode": "series",
                                             "fakes": [{"label": f"ckpt-{step}", "step": step, "fake": {"dataset": i}}
                                                       for step, i in zip(SERIES_STEPS, ids[1:])]})
        plain = c.post("/v1/batches", json={"real": {"dataset": ids[0]}, "options": SMALL,
                                            "fakes": [{"label": f"plain-{k}", "fake": {"dataset": i}} for k, i in enumerate(ids[1:3])]})
        assert series.status_code == plain.status_code == 202, (series.text, plain.text)
        series, plain = series.json(), plain.json()
        assert series["mode"] == "series" and plain["mode"] == "independent"

    with Page(browser, svc.url) as ui:
        page = ui.page
        ui.go(f"#/batches/{series['id']}")
        ui.sign_in(alice)
        expect(page.locator("#batch-kind")).to_contain_text("checkpoint series")
        expect(page.locator("#batch-count")).to_have_text("3 of 3 items have a result.", timeout=180_000)
        expect(page.locator("main h1 [data-status]")).to_have_text("succeeded")
        with svc.client(alice) as c:
            batch = c.get(f"/v1/batches/{series['id']}").json()
        # where the API puts them: the step in each job's spec and summary row, the start in the result
        assert [j["spec"]["step"] for j in batch["jobs"]] == [r["step"] for r in batch["summary"]] == SERIES_STEPS
        starts = [j["result"]["series"]["start"] for j in batch["jobs"]]
        assert starts == [r["start"] for r in batch["summary"]] and starts[0] == "cold"
        assert all(s in ("warm", "fallback") for s in starts[1:]), starts

        heads = page.locator("#batch-table thead th").all_inner_texts()
        assert heads[:2] == ["item", "step"] and heads[-1] == "critic start", heads
        expect(page.locator("#batch-table td.step")).to_have_text([str(s) for s in SERIES_STEPS])
        assert [page.locator("#batch-table td.start").nth(k).get_attribute("data-start") for k in range(3)] == starts
        expect(page.locator("#batch-table td.start")).to_have_text(
            [{"cold": "cold", "warm": "warm", "fallback": "cold (fallback)"}[s] for s in starts])
        # the chart's x axis is the checkpoint step: labelled so, ticked with the steps, the points placed by step
        expect(page.locator("svg.chart .axis-label").last).to_have_text("checkpoint step")
        ticks = page.evaluate("() => [...document.querySelectorAll('svg.chart text.tick')]"
                              ".filter((t) => t.querySelector('title')).map((t) => t.firstChild.textContent)")
        assert ticks == [str(s) for s in SERIES_STEPS], ticks
        xs = [float(page.locator("[data-point=lcb]").nth(k).get_attribute("cx")) for k in range(3)]
        assert (xs[1] - xs[0]) / (xs[2] - xs[0]) == pytest.approx((200 - 100) / (1000 - 100), abs=0.01), xs
        rows = list(csv.DictReader(io.StringIO(ui.download("#export-csv").decode())))
        assert [(int(r["step"]), r["start"], r["warm_started"]) for r in rows] == \
            [(s, start, str(start == "warm").lower()) for s, start in zip(SERIES_STEPS, starts)]
        accessible(page)

        # an independent batch: as before
        page.goto(f"{svc.url}/ui/#/batches/{plain['id']}")
        expect(page.locator("#batch-count")).to_have_text("2 of 2 items have a result.", timeout=180_000)
        expect(page.locator("#batch-kind")).to_contain_text("One real set against each fake.")
        heads = page.locator("#batch-table thead th").all_inner_texts()
        assert "step" not in heads and "critic start" not in heads, heads
        assert page.locator("#batch-table td.step, #batch-table td.start").count() == 0
        expect(page.locator("svg.chart .axis-label").last).to_have_text("item (label, in submission order)")
        ticks = page.evaluate("() => [...document.querySelectorAll('svg.chart text.tick')]"
                              ".filter((t) => t.querySelector('title')).map((t) => t.firstChild.textContent)")
        assert ticks == ["plain-0", "plain-1"], ticks
        assert ui.problems == [], ui.problems


def test_page_headers_and_helpers(live_service):
    with httpx.Client(base_url=live_service.url) as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert c.get("/ui/static/js/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/static/../app.py").status_code == 404
        assert c.get("/ui/static/nothing.js").status_code == 404
        assert c.get("/").json()["ui"] == "/ui/"
        assert c.get("/ui/api/me").status_code == 401  # keys exist: the helpers need one too
        me = c.get("/ui/api/me", headers={"Authorization": f"Bearer {live_service.tokens['bob']}"}).json()
        assert me == {"owner": "bob", "local_mode": False}
    # every file the page loads ships in the package (no CDN): index.html names only /ui/static
    html = (ROOT / "service" / "server" / "ui" / "static" / "index.html").read_text()
    assert "http" not in html.replace("http-equiv", "")


@pytest.fixture
def keyless_service(tmp_path):
    """`w1 serve --workers 0` with no API key: the keyless local mode."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    env.update(W1_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    log = open(tmp_path / "api.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--workers", "0", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"keyless API did not start: {(tmp_path / 'api.log').read_text()[-2000:]}")
    first_line = (tmp_path / "api.log").read_text().splitlines()[0]
    assert f"API on {url} (dashboard at /ui/" in first_line, first_line  # `w1 serve` points to the page
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def another_site():
    """A page on another site (http://localhost:PORT against the API's http://127.0.0.1)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another site</title><p>another site</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_port}/"
    server.shutdown()


def test_local_mode_page_and_cross_site_guard(keyless_service, browser, sets, another_site):
    url = keyless_service
    with Page(browser, url) as ui:
        ui.go()
        expect(ui.page.locator("#who-name")).to_have_text("local mode (this server has no API keys)")
        expect(ui.page.locator("main h1")).to_have_text("Jobs")
        assert ui.page.locator("#sign-out").is_hidden() and ui.page.locator("#sign-in").count() == 0

            # another site's page (http://localhost:OTHER, a real server) cannot make the user's browser
        # change anything here (no token to stop it in local mode)
        other = ui.context.new_page()
        other.goto(another_site)
        other.evaluate("""async ([url, bytes]) => {
            const body = new FormData();
            body.append("file", new Blob([new Uint8Array(bytes)]), "x.npz");
            await fetch(url + "/v1/datasets", {method: "POST", mode: "no-cors", body}).catch(() => {});
        }""", [url, list(Path(sets["fake0"]).read_bytes())])
        assert httpx.get(f"{url}/v1/datasets").json() == []
        with open(sets["fake0"], "rb") as f:
            content = f.read()
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site"}):
            r = httpx.post(f"{url}/v1/datasets", files={"file": ("x.npz", content)}, headers=headers)
            assert r.status_code == 403 and "cross-site" in r.json()["detail"], (headers, r.text)
        assert httpx.get(f"{url}/v1/datasets").json() == []
        # the page itself (same origin) and clients that are not browsers still may
        ui.go("#/submit")
        ui.page.set_input_files("#upload-file", str(sets["fake0"]))
        ui.page.click("#upload button[type=submit]")
        expect(ui.page.locator("main [role=status]")).to_contain_text("Uploaded fake0")
        r = httpx.post(f"{url}/v1/datasets", files={"file": ("y.npz", content)}, headers={"Origin": url})
        assert r.status_code == 200, r.text  # the same content: the existing data set
        assert len(httpx.get(f"{url}/v1/datasets").json()) == 1
        assert ui.problems == [], ui.problems
