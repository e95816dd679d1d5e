"""The client commands (`w1 submit`, `w1 jobs ...`, `w1 batch`) and W1Client against a real server
on loopback (the `live_service` fixture: uvicorn + a worker), with real files."""
from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from service.cli import main
from service.client import W1Client, W1Error, parse_source
from service.client.sources import LocalDataset

pytestmark = pytest.mark.slow

# A tiny, fast estimate: Björck MLP critic on 8x8 grey images.
FAST = ["-o", "critic=fc", "-o", "width=16", "-o", "steps=30", "-o", "batch_size=32", "-o", "eval_every=10",
        "-o", "device=cpu", "-o", "progress_every=5"]
FAST_OPTIONS = {"critic": "fc", "width": 16, "steps": 30, "batch_size": 32, "eval_every": 10, "device": "cpu",
                "progress_every": 5}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Two sample files whose W1 is clearly positive (the fake side is brighter)."""
    folder = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(0)
    real = rng.integers(0, 128, size=(256, 1, 8, 8), dtype=np.uint8)
    fake = rng.integers(100, 256, size=(256, 1, 8, 8), dtype=np.uint8)
    np.savez(folder / "real.npz", images=real)
    np.savez(folder / "fake.npz", images=fake)
    np.save(folder / "fake2.npy", fake[:200])
    return folder


@pytest.fixture
def w1(live_service):
    """Run `w1 ...` in-process against the live server; returns the click Result."""
    runner = CliRunner()
    env = {"W1_SERVER": live_service.url, "W1_TOKEN": live_service.token or ""}

    def run(*args: str, expect: int | None = 0, columns: int = 200):
        """`columns`: the terminal's width (wide by default, so rich does not fold the labels)."""
        result = runner.invoke(main, list(args), env={**env, "COLUMNS": str(columns)}, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, result.output
        return result

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_wait_show_list(w1, samples, live_service, tmp_path):
    real, fake = str(samples / "real.npz"), str(samples / "fake.npz")
    result = w1("submit", real, fake, *FAST, "--label", "cli-wait", "--wait")
    assert "W1 estimate (critic's held-out dual value)" in result.stdout and "certified lower bound" in result.stdout

    job = json.loads(w1("submit", real, fake, *FAST, "--label", "cli-json", "--json").stdout)
    assert job["status"] in ("queued", "running") and job["label"] == "cli-json"
    done = json.loads(w1("jobs", "wait", job["id"], "--json").stdout)
    assert done["status"] == "succeeded"
    assert done["result"]["estimate"] > 0
    assert done["result"]["certified_lower_bound"] <= done["result"]["estimate"] + 1e-9
    # the same file uploaded twice is one dataset on the server
    first = json.loads(w1("jobs", "list", "--label", "cli-wait", "--json").stdout)[0]
    assert first["spec"]["real"] == job["spec"]["real"] and first["status"] == "succeeded"

    shown = json.loads(w1("jobs", "show", job["id"], "--json").stdout)
    assert shown["id"] == job["id"] and shown["result"] == done["result"]
    shown = w1("jobs", "show", job["id"], "--download", str(tmp_path / "artifacts"))
    assert "succeeded" in shown.stdout and "Lipschitz bound" in shown.stdout
    saved = {p.name for p in (tmp_path / "artifacts").iterdir()}
    assert {"curve.json", "curve.png", "critic.pt"} <= saved

    listed = w1("jobs", "list", "--limit", "5").stdout
    assert job["id"] in listed and "cli-json" in listed
    succeeded = json.loads(w1("jobs", "list", "--status", "succeeded", "--json").stdout)
    assert job["id"] in {j["id"] for j in succeeded}
    assert all(j["status"] == "succeeded" for j in succeeded)

    # the library: polling instead of SSE, artifacts
    with W1Client(live_service.url, live_service.token) as client:
        polled = client.wait_job(job["id"], use_events=False, timeout=30)
        assert polled["status"] == "succeeded"
        names = client.list_artifacts(job["id"])
        assert "curve.json" in names
        path = client.download_artifact(job["id"], "curve.json", tmp_path)
        assert json.loads(path.read_text())


def test_wait_follows_progress_events(live_service, samples):
    """`wait_job` on the SSE stream sees progress events and the final status."""
    seen: list[str] = []
    with W1Client(live_service.url, live_service.token) as client:
        job = client.submit_job("catalog:digits", samples / "fake2.npy",
                                options=FAST_OPTIONS, label="sse")
        assert job["spec"]["real"] == {"catalog": "digits"}
        final = client.wait_job(job["id"], on_update=lambda event, data: seen.append(event),
                                timeout=120)
    assert final["status"] == "succeeded"
    assert "progress" in seen and seen[-1] == "status"


def test_cancel(w1, samples, live_service):
    long = ["-o", "critic=fc", "-o", "width=16", "-o", "steps=1000000", "-o", "early_stopping=false",
            "-o", "device=cpu", "-o", "batch_size=8"]
    job_id = w1("submit", str(samples / "real.npz"), str(samples / "fake.npz"), *long).stdout.strip()
    assert "cancel requested" in w1("jobs", "cancel", job_id).stdout
    result = w1("jobs", "wait", job_id, "--timeout", "120", expect=1)
    assert f"job {job_id} cancelled" in result.output
    again = w1("jobs", "cancel", job_id, expect=1)
    assert "already finished" in again.output


def test_tables_keep_every_column_in_a_pipe(live_service, tmp_path):
    """Piped or logged (not a terminal, no COLUMNS), a table is as wide as its columns: nothing is
    fitted to 80 columns, folded or dropped."""
    name = "checkpoints-of-a-generator-with-a-rather-long-descriptive-name-epoch-0123.npz"
    np.savez(tmp_path / name, images=np.random.default_rng(7).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8))
    env = {"W1_SERVER": live_service.url, "W1_TOKEN": live_service.token, "COLUMNS": None}
    runner = CliRunner()
    assert runner.invoke(main, ["datasets", "add", str(tmp_path / name)], env=env).exit_code == 0
    listed = runner.invoke(main, ["datasets", "list"], env=env).stdout
    header = next(line for line in listed.splitlines() if " id " in line)
    assert all(f" {h} " in header for h in ("name", "format", "count", "shape", "size bytes", "created at")), listed
    assert any(name in line for line in listed.splitlines()) and max(map(len, listed.splitlines())) > 80, listed
    jobs = runner.invoke(main, ["jobs", "list"], env=env).stdout
    assert all(f" {h} " in jobs for h in ("status", "label", "progress", "estimate", "created")), jobs


