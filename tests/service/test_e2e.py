"""End to end on the embedded default (SQLite + filesystem:// under the data dir): upload, submit,
follow Server-Sent Events, compare the result with estimate_w1 run directly, artifacts, batches."""

import numpy as np
import pytest
from httpx_sse import connect_sse


pytestmark = pytest.mark.slow

# Tiny but real: an fc critic of width 32 on 8x8 grey images, on the CPU.
OPTIONS = {"critic": "fc", "width": 32, "steps": 40, "batch_size": 32, "eval_every": 10, "device": "cpu",
           "progress_every": 5, "eval_samples": 64, "seed": 3}


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory, make_npz):
    folder = tmp_path_factory.mktemp("sets")
    rng = np.random.default_rng(0)
    real = rng.integers(0, 128, size=(256, 1, 8, 8), dtype=np.uint8)
    fakes = [rng.integers(60 + 40 * i, 256, size=(256, 1, 8, 8), dtype=np.uint8) for i in range(3)]
    paths = {"real": make_npz(folder / "real.npz", real)}
    for i, f in enumerate(fakes):
        paths[f"fake{i}"] = make_npz(folder / f"fake{i}.npz", f)
    return paths


def read_events(client, job_id):
    """All SSE events of a job until the stream ends: [(event, data)] (read by httpx-sse)."""
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events", timeout=300) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(event.event, event.json()) for event in source.iter_sse()]


def run_direct(real_path, fake_path, options):
    from training.estimator import estimate_w1

    return estimate_w1(str(real_path), str(fake_path), options)


def test_upload_submit_follow_result_matches_direct_run(live_service, sample_files):
    real = live_service.upload(sample_files["real"], name="real digits")
    fake = live_service.upload(sample_files["fake0"])
    assert real.status_code == 201, real.text
    assert fake.status_code == 201, fake.text
    assert real.json()["shape"] == [1, 8, 8] and real.json()["count"] == 256
    assert real.json()["name"] == "real digits"
    # the same content again: the existing dataset, 200
    again = live_service.upload(sample_files["real"])
    assert again.status_code == 200 and again.json()["id"] == real.json()["id"]

    with live_service.client() as c:
        r = c.post("/v1/jobs", json={"real": {"dataset": real.json()["id"]}, "fake": {"dataset": fake.json()["id"]},
                                     "options": OPTIONS, "label": "e2e"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] in ("queued", "running")
        assert job["spec"]["options"]["steps"] == 40  # the full spec after defaults
        assert job["spec"]["options"]["lr"] is not None

        events = read_events(c, job["id"])
        kinds = [k for k, _ in events]
        assert "progress" in kinds, events
        assert events[-1][0] == "status" and events[-1][1]["status"] == "succeeded", events[-1]
        steps = [d["step"] for k, d in events if k == "progress"]
        assert steps == sorted(steps) and steps[-1] <= 40

        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded" and done["attempts"] == 1 and done["error"] is None
        assert done["started_at"] and done["finished_at"]

        arts = c.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
        assert set(arts) == {"curve.json", "curve.png", "critic.onnx", "critic.pt"}
        curve = c.get(f"/v1/jobs/{job['id']}/artifacts/curve.json").json()
        assert curve and curve[-1]["step"] <= 40
        png = c.get(f"/v1/jobs/{job['id']}/artifacts/curve.png")
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        onnx_bytes = c.get(f"/v1/jobs/{job['id']}/artifacts/critic.onnx").content
        pt_bytes = c.get(f"/v1/jobs/{job['id']}/artifacts/critic.pt").content
        assert c.get(f"/v1/jobs/{job['id']}/artifacts/nope.txt").status_code == 404

    direct = run_direct(sample_files["real"], sample_files["fake0"], OPTIONS)
    result = done["result"]
    assert result["estimate"] == pytest.approx(direct.estimate, rel=1e-5, abs=1e-6)
    assert result["certified_lower_bound"] == pytest.approx(direct.certified_lower_bound, rel=1e-5, abs=1e-6)
    assert result["ci"] == pytest.approx(list(direct.ci), rel=1e-5, abs=1e-6)
    assert result["steps_run"] == direct.steps_run
    assert result["seed"] == 3 and result["space"]["size"] == [8, 8]

    # the critic artifacts are the trained critic: same values as the direct run's critic
    import io

    import onnxruntime
    import torch

    x = torch.rand(5, 1, 8, 8) * 2 - 1
    sess = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    served = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].reshape(-1)
    with torch.no_grad():
        expected = direct.critic(x).reshape(-1).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    state = torch.load(io.BytesIO(pt_bytes), weights_only=True)
    assert set(state) == set(direct.critic.state_dict())


def test_batch_of_several_fakes(live_service, sample_files):
    ids = {name: live_service.upload(path).json()["id"] for name, path in sample_files.items()}
    opts = dict(OPTIONS, steps=20)
    with live_service.client() as c:
        r = c.post("/v1/batches", json={"real": {"dataset": ids["real"]},
                                        "fakes": [{"label": f"ckpt{i}", "fake": {"dataset": ids[f"fake{i}"]}} for i in range(3)],
                                        "options": opts})
        assert r.status_code == 202, r.text
        batch = r.json()
        assert len(batch["jobs"]) == 3 and all(j["batch_id"] == batch["id"] for j in batch["jobs"])
        for j in batch["jobs"]:
            assert live_service.wait(j["id"], timeout=300)["status"] == "succeeded"
        out = c.get(f"/v1/batches/{batch['id']}").json()
        assert out["status"] == "succeeded"
        assert [row["label"] for row in out["summary"]] == ["ckpt0", "ckpt1", "ckpt2"]
        for row in out["summary"]:
            assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
            assert row["certified_lower_bound"] <= row["estimate"] + 1e-9
            assert row["lipschitz_bound"] >= 1 - 1e-6
        listed = c.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["items"]
        assert {j["id"] for j in listed} == {j["id"] for j in batch["jobs"]}


def test_image_archive_upload(live_service, tmp_path, make_png_zip):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(64, 8, 8), dtype=np.uint8)
    r = live_service.upload(make_png_zip(tmp_path / "imgs.zip", imgs))
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "zip" and r.json()["count"] == 64 and r.json()["shape"] == [1, 8, 8]
