"""Bad input answers a clear 4xx and leaves nothing broken behind; auth and owner scoping;
idempotency; listing; the catalog; generators; operations endpoints. Against the live server."""
import io
import tarfile
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.slow

OPTIONS = {"critic": "fc", "width": 32, "steps": 10, "batch_size": 32, "eval_every": 5, "device": "cpu",
           "progress_every": 5, "eval_samples": 64}


@pytest.fixture(scope="module")
def ids(live_service, tmp_path_factory):
    """Two valid uploaded sets (1x8x8) and one 1x16x16 set."""
    folder = tmp_path_factory.mktemp("ok")
    rng = np.random.default_rng(5)
    out = {}
    for name, shape, lo in (("real", (128, 1, 8, 8), 0), ("fake", (128, 1, 8, 8), 90), ("big", (64, 1, 16, 16), 0)):
        path = folder / f"{name}.npy"
        np.save(path, rng.integers(lo, 256, size=shape, dtype=np.uint8))
        r = live_service.upload(path)
        assert r.status_code in (200, 201), r.text
        out[name] = r.json()["id"]
    return out


def state(svc):
    """What is stored: dataset ids and files in the upload and temp folders."""
    with svc.client() as c:
        datasets = sorted(d["id"] for d in c.get("/v1/datasets").json())
    files = sorted(p.name for p in (svc.data_dir / "uploads").iterdir())
    tmp = sorted(p.name for p in (svc.data_dir / "tmp").iterdir())
    return datasets, files, tmp


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def png(seed=0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("img/link.png")
            info.type = tarfile.SYMTYPE
            info.linkname = symlink
            tf.addfile(info)
    return buf.getvalue()


def good_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, images=np.random.default_rng(1).integers(0, 256, (64, 1, 8, 8), dtype=np.uint8))
    return buf.getvalue()