def test_jobs_list_limit_is_the_servers(w1, live_service):
    """`--limit` accepts what the server serves (at most 500) and refuses the rest before asking."""
    assert w1("jobs", "list", "--limit", "500").exit_code == 0
    with W1Client(live_service.url, token=live_service.token) as client, pytest.raises(W1Error) as err:
        client.list_jobs(limit=501)
    assert err.value.status == 422
    refused = w1("jobs", "list", "--limit", "800", expect=2)
    assert "'--limit': 800 is not in the range 1<=x<=500" in refused.output


def test_batch_writes_csv_and_json(w1, samples, tmp_path):
    spec = tmp_path / "ckpts.yaml"
    spec.write_text(
        f"real: {samples / 'real.npz'}\n"
        f"options: {json.dumps(FAST_OPTIONS)}\n"
        "fakes:\n"
        f"  - {{label: epoch1, source: {samples / 'fake.npz'}}}\n"
        f"  - {{label: epoch2, source: {samples / 'fake2.npy'}}}\n")
    result = w1("batch", str(spec), columns=80)
    assert "epoch1" in result.stdout and "epoch2" in result.stdout
    with (tmp_path / "ckpts.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["epoch1", "epoch2"]
    assert all(r["status"] == "succeeded" and float(r["estimate"]) > 0 for r in rows)
    assert all(float(r["ci_low"]) <= float(r["estimate"]) <= float(r["ci_high"]) for r in rows)
    # the number to rank checkpoints by, as the server's summary and `w1 series` give it
    assert list(rows[0])[:4] == ["label", "job_id", "status", "lower_confidence_bound"]
    assert all(0 <= float(r["lower_confidence_bound"]) <= float(r["certified_lower_bound"]) for r in rows)
    data = json.loads((tmp_path / "ckpts.json").read_text())
    assert data["batch_id"] and len(data["jobs"]) == 2
    assert {r["job_id"] for r in data["summary"]} == {j["id"] for j in data["jobs"]}
    assert [r["lower_confidence_bound"] for r in data["summary"]] == \
        [j["result"]["lower_confidence_bound"] for j in data["jobs"]]
    wide = w1("batch", str(spec), "--out", str(tmp_path / "wide"), columns=250).stdout
    header = next(line for line in wide.splitlines() if "label" in line)
    assert "W1 >= (95% LCB)" in header and "W1 estimate" in header and "Lipschitz bound" in header, wide
    assert f"{float(next(csv.DictReader((tmp_path / 'wide.csv').open()))['lower_confidence_bound']):.6g}" in wide


def test_batch_relative_paths_and_out_prefix(w1, samples, tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("real.npz", "fake.npz"):
        (tmp_path / "data" / name).write_bytes((samples / name).read_bytes())
    spec = tmp_path / "spec.yaml"
    spec.write_text("real: data/real.npz\n"
                    f"options: {json.dumps(FAST_OPTIONS)}\n"
                    "fakes:\n  - source: data/fake.npz\n")
    (tmp_path / "out").mkdir()
    w1("batch", str(spec), "--out", str(tmp_path / "out" / "run"))
    rows = list(csv.DictReader((tmp_path / "out" / "run.csv").open()))
    assert rows[0]["label"] == "fake" and rows[0]["status"] == "succeeded"


@pytest.mark.parametrize("text, message", [
    ("real: a.npz\nfake:\n  - {label: x, source: b.npz}\n", "spec.yaml: unknown key 'fake'"),
    ("fakes:\n  - {label: x, source: b.npz}\n", "spec.yaml: missing key 'real'"),
    ("real: a.npz\nfakes:\n  - {label: x}\n", "spec.yaml: fakes[0].source: missing"),
    ("real: a.npz\nfakes:\n  - {label: x, source: b.npz, steps: 3}\n",
     "spec.yaml: fakes[0]: unknown key 'steps'"),
    ("real: a.npz\nfakes: [{label: x, source: b.npz}, {label: x, source: c.npz}]\n",
     "spec.yaml: fakes[1].label: 'x' is used twice"),
    ("real: a.npz\noptions: [1]\nfakes:\n  - {source: b.npz}\n", "spec.yaml: 'options' must be"),
    ("real: [a.npz\n", "spec.yaml: not valid YAML"),
])
def test_batch_spec_errors(w1, tmp_path, text, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    result = w1("batch", str(spec), expect=1)
    assert message in result.output
    assert "Traceback" not in result.output


def test_clear_errors(w1, samples, live_service, tmp_path):
    real = str(samples / "real.npz")
    missing = w1("submit", real, str(tmp_path / "nope.npz"), expect=1)
    assert "nope.npz: no such file" in missing.output

    bad_option = w1("submit", real, str(samples / "fake.npz"), "-o", "steps=-1", expect=1)
    assert "options.steps" in bad_option.output and "HTTP 422" in bad_option.output

    unknown = w1("jobs", "show", "job_does_not_exist", expect=1)
    assert "HTTP 404" in unknown.output

    wrong = w1("jobs", "list", "--token", "not-a-real-token", expect=1)
    assert "rejected the API token" in wrong.output

    port = free_port()
    down = w1("jobs", "list", "--server", f"http://127.0.0.1:{port}", expect=1)
    assert f"cannot reach the w1 server at http://127.0.0.1:{port}" in down.output

    bad_json = tmp_path / "opts.json"
    bad_json.write_text("{steps: 3")
    result = w1("submit", real, real, "--options-json", str(bad_json), expect=1)
    assert "opts.json: not valid JSON" in result.output

    with pytest.raises(W1Error, match="unsupported file type"):
        W1Client(live_service.url).resolve_source(str(bad_json))

    # a folder's upload refused: the error names the folder, not the archive written for it
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "0.png").write_bytes(b"not a png at all")
    refused = w1("submit", real, str(corrupt), expect=1)
    assert f"{corrupt}: upload refused" in refused.output and "w1-upload-" not in refused.output, refused.output


def test_parse_source(tmp_path):
    assert parse_source("catalog:cifar10") == {"catalog": "cifar10"}
    assert parse_source("dataset:ds_1") == {"dataset": "ds_1"}
    assert parse_source("generator:gen_1") == {"generator": "gen_1"}
    assert parse_source("generator:gen_1:5000") == {"generator": "gen_1", "samples": 5000}
    for bad, message in [("generator:gen_1:many", "must be an integer"),
                         ("generator:gen_1:0", "must be positive"), ("catalog:", "missing the name"),
                         (str(tmp_path / "x.npz"), "no such file")]:
        with pytest.raises(W1Error, match=message):
            parse_source(bad)
    (tmp_path / "ok.tgz").write_bytes(b"")
    assert parse_source(str(tmp_path / "ok.tgz")) == LocalDataset(str(tmp_path / "ok.tgz"), path=tmp_path / "ok.tgz")
    assert parse_source("torchvision:cifar10?root=/data&split=test") == {"catalog": "cifar10"}
    two = tmp_path / "two.npz"
    np.savez(two, a=np.zeros((3, 4, 4), np.uint8), b=np.ones((5, 4, 4), np.float32))
    local = parse_source(f"{two}#b")
    assert local.key == "b" and local.name == "two.npz#b"
    from service.client.sources import prepare

    with np.load(prepare(local, tmp_path)) as only:
        assert only.files == ["images"] and only["images"].shape == (5, 4, 4)
    with pytest.raises(W1Error, match="no array named 'c'"):
        W1Client("http://127.0.0.1:9").resolve_source(f"{two}#c")
    assert parse_source("builtin:digits?classes=0").builtin.classes == (0,)
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"")
    gen = parse_source(f"onnx:{onnx}?latent=100,1,1&dist=uniform&output_range=0,1")
    assert (gen.latent, gen.dist, gen.output_range) == ((100, 1, 1), "uniform", (0.0, 1.0))
    with pytest.raises(W1Error, match="TorchScript generators are not uploaded"):
        parse_source(f"torchscript:{onnx}?latent=4")
    with pytest.raises(W1Error, match="unknown source scheme"):
        parse_source("s3:bucket/x.npz")


def test_folder_archives_are_deterministic(tmp_path):
    """The same folder gives the same bytes (so the server's copy is found by sha256); only images."""
    import os

    from service.client.sources import archive_folder, sha256_of

    folder = _png_folder(tmp_path / "imgs", np.zeros((3, 1, 4, 4), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    first = archive_folder(folder, tmp_path / "a.tar")
    for p in folder.iterdir():
        os.utime(p, (1, 1))  # other times, same content
    second = archive_folder(folder, tmp_path / "b.tar")
    assert sha256_of(first) == sha256_of(second)
    import tarfile

    with tarfile.open(first) as tar:
        assert tar.getnames() == ["000.png", "001.png", "002.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(W1Error, match="no PNG or JPEG"), W1Client("http://127.0.0.1:9") as client:
        client.resolve_source(str(tmp_path / "empty"))  # refused before any request


def test_error_is_one_line_without_traceback():
    """As a real process: one line on stderr, exit status 1."""
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "service.cli", "jobs", "list",
                           "--server", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "cannot reach" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wait_rides_out_an_api_restart(live_service, samples):
    """A client waiting on a job keeps waiting while the API restarts (an upgrade, a crash)."""
    outcome: dict = {}
    options = {**FAST_OPTIONS, "steps": 400, "early_stopping": False}
    with W1Client(live_service.url, live_service.token, reconnect_s=90) as client:
        job = client.submit_job(samples / "real.npz", samples / "fake.npz", options=options)
        waiter = threading.Thread(target=lambda: outcome.update(
            client.wait_job(job["id"], poll_interval=0.2, timeout=240)))
        waiter.start()
        time.sleep(1.0)
        live_service.restart_api()
        waiter.join(timeout=260)
    assert outcome.get("status") == "succeeded", outcome


# -- one vocabulary of sources: what `w1 estimate` takes, `w1 submit` takes ------------------------

def _png_folder(folder, arrays):
    from PIL import Image

    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a[0]).save(folder / f"{i:03d}.png")
    (folder / ".hidden").mkdir()  # skipped, like `w1 estimate` skips it
    return folder


def _onnx_generator(path):
    """A tiny ONNX generator: 4 latent dims -> 1x8x8 images in (-1, 1)."""
    import warnings

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 8, 8))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 4),), str(path), dynamo=False, input_names=["z"],
                          output_names=["x"], dynamic_axes={"z": {0: "n"}, "x": {0: "n"}})
    return path


