"""Series batches on the service (issue 13): a 5-item series of checkpoints (digits contracted toward their
mean, W1 known) runs in order on one worker with warm-started critics, on the embedded default and on
Redis + PostgreSQL; its results equal a library run of the same series; a SIGKILLed worker's series
resumes at the current item with the carried critic; cancelling keeps the finished items; an independent
batch keeps running beside a series."""
import re
import signal
import threading
import time
from datetime import datetime

import numpy as np
import pytest

pytestmark = pytest.mark.slow

S = (0.5, 0.6, 0.7, 0.8, 0.9)
OPTIONS = {"critic": "fc", "width": 32, "steps": 60, "batch_size": 32, "eval_every": 20, "device": "cpu",
           "progress_every": 5, "checkpoint_every": 10, "seed": 5, "time_budget_s": 0}


@pytest.fixture(scope="module")
def series_files(tmp_path_factory):
    """The real digits (uint8) and five checkpoints contracting them toward their mean image."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("series")
    x = load_digits().images[:400, None].astype(np.float64) * (255 / 16)
    c = x.mean(axis=0, keepdims=True)
    np.save(folder / "real.npy", np.round(x).astype(np.uint8))
    paths = []
    for k, s in enumerate(S):
        paths.append(folder / f"ckpt_{(k + 1) * 1000:06d}.npy")
        np.save(paths[-1], np.round(c + s * (x - c)).astype(np.uint8))
    return folder / "real.npy", paths


def submit_series(client, svc, real, fakes, options, mode="series"):
    ids = [svc.upload(p).json()["id"] for p in (real, *fakes)]
    body = {"real": {"dataset": ids[0]}, "options": options, "mode": mode,
            "fakes": [{"label": p.stem, "step": (k + 1) * 1000, "fake": {"dataset": i}}
                      for k, (p, i) in enumerate(zip(fakes, ids[1:]))]}
    r = client.post("/v1/batches", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def library_series(real, fakes, options):
    from training.series import estimate_series

    return estimate_series(str(real), [str(p) for p in fakes], options=options)


def wait_for_step(c, svc, job_id: str, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (c.get(f"/v1/jobs/{job_id}").json()["progress"] or {}).get("step", 0) < step:
        assert time.monotonic() < deadline, svc.log_tail()
        time.sleep(0.1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_finished_series(c, svc, batch, real, fakes, options):
    jobs = [svc.wait(j["id"], timeout=600) for j in batch["jobs"]]
    assert all(j["status"] == "succeeded" for j in jobs), svc.log_tail()
    for before, after in zip(jobs, jobs[1:]):  # one chain, in order
        assert at(after["started_at"]) >= at(before["finished_at"])
    out = c.get(f"/v1/batches/{batch['id']}").json()
    assert out["mode"] == "series" and out["status"] == "succeeded"
    rows = out["summary"]
    assert [(r["label"], r["step"]) for r in rows] == [(p.stem, (k + 1) * 1000) for k, p in enumerate(fakes)]
    assert rows[0]["start"] == "cold" and rows[0]["warm_started"] is False
    assert all(r["start"] in ("warm", "fallback") for r in rows[1:])
    assert all(r["certified_ci_low"] <= r["certified_lower_bound"] <= r["certified_ci_high"] for r in rows)
    lib = library_series(real, fakes, options)  # the same chain, here: the same numbers
    for job, item in zip(jobs, lib.items):
        assert job["result"]["series"]["start"] == item.start
        assert job["result"]["estimate"] == pytest.approx(item.estimate, rel=1e-5, abs=1e-6)
    assert c.get(f"/v1/batches/{batch['id']}/artifacts").json()["items"] == ["series.json", "series.csv", "series.png"]
    series = c.get(f"/v1/batches/{batch['id']}/artifacts/series.json").json()
    assert [it["label"] for it in series["items"]] == [p.stem for p in fakes]
    csv_text = c.get(f"/v1/batches/{batch['id']}/artifacts/series.csv").text
    assert csv_text.count("\n") == 1 + len(fakes)
    assert c.get(f"/v1/batches/{batch['id']}/artifacts/series.png").content[:4] == b"\x89PNG"
    return jobs


def test_series_on_the_embedded_default(live_service, series_files):
    real, fakes = series_files
    with live_service.client() as c:
        batch = submit_series(c, live_service, real, fakes, OPTIONS)
        assert batch["mode"] == "series" and [j["status"] for j in batch["jobs"]] == ["queued"] * 5
        check_finished_series(c, live_service, batch, real, fakes, OPTIONS)
        missing = c.get(f"/v1/batches/{batch['id']}/artifacts/curve.png")
        assert missing.status_code == 404 and "series.json" in missing.json()["detail"]


def test_sigkilled_worker_resumes_the_series_at_its_current_item(make_service, series_files):
    real, fakes = series_files
    # a warm item trains at most 375 steps; batches of 256 make them slow enough for the kill to land mid-item
    opts = dict(OPTIONS, steps=375, batch_size=256, early_stopping=False)
    svc = make_service(workers=1, W1_STALE_AFTER_S="10")  # a loaded machine's heartbeat is not taken for a death
    with svc.client() as c:
        batch = submit_series(c, svc, real, fakes, opts)
        wait_for_step(c, svc, batch["jobs"][2]["id"], 60)
        svc.kill_worker(sig=signal.SIGKILL)
        svc.start_worker()
        jobs = check_finished_series(c, svc, batch, real, fakes, opts)
    assert [j["attempts"] for j in jobs] == [1, 1, 2, 1, 1], svc.log_tail()
    assert jobs[2]["result"]["series"]["start"] == "warm"  # resumed with the carried critic


def test_cancel_stops_the_series_and_keeps_finished_items(make_service, series_files):
    real, fakes = series_files
    opts = dict(OPTIONS, steps=375, batch_size=256, early_stopping=False)  # slow enough for the cancel to land mid-item
    svc = make_service(workers=1)
    with svc.client() as c:
        batch = submit_series(c, svc, real, fakes, opts)
        second = batch["jobs"][1]["id"]
        wait_for_step(c, svc, second, 20)
        r = c.post(f"/v1/batches/{batch['id']}/cancel")
        assert r.status_code == 202, r.text
        jobs = [svc.wait(j["id"], timeout=120) for j in batch["jobs"]]
        assert [j["status"] for j in jobs] == ["succeeded", "cancelled", "cancelled", "cancelled", "cancelled"]
        assert jobs[0]["result"]["series"]["index"] == 0
        out = c.get(f"/v1/batches/{batch['id']}").json()
        assert out["summary"][0]["lower_confidence_bound"] is not None
        series = c.get(f"/v1/batches/{batch['id']}/artifacts/series.json").json()
        assert [it["index"] for it in series["items"]] == [0]
        assert c.post("/v1/batches/batch_nope/cancel").status_code == 404


def test_series_on_redis_and_postgres_beside_an_independent_batch(make_service, redis_url, fresh_postgres_url,
                                                                 series_files):
    real, fakes = series_files
    svc = make_service(workers=2, W1_BROKER_URL=redis_url.replace("/0", "/3"), W1_DATABASE_URL=fresh_postgres_url)
    with svc.client() as c:
        series = submit_series(c, svc, real, fakes, OPTIONS)
        parallel = submit_series(c, svc, real, fakes[:2], dict(OPTIONS, steps=400, early_stopping=False),
                                 mode="independent")
        jobs = check_finished_series(c, svc, series, real, fakes, OPTIONS)
        others = [svc.wait(j["id"], timeout=600) for j in parallel["jobs"]]
    assert all(j["status"] == "succeeded" for j in others)
    assert all(j["result"]["series"] is None for j in others)  # independent jobs are plain estimates
    # the independent jobs ran while the series' chain was running (two workers)
    assert min(at(j["started_at"]) for j in others) < at(jobs[-1]["finished_at"])


def test_w1_series_server_and_w1_batch_series(live_service, series_files, tmp_path):
    """The client commands: `w1 series --server` follows the series and writes JSON, CSV and the plot from
    the batch's artifacts; `w1 batch --series` runs a spec as a series and writes PREFIX.csv/.json/.png."""
    from click.testing import CliRunner

    from service.cli import main
    from training.series_result import SeriesResult

    real, fakes = series_files
    env = {"W1_TOKEN": live_service.token, "COLUMNS": "200"}
    opts = ["--critic", "fc", "--width", "32", "--steps", "40", "--eval-every", "20", "--device", "cpu", "--time", "0"]
    out = {k: tmp_path / f"remote.{k}" for k in ("json", "csv", "png")}
    res = CliRunner().invoke(main, ["series", str(real), *map(str, fakes[:3]), "--steps-from-names", *opts,
                                    "--server", live_service.url, f"--json={out['json']}", f"--csv={out['csv']}",
                                    "--plot", str(out["png"])], env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "W1 over checkpoints" in res.output and fakes[2].stem in res.output
    series = SeriesResult.from_json(out["json"].read_text())
    assert [it.step for it in series.items] == [1000, 2000, 3000] and series.items[1].start in ("warm", "fallback")
    assert out["csv"].read_text().count("\n") == 4 and out["png"].read_bytes()[:4] == b"\x89PNG"
    _artifact_reads_survive_rewrites(live_service, re.search(r"series batch (batch_\w+)", res.output).group(1))
    res = CliRunner().invoke(main, ["series", str(real), str(fakes[0]), "--server", live_service.url, "--cold"],
                             env=env)
    assert res.exit_code == 1 and "--cold and --checkpoint-dir are for a series run here" in res.output

    spec = tmp_path / "run.yaml"
    spec.write_text(f"real: {real}\noptions: {{critic: fc, width: 32, steps: 40, device: cpu, time_budget_s: 0}}\n"
                    "fakes:\n" + "".join(f"  - {{label: k{k}, source: {p}, step: {k}}}\n"
                                          for k, p in enumerate(fakes[:2])))
    res = CliRunner().invoke(main, ["batch", str(spec), "--series", "--server", live_service.url],
                             env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0].startswith("index,label,step,start") and rows[1].startswith("0,k0,0,cold")


def _artifact_reads_survive_rewrites(live_service, batch_id: str) -> None:
    """The series rewrites its artifacts after every item (a temporary file renamed over the old one, as
    service.server.series does) while clients read them: every read gets one whole version. (Served by
    path, a read could take its length from one version and its bytes from the next, and the client saw
    'peer closed connection without sending complete message body'.)"""
    folder = live_service.data_dir / "batches" / batch_id / "artifacts"
    versions = [b"index,label\n" + b"0,a\n" * 3000, b"index,label\n0,a\n"]
    done = threading.Event()

    def rewrite():
        k = 0
        while not done.is_set():
            tmp = folder / ".series.csv.tmp.csv"
            tmp.write_bytes(versions[k % 2])
            tmp.replace(folder / "series.csv")
            k += 1

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        with live_service.client() as c:
            for _ in range(200):
                r = c.get(f"/v1/batches/{batch_id}/artifacts/series.csv")
                assert r.status_code == 200 and r.content in versions, (r.status_code, len(r.content))
                assert r.headers["content-disposition"] == 'attachment; filename="series.csv"'
    finally:
        done.set()
        writer.join()