BAD_UPLOADS = {
    "corrupt zip": ("x.zip", b"PK\x03\x04 this is not a zip archive at all", "corrupt"),
    "truncated npz": ("t.npz", good_npz()[:3000], ""),
    "truncated tar.gz": ("t.tar.gz", tar_bytes({f"img/{i}.png": png(i) for i in range(8)})[:200], "corrupt or truncated"),
    "member escapes (zip)": ("e.zip", zip_bytes({"img/0.png": png(), "../../evil.png": png(1)}), "escapes"),
    "member escapes (tar)": ("e.tar.gz", tar_bytes({"img/0.png": png(), "/etc/evil.png": png(1)}), "escapes"),
    "symlink member": ("l.tar.gz", tar_bytes({"img/0.png": png()}, symlink="/etc/passwd"), "link"),
    "NaN values": ("nan.npy", npy_bytes(np.where(np.eye(8)[None, None] > 0, np.nan, 0.5).repeat(4, 0).astype(np.float32)), "nan"),
    "Inf values": ("inf.npy", npy_bytes(np.full((4, 1, 8, 8), np.inf, np.float32)), "inf"),
    "wrong rank": ("r.npy", npy_bytes(np.zeros((4, 2, 1, 8, 8), np.float32)), ""),
    "unsupported type": ("x.txt", b"hello", "unsupported"),
    "corrupt image (zip)": ("c.zip", zip_bytes({"img/0.png": b"\x89PNG\r\n\x1a\nbroken"}),
                            "img/0.png: not a readable PNG/JPEG image (cannot identify image file)"),
    "pickled object array": ("p.npy", npy_bytes(np.array([{"a": 1}], dtype=object)), ""),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_are_rejected_and_leave_nothing(live_service, ids, case):
    name, data, words = BAD_UPLOADS[case]
    before = state(live_service)
    with live_service.client() as c:
        r = c.post("/v1/datasets", files={"file": (name, data)})
    assert r.status_code == 422, (case, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    assert words.lower() in detail.lower(), detail
    assert str(live_service.data_dir) not in detail  # no server paths in messages
    assert state(live_service) == before


def test_a_name_longer_than_a_label_is_refused_not_cut(live_service, ids):
    """A dataset's or generator's name over 300 characters (a job label's limit) is a 422 that says so;
    it used to be stored cut to 300, silently."""
    before = state(live_service)
    with live_service.client() as c:
        for path in ("/v1/datasets", "/v1/generators"):
            file = ("d.npz", good_npz()) if path == "/v1/datasets" else ("g.onnx", b"not read: the name is checked first")
            r = c.post(path, data={"name": "n" * 301, "latent_shape": "4"}, files={"file": file})
            assert r.status_code == 422, (path, r.text)
            assert r.json()["detail"] == "name is 301 characters long; at most 300", r.text
        r = c.post("/v1/datasets", data={"name": "n" * 300}, files={"file": ("d.npz", good_npz())})
        assert r.status_code == 201 and r.json()["name"] == "n" * 300, r.text
    assert state(live_service) != before  # the 300-character one is stored, whole


def test_upload_over_the_limit_is_413_and_leaves_nothing(live_service, ids):
    before = state(live_service)
    big = npy_bytes(np.zeros((2000, 1, 32, 32), np.uint8))  # ~2 MB > the 1 MB limit
    with live_service.client() as c:
        r = c.post("/v1/datasets", files={"file": ("big.npy", big)})
        assert r.status_code == 413, r.text
        assert "limit" in r.json()["detail"]

        # without a Content-Length: the limit still holds while streaming
        def gen():
            boundary = b"XyZ"
            yield b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.npy\"\r\n\r\n"
            for i in range(0, len(big), 65536):
                yield big[i:i + 65536]
            yield b"\r\n--" + boundary + b"--\r\n"

        r = c.post("/v1/datasets", content=gen(), headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert r.status_code == 413, r.text
    assert state(live_service) == before


def test_multipart_without_file_and_malformed_body(live_service):
    with live_service.client() as c:
        r = c.post("/v1/datasets", data={"name": "x"}, files={"other": ("a.npy", b"123")})
        assert r.status_code == 422 and "file" in r.json()["detail"]
        r = c.post("/v1/datasets", content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "multipart" in r.json()["detail"]


def test_auth_missing_wrong_and_other_owner(live_service, ids):
    import httpx

    r = httpx.get(f"{live_service.url}/v1/jobs")
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    r = httpx.get(f"{live_service.url}/v1/jobs", headers={"Authorization": "Bearer w1_nope"})
    assert r.status_code == 401 and "invalid" in r.json()["detail"]
    r = httpx.get(f"{live_service.url}/v1/jobs", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401

    with live_service.client() as alice, live_service.client(live_service.tokens["bob"]) as bob:
        job = alice.post("/v1/jobs", json={"real": {"dataset": ids["real"]}, "fake": {"dataset": ids["fake"]},
                                           "options": OPTIONS}).json()
        for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events", f"/v1/jobs/{job['id']}/artifacts",
                     f"/v1/datasets/{ids['real']}"):
            r = bob.get(path)
            assert r.status_code == 404, (path, r.text)
        assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
        assert bob.delete(f"/v1/datasets/{ids['real']}").status_code == 404
        assert job["id"] not in {j["id"] for j in bob.get("/v1/jobs").json()["items"]}
        # bob cannot use alice's datasets either
        r = bob.post("/v1/jobs", json={"real": {"dataset": ids["real"]}, "fake": {"dataset": ids["fake"]}})
        assert r.status_code == 422 and "no dataset" in r.json()["detail"]
        assert alice.post(f"/v1/jobs/{job['id']}/cancel").status_code in (202, 409)


def test_job_submission_errors(live_service, ids):
    with live_service.client() as c:
        r = c.post("/v1/jobs", content=b'{"real": {"dataset": ', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "malformed JSON" in r.json()["detail"], r.text
        r = c.post("/v1/jobs", json={"real": {"catalog": "nope"}, "fake": {"dataset": ids["fake"]}})
        assert r.status_code == 422 and "unknown catalog name 'nope'" in r.json()["detail"]
        assert "digits" in r.json()["detail"]  # says which names exist
        r = c.post("/v1/jobs", json={"real": {"dataset": ids["real"]}, "fake": {"dataset": ids["big"]}})
        assert r.status_code == 422 and "different spaces" in r.json()["detail"], r.text
        assert "resize" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"real": {"dataset": ids["real"]}, "fake": {"dataset": ids["fake"]},
                                     "options": {"stepz": 3}})
        assert r.status_code == 422 and "options.stepz" in r.json()["detail"], r.text
        r = c.post("/v1/jobs", json={"real": {"dataset": ids["real"], "catalog": "digits"}, "fake": {"dataset": ids["fake"]}})
        assert r.status_code == 422 and "exactly one" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"real": {"dataset": "ds_missing"}, "fake": {"dataset": ids["fake"]}})
        assert r.status_code == 422 and "no dataset 'ds_missing'" in r.json()["detail"]
        assert c.get("/v1/jobs/job_missing").status_code == 404
        assert c.get("/v1/jobs", params={"status": "weird"}).status_code == 422
        assert c.get("/v1/jobs", params={"cursor": "abc"}).status_code == 422


def test_idempotency_and_cancel_and_pagination(live_service, ids):
    body = {"real": {"dataset": ids["real"]}, "fake": {"dataset": ids["fake"]}, "options": OPTIONS, "label": "idem"}
    with live_service.client() as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 202
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == f"/v1/jobs/{first.json()['id']}"
        other = c.post("/v1/jobs", json=dict(body, label="other"), headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
        # the same key is another owner's own key
        with live_service.client(live_service.tokens["bob"]) as bob:
            r = bob.post("/v1/jobs", json={"real": {"catalog": "digits"}, "fake": {"catalog": "digits"},
                                           "options": OPTIONS}, headers={"Idempotency-Key": "k-1"})
            assert r.status_code == 202, r.text
            bob.post(f"/v1/jobs/{r.json()['id']}/cancel")

        done = live_service.wait(first.json()["id"], timeout=300)
        assert done["status"] == "succeeded", done
        r = c.post(f"/v1/jobs/{done['id']}/cancel")
        assert r.status_code == 409 and "already finished" in r.json()["detail"]

        # pagination: newest first, cursors chain without gaps or repeats
        seen, cursor = [], None
        while True:
            page = c.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        everything = [j["id"] for j in c.get("/v1/jobs", params={"limit": 500}).json()["items"]]
        assert seen == everything and len(set(seen)) == len(seen) >= 2
        assert [j["label"] for j in c.get("/v1/jobs", params={"label": "idem"}).json()["items"]] == ["idem"]
        assert all(j["status"] == "succeeded" for j in c.get("/v1/jobs", params={"status": "succeeded"}).json()["items"])


def test_dataset_delete_and_list(live_service, tmp_path, make_npz):
    path = make_npz(tmp_path / "del.npz", np.random.default_rng(9).integers(0, 256, (32, 1, 8, 8), dtype=np.uint8))
    d = live_service.upload(path).json()
    with live_service.client() as c:
        assert d["id"] in {x["id"] for x in c.get("/v1/datasets").json()}
        assert c.get(f"/v1/datasets/{d['id']}").json()["sha256"] == d["sha256"]
        assert c.delete(f"/v1/datasets/{d['id']}").status_code == 204
        assert c.get(f"/v1/datasets/{d['id']}").status_code == 404
    assert not (live_service.data_dir / "uploads" / f"{d['sha256']}.npz").exists()


def test_catalog_and_operations(live_service):
    import httpx

    with live_service.client() as c:
        cat = c.get("/v1/catalog").json()
        assert cat == [{"name": "digits", "description": "scikit-learn 8x8 digits", "count": 1797, "shape": [1, 8, 8]}]
    assert httpx.get(f"{live_service.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{live_service.url}/readyz").json() == {"status": "ready"}
    metrics = httpx.get(f"{live_service.url}/metrics").text
    assert "w1_jobs{status=" in metrics and "w1_http_requests_total" in metrics
    assert httpx.get(f"{live_service.url}/openapi.json").json()["paths"]["/v1/jobs"]
    assert httpx.get(f"{live_service.url}/docs").status_code == 200


def test_generators(live_service, tmp_path, ids):
    import torch

    gen = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 8, 8)))
    path = tmp_path / "gen.onnx"
    torch.onnx.export(gen, (torch.zeros(1, 4),), str(path), dynamo=False, input_names=["z"],
                      dynamic_axes={"z": {0: "n"}})
    with live_service.client() as c, open(path, "rb") as f:
        r = c.post("/v1/generators", files={"file": ("gen.onnx", f)},
                   data={"latent_shape": "4", "latent_distribution": "normal", "output_range": "-1,1"})
        assert r.status_code == 201, r.text
        g = r.json()
        assert g["output_shape"] == [1, 8, 8] and g["latent_shape"] == [4] and g["format"] == "onnx"
        assert c.get(f"/v1/generators/{g['id']}").json()["id"] == g["id"]
        r = c.post("/v1/generators", files={"file": ("gen.pt", b"PK...")}, data={"latent_shape": "4"})
        assert r.status_code == 422 and "TorchScript" in r.json()["detail"]
        r = c.post("/v1/generators", files={"file": ("bad.onnx", b"not onnx")}, data={"latent_shape": "4"})
        assert r.status_code == 422, r.text
        r = c.post("/v1/generators", files={"file": ("gen.onnx", path.read_bytes())}, data={"latent_shape": "x"})
        assert r.status_code == 422 and "latent_shape" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"real": {"dataset": ids["real"]}, "fake": {"generator": g["id"]}})
        assert r.status_code == 422 and "samples" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"real": {"dataset": ids["real"]}, "fake": {"generator": g["id"], "samples": 64},
                                     "options": OPTIONS})
        assert r.status_code == 202, r.text
    job = live_service.wait(r.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job
    assert job["result"]["samples"]["fake_heldout"] == 64