def test_submit_with_the_default_options(w1, samples):
    """The README's `w1 submit real.npz fake.npz --wait` with nothing but a time budget: the server stores
    the resolved options (critic auto, conv bcop) and its worker runs them as they are."""
    result = w1("submit", str(samples / "real.npz"), str(samples / "fake.npz"), "-o", "time_budget_s=4", "--wait")
    assert "critic choice (validation, certified)" in result.stdout, result.stdout
    assert "succeeded" in result.stdout


def test_submit_folder_reuses_the_server_copy(w1, samples, tmp_path):
    """README: `w1 submit real.npz fake_images/ --wait`; a second submit sends nothing."""
    fake = np.load(samples / "fake.npz")["images"][:64]
    folder = _png_folder(tmp_path / "fake_images", fake)
    first = w1("submit", str(samples / "real.npz"), str(folder), *FAST, "--wait")
    assert "W1 estimate (critic's held-out dual value)" in first.stdout
    assert "uploading fake_images.tar" in first.stderr
    listed = json.loads(w1("datasets", "list", "--json").stdout)
    mine = [d for d in listed if d["name"] == "fake_images.tar"]
    assert len(mine) == 1 and mine[0]["count"] == 64 and mine[0]["shape"] == [1, 8, 8]

    again = w1("submit", str(samples / "real.npz"), str(folder), *FAST)
    assert "uploading" not in again.stderr  # same sha256: the server's copy is used
    assert len(json.loads(w1("datasets", "list", "--json").stdout)) == len(listed)
    w1("jobs", "wait", again.stdout.strip())

    assert "fake_images.tar" in w1("datasets", "show", mine[0]["id"]).stdout
    assert json.loads(w1("datasets", "show", mine[0]["id"], "--json").stdout) == mine[0]
    assert mine[0]["id"] in w1("datasets", "list").stdout


def test_submit_builtin_and_onnx_spec(w1, samples, tmp_path):
    """builtin: is made here and uploaded; an onnx: spec uploads the generator with its latent spec."""
    gen = _onnx_generator(tmp_path / "gen.onnx")
    spec = f"onnx:{gen}?latent=4&dist=uniform&output_range=-1,1"
    job = json.loads(w1("submit", "builtin:digits?classes=0", spec, *FAST, "-o", "eval_samples=300",
                        "--wait", "--json").stdout)
    assert job["status"] == "succeeded" and job["result"]["estimate"] > 0
    assert job["spec"]["fake"]["samples"] == 300
    assert job["result"]["samples"]["real_train"] + job["result"]["samples"]["real_heldout"] < 178

    generators = json.loads(w1("generators", "list", "--json").stdout)
    ours = [g for g in generators if g["id"] == job["spec"]["fake"]["generator"]]
    assert ours and ours[0]["latent_shape"] == [4] and ours[0]["latent_distribution"] == "uniform"
    assert ours[0]["output_shape"] == [1, 8, 8]
    # `generators add` of the same model and spec: the same generator, nothing sent
    added = w1("generators", "add", str(gen), "--dist", "uniform")  # latent read from the model
    assert added.stdout.strip() == ours[0]["id"] and "uploading" not in added.stderr
    assert "uniform" in w1("generators", "show", ours[0]["id"]).stdout

    listed = json.loads(w1("datasets", "list", "--json").stdout)
    digits = [d for d in listed if d["name"] == "builtin:digits?classes=0"]
    assert len(digits) == 1 and digits[0]["count"] == 178
    # delete: gone from the list, and show answers 404
    w1("datasets", "delete", digits[0]["id"])
    assert digits[0]["id"] not in w1("datasets", "list").stdout
    assert "HTTP 404" in w1("datasets", "show", digits[0]["id"], expect=1).output


def test_batch_with_a_folder_and_an_onnx_spec(w1, samples, tmp_path):
    """Relative folder and onnx: paths in a batch spec are relative to the spec; the table fits 80 columns."""
    fake = np.load(samples / "fake.npz")["images"][64:128]
    _png_folder(tmp_path / "epoch1", fake)
    _onnx_generator(tmp_path / "gen.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"real: {samples / 'real.npz'}\n"
                    f"options: {json.dumps({**FAST_OPTIONS, 'eval_samples': 200})}\n"
                    "fakes:\n  - source: epoch1/\n"
                    "  - {label: final, source: 'onnx:gen.onnx?latent=4'}\n")
    result = w1("batch", str(spec), columns=80)
    rows = list(csv.DictReader((tmp_path / "spec.csv").open()))
    assert [r["label"] for r in rows] == ["epoch1", "final"]
    assert all(r["status"] == "succeeded" for r in rows)
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "…" not in result.stdout  # ids and labels fold, never cut
