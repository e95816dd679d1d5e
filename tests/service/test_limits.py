"""Hostile input, checked before anything is allocated (issue 8): amplifying uploads (a zip or
.npz of zeros, blank giant PNGs, a generator with huge outputs, a huge latent), option bounds,
everything the worker would refuse, NUL bytes and cursors. In-process against the checks, then
against live servers (SQLite + filesystem and PostgreSQL + Redis): status, message, the server's
memory, and nothing left behind."""
import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from service.server.errors import Invalid

MiB = 1024**2


def deflate_zip(path, name: str, prefix: bytes, zero_mib: int) -> int:
    """A zip whose one member is ``prefix`` + ``zero_mib`` MiB of zeros, deflated, written without
    ever holding the member: one flushed 1 MiB block of zeros is repeated (a flushed deflate block
    does not refer back, so repeats are a valid stream). Returns the member's size."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    zero = bytes(MiB)
    for _ in range(zero_mib):
        crc = zlib.crc32(zero, crc)
    size = len(prefix) + zero_mib * MiB
    csize = len(head) + len(block) * zero_mib + len(tail)
    fname = name.encode()
    with open(path, "wb") as f:
        local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, csize, size, len(fname), 0)
        f.write(local + fname + head)
        for _ in range(zero_mib):
            f.write(block)
        f.write(tail)
        cd_at = f.tell()
        central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, csize, size,
                              len(fname), 0, 0, 0, 0, 0, 0) + fname
        f.write(central)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), cd_at, 0))
    return size


def npy_header(shape, dtype=np.uint8) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def blank_png_zip(path, count=20, side=8000):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"img/{i:02d}.png", buf.getvalue())
    return path


def huge_output_onnx(path, side=4096):
    """282-byte-class generator: z (N, 4) -> Expand to (N, 1, side, side)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["z"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
        helper.make_node("Concat", ["n", "chw"], ["shape"], axis=0),
        helper.make_node("ReduceMean", ["z"], ["m"], keepdims=1),
        helper.make_node("Reshape", ["m", "four"], ["m4"]),
        helper.make_node("Tanh", ["m4"], ["t"]),
        helper.make_node("Expand", ["t", "shape"], ["y"]),
    ]
    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, side, side])],
        [ints("zero", [0]), ints("one", [1]), ints("chw", [1, side, side]), ints("four", [-1, 1, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    out = {}
    out["zeros.npz"] = folder / "zeros.npz"
    deflate_zip(out["zeros.npz"], "images.npy", npy_header((1 << 20, 1, 32, 32)), 1024)  # 1 GiB decoded
    out["zeros.zip"] = folder / "zeros.zip"
    deflate_zip(out["zeros.zip"], "img/0.png", b"", 2048)  # a 2 GiB member
    out["blank.zip"] = blank_png_zip(folder / "blank.zip")
    out["big.onnx"] = huge_output_onnx(folder / "big.onnx")
    return out


@pytest.fixture
def settings(tmp_path):
    from service.server.settings import get_settings

    return get_settings(data_dir=tmp_path)


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(Invalid) as info:  # answered 422 (service.server.answers)
        fn(*args, **kwargs)
    return info.value.detail


# -- in process: the checks themselves ----------------------------------------------------------

def test_bomb_files_are_what_they_claim(bombs):
    assert bombs["zeros.npz"].stat().st_size < 2 * MiB and bombs["zeros.zip"].stat().st_size < 3 * MiB
    with zipfile.ZipFile(bombs["zeros.npz"]) as zf, zf.open("images.npy") as f:
        assert np.lib.format.read_array_header_1_0((np.lib.format.read_magic(f), f)[1])[0] == (1 << 20, 1, 32, 32)
        assert zf.getinfo("images.npy").file_size > 1024 * MiB
        with zf.open("images.npy") as g:  # a valid deflate stream: it really decodes to zeros
            g.read(200)
            assert g.read(MiB) == bytes(MiB)
    assert bombs["blank.zip"].stat().st_size < 2 * MiB


def test_amplifying_datasets_are_refused_from_headers(bombs, settings):
    from service.server.uploads.sizes import check_dataset_size

    msg = refused(check_dataset_size, bombs["zeros.npz"], ".npz", "zeros.npz", settings)
    assert msg.startswith("zeros.npz: decompresses") and "W1_MAX_COMPRESSION_RATIO" in msg
    msg = refused(check_dataset_size, bombs["zeros.zip"], ".zip", "zeros.zip", settings)
    assert "decompresses" in msg and "2,147,483,648" in msg
    msg = refused(check_dataset_size, bombs["blank.zip"], ".zip", "blank.zip", settings)
    assert "img/00.png is 8000x8000 = 64,000,000 pixels" in msg and "W1_MAX_IMAGE_PIXELS" in msg
    # the decoded total alone (images within the per-image limit)
    small = settings.model_copy(update={"max_image_pixels": 10**8, "max_decoded_bytes": 10**9})
    msg = refused(check_dataset_size, bombs["blank.zip"], ".zip", "blank.zip", small)
    assert "20 images of 8000x8000x1 decode to 1,280,000,000 bytes" in msg


def test_npy_header_checks(tmp_path, settings):
    from service.server.uploads.sizes import check_dataset_size

    p = tmp_path / "a.npy"
    p.write_bytes(npy_header((10**7, 3, 64, 64)) + bytes(1000))  # claims 123 GB
    assert "over this server's limit" in refused(check_dataset_size, p, ".npy", "a.npy", settings)
    p.write_bytes(npy_header((10, 1, 8, 8)) + bytes(100))
    assert "truncated" in refused(check_dataset_size, p, ".npy", "a.npy", settings)
    np.save(p, np.zeros((10, 1, 8, 8), np.uint8))
    check_dataset_size(p, ".npy", "a.npy", settings)


def test_archive_member_count_is_read_before_the_directory(tmp_path, settings):
    from service.server.uploads.sizes import check_dataset_size

    p = tmp_path / "many.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for i in range(30):
            zf.writestr(f"x/{i}.txt", b"")
    few = settings.model_copy(update={"max_archive_members": 20})
    assert "holds 30 files" in refused(check_dataset_size, p, ".zip", "many.zip", few)


def test_generator_limits(bombs, settings):
    from service.server.uploads.sizes import check_latent, check_onnx_shapes

    msg = refused(check_latent, [50_000_000], settings)
    assert "50,000,000 elements" in msg and "W1_MAX_LATENT_ELEMENTS" in msg
    assert "1 to 8" in refused(check_latent, [1] * 9, settings)
    msg = refused(check_onnx_shapes, bombs["big.onnx"], [4], "big.onnx", settings)
    assert "1x4096x4096" in msg and "W1_MAX_IMAGE_PIXELS" in msg


def test_option_checks_match_the_estimator(settings):
    """The API's split rule answers exactly when the estimator would refuse (both run here)."""
    from service.server.limits import check_splits
    from training.estimator import estimate_w1
    from training.options import EstimateOptions

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8, 12):
        for extra in ({}, {"holdout": 4}, {"early_stopping": False, "validation": 0}, {"holdout": 0.5}):
            opts = EstimateOptions.build({"critic": "fc", "width": 8, "steps": 1, "batch_size": 2, "device": "cpu",
                                          **extra}).resolved()
            try:
                check_splits("real", n, opts)
                api_ok = True
            except Invalid:
                api_ok = False
            data = rng.random((n, 1, 4, 4)).astype(np.float32)
            try:
                estimate_w1(data, data.copy(), opts, eval_every=1)
                worker_ok = True
            except ValueError:
                worker_ok = False
            assert api_ok == worker_ok, (n, extra)


def test_option_bounds_critic_and_device(settings):
    from service.server.limits import check_options, parse_cursor
    from training.options import EstimateOptions

    def check(**o):
        opts = EstimateOptions.build({"critic": "fc", "device": "cpu", **o}).resolved()
        check_options(opts, (1, 8, 8), {"real": 100, "fake": None}, settings)

    for key, value, setting in (("batch_size", 10**9, "MAX_BATCH_SIZE"), ("steps", 10**9, "MAX_STEPS"),
                                ("eval_samples", 10**8, "MAX_EVAL_SAMPLES"),
                                ("validation_samples", 10**8, "MAX_VALIDATION_SAMPLES")):
        msg = refused(check, **{key: value})
        assert f"options.{key}" in msg and f"W1_{setting}" in msg
    assert "unknown; available" in refused(check, critic="nope")
    assert "unknown option(s) bogus" in refused(check, critic_options={"bogus": 1})
    assert "depth must be >= 1" in refused(check, critic_options={"depth": 0})
    assert "parameters" in refused(check, width=10**6)
    assert "not one of" in refused(check, device="tpu")
    assert "not available" in refused(check, device="cuda:3")
    # critic="auto" trains fixed candidates: a width or critic_options would not apply (the estimator's rule)
    assert "width applies to a named critic" in refused(check, critic="auto", width=64)
    assert "critic_options applies to a named critic" in refused(check, critic="auto", critic_options={"depth": 2})
    # options without a parameter count that still cost without bound, and options of the wrong type
    assert "bjorck_iters must be an integer in 1..100" in refused(check, critic_options={"bjorck_iters": 10**8})
    assert "option depth must be an integer, got 'abc'" in refused(check, critic_options={"depth": "abc"})
    check(critic="auto")
    check(width=16)
    opts = EstimateOptions.build({"critic": "fc", "device": "cpu", "batch_size": 4096}).resolved()
    msg = refused(check_options, opts, (1, 8, 8), {"real": 100, "fake": None}, settings, {"fake": (1 << 20,)})
    assert "fake: a batch of 4096 latents" in msg and "W1_MAX_BATCH_BYTES" in msg
    for bad in ("9223372036854775808", "2147483648", "²", "-1", "1e3", "١٢"):
        assert "invalid cursor" in refused(parse_cursor, bad)
    assert parse_cursor("2147483647") == 2**31 - 1


# -- live: the same inputs against a running server, on both back-ends ---------------------------

def nan_beyond_two_onnx(path):
    """A generator that is fine on the registration probe (a batch of 2) and emits NaN on any
    larger batch (log(2.5 - N)), so the job fails in the worker with a SourceError."""
    import onnx
    from onnx import TensorProto, helper

    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["z", "w"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Reshape", ["t", "chw"], ["img"]),
        helper.make_node("Shape", ["z"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["two5", "nf"], ["d"]),
        helper.make_node("Log", ["d"], ["l"]),
        helper.make_node("Mul", ["l", "zerof"], ["nan"]),
        helper.make_node("Add", ["img", "nan"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 64], w.ravel().tolist()),
         helper.make_tensor("chw", TensorProto.INT64, [4], [-1, 1, 8, 8]),
         helper.make_tensor("zero", TensorProto.INT64, [1], [0]), helper.make_tensor("one", TensorProto.INT64, [1], [1]),
         helper.make_tensor("two5", TensorProto.FLOAT, [1], [2.5]), helper.make_tensor("zerof", TensorProto.FLOAT, [1], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def cpu_seconds(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(svc):
    with svc.client() as c:
        datasets = sorted(d["id"] for d in c.get("/v1/datasets").json())
        generators = sorted(g["id"] for g in c.get("/v1/generators").json())
    files = sorted(p.name for p in (svc.data_dir / "uploads").iterdir())
    tmp = sorted(p.name for p in (svc.data_dir / "tmp").iterdir())
    return datasets, generators, files, tmp


@pytest.fixture(params=["sqlite", "postgres"])
def hostile_service(request, make_service):
    env = {"W1_MAX_UPLOAD_BYTES": str(8 * MiB), "W1_WORKER_DEVICES": "cpu"}
    if request.param == "postgres":
        env["W1_DATABASE_URL"] = request.getfixturevalue("fresh_postgres_url")
    return make_service(workers=1, **env)


@pytest.mark.slow
def test_hostile_input_live(hostile_service, bombs, tmp_path):
    import httpx

    svc = hostile_service
    rng = np.random.default_rng(3)
    real, small = tmp_path / "real.npy", tmp_path / "two.npy"
    np.save(real, rng.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8))
    np.save(small, rng.integers(0, 256, (2, 1, 8, 8), dtype=np.uint8))
    real_id, two_id = svc.upload(real).json()["id"], svc.upload(small).json()["id"]
    nan_gen = nan_beyond_two_onnx(tmp_path / "nan.onnx")
    with svc.client() as c, open(nan_gen, "rb") as f:
        r = c.post("/v1/generators", files={"file": ("nan.onnx", f)}, data={"latent_shape": "4", "name": "nanny"})
        assert r.status_code == 201, r.text
        gen_id = r.json()["id"]
        # warm up every import the checks use, then measure the API's peak memory
        ok = {"critic": "fc", "width": 16, "steps": 4, "batch_size": 16, "eval_every": 2, "device": "cpu",
              "eval_samples": 32}
        r = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"generator": gen_id, "samples": 32},
                                     "options": ok})
        assert r.status_code == 202, r.text
        nan_job = r.json()["id"]
    before = stored(svc)
    peak0, cpu0 = peak_rss(svc.api.pid), cpu_seconds(svc.api.pid)

    def refuse(name, path, status=422, words=(), **data):
        with svc.client() as c, open(path, "rb") as f:
            r = c.post("/v1/generators" if name.endswith(".onnx") else "/v1/datasets",
                       files={"file": (name, f)}, data=data)
        assert r.status_code == status, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        for w in words:
            assert w in detail, detail
        assert str(svc.data_dir) not in detail
        return detail

    refuse("zeros.npz", bombs["zeros.npz"], words=("zeros.npz", "decompresses", "W1_MAX_COMPRESSION_RATIO"))
    cpu1 = cpu_seconds(svc.api.pid)
    refuse("zeros.zip", bombs["zeros.zip"], words=("decompresses", "2,147,483,648"))
    zip_cpu = cpu_seconds(svc.api.pid) - cpu1
    refuse("blank.zip", bombs["blank.zip"], words=("8000x8000", "W1_MAX_IMAGE_PIXELS"))
    refuse("big.onnx", bombs["big.onnx"], words=("1x4096x4096", "W1_MAX_IMAGE_PIXELS"), latent_shape="4")
    refuse("nan.onnx", nan_gen, words=("50,000,000 elements", "W1_MAX_LATENT_ELEMENTS"), latent_shape="50000000")
    # a 100 MB JSON body: refused from its Content-Length, and while streaming without one
    with svc.client() as c:
        huge = b'{"label": "' + b"x" * (100 * MiB) + b'"}'
        r = c.post("/v1/jobs", content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit of 1,048,576 bytes" in r.json()["detail"], r.text
        r = c.post("/v1/jobs", content=(huge[i:i + MiB] for i in range(0, 8 * MiB, MiB)),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
    peak1 = peak_rss(svc.api.pid)
    print(f"API peak RSS growth {(peak1 - peak0) / MiB:.1f} MiB; CPU {cpu_seconds(svc.api.pid) - cpu0:.2f} s "
          f"for all refusals, {zip_cpu:.2f} s for the 2 GiB zip member")
    assert peak1 - peak0 < 100 * MiB
    assert zip_cpu < 2.0  # headers only (it took 4.9 s when the member was CRC-scanned)

    # option bounds and what the worker would refuse, at submit
    base = {"real": {"dataset": real_id}, "fake": {"dataset": real_id}}
    cases = [
        ({"batch_size": 1_000_000_000, "steps": 5}, "options.batch_size"),
        ({"steps": 10**9}, "W1_MAX_STEPS"),
        ({"eval_samples": 10**8}, "W1_MAX_EVAL_SAMPLES"),
        ({"validation_samples": 10**8}, "W1_MAX_VALIDATION_SAMPLES"),
        ({"space": {"size": 100000, "resize": "bilinear"}}, "W1_MAX_SPACE_PIXELS"),
        ({"critic": "nope"}, "unknown; available"),
        ({"critic": "fc", "critic_options": {"bogus": 1}}, "unknown option(s) bogus"),
        ({"critic": "fc", "width": 10**6}, "parameters"),
        ({"device": "cuda"}, "not available"),
        ({"width": 64}, "width applies to a named critic"),
        ({"critic": "fc", "critic_options": {"bjorck_iters": 100000000}}, "bjorck_iters must be an integer in 1..100"),
        ({"seed": 10**20}, "seed"),  # the worker's generators take 64-bit seeds
        ({"steps": True}, "steps must be a number, not true"),  # critic "auto" (the default) has fixed candidates
        ({"holdout": 100}, "too few to hold out 100"),
    ]
    with svc.client() as c:
        for options, words in cases:
            r = c.post("/v1/jobs", json={**base, "options": options})
            assert r.status_code == 422 and words in r.json()["detail"], (options, r.text)
        r = c.post("/v1/jobs", json={"real": {"dataset": two_id}, "fake": {"dataset": real_id}})
        assert r.status_code == 422 and "real: 2 samples" in r.json()["detail"], r.text
        # cursors beyond any sequence number, and non-ASCII digits
        for cursor in ("9223372036854775808", "2147483648", "²"):
            r = c.get("/v1/jobs", params={"cursor": cursor})
            assert r.status_code == 422 and "invalid cursor" in r.json()["detail"], r.text
        # NUL bytes: in a label, a path id, the label filter, a dataset name (and no orphan file)
        r = c.post("/v1/jobs", json={**base, "label": "a\x00b"})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        for url in ("/v1/jobs/job_%00", "/v1/datasets/ds%00x", "/v1/jobs?label=a%00b"):
            r = c.get(url)
            assert r.status_code == 422 and "NUL" in r.json()["detail"], (url, r.text)
        fresh = npy_bytes_of(rng.integers(0, 256, (8, 1, 8, 8), dtype=np.uint8))
        r = c.post("/v1/datasets", files={"file": ("n.npy", fresh)}, data={"name": "bad\x00name"})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        raw = b'--B\r\nContent-Disposition: form-data; name="file"; filename="n\x00.npy"\r\n\r\n' + fresh + b"\r\n--B--\r\n"
        r = c.post("/v1/datasets", content=raw, headers={"content-type": "multipart/form-data; boundary=B"})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        # a multipart body without its closing boundary is refused, not stored
        body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="c.npy"\r\n\r\n' + fresh
        r = c.post("/v1/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
        assert r.status_code == 422 and "closing boundary" in r.json()["detail"], r.text
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert stored(svc) == before  # nothing left behind

    # a job error names the generator, never a server path
    job = svc.wait(nan_job, timeout=180)
    assert job["status"] == "failed" and "NaN/Inf" in job["error"], job
    assert f"generator {gen_id} (nanny)" in job["error"], job["error"]
    assert str(svc.data_dir) not in job["error"] and "uploads" not in job["error"]
    assert httpx.get(f"{svc.url}/healthz").status_code == 200


def npy_bytes_of(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# -- the request guard and the reconciler's sends, in process ----------------------------------

def test_request_guard_body_size_and_nul():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service.server.middleware import RequestGuard

    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict) -> dict:
        return body

    @app.get("/items/{item}")
    def item(item: str, q: str = "") -> dict:
        return {"item": item, "q": q}

    app.add_middleware(RequestGuard, max_json_bytes=1000)
    c = TestClient(app)
    assert c.post("/echo", json={"a": "b"}).json() == {"a": "b"}
    r = c.post("/echo", content=b'{"a": "' + b"x" * 2000 + b'"}', headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit of 1,000 bytes" in r.json()["detail"]
    r = c.post("/echo", content=(b"x" * 600 for _ in range(3)), headers={"content-type": "application/json"})
    assert r.status_code == 413  # no Content-Length: counted while reading
    r = c.post("/echo", content=b"x" * 2000, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413  # multipart only passes unread on the upload routes
    assert c.post("/echo", json={"a": "x\x00y"}).status_code == 422
    assert c.post("/echo", content=b'{"a": "\\U0000"}', headers={"content-type": "application/json"}).status_code == 422
    # the text backslash-u0000 (an escaped backslash) is no NUL
    assert c.post("/echo", content=b'{"a": "\\\\u0000"}', headers={"content-type": "application/json"}).json() == {"a": "\\u0000"}
    assert c.get("/items/a%00b").status_code == 422 and c.get("/items/x?q=%00").status_code == 422
    assert c.get("/items/x?q=ok").json() == {"item": "x", "q": "ok"}


class FlakyBroker:
    """Records sends; raises while ``down``."""

    def __init__(self):
        self.sent, self.down = [], False

    def send_task(self, name, args, queue):
        if self.down:
            raise ConnectionError("broker down")
        self.sent.append(args[0])


def test_reconciler_retries_failed_sends_and_resends_unclaimed(tmp_path):
    from datetime import timedelta

    from sqlalchemy import select, update

    from service.server.db import Job, make_engine, make_sessionmaker, migrate, now
    from service.server.reconciler import reconcile
    from service.server.settings import get_settings
    from service.server.worker import Attempt

    settings = get_settings(data_dir=tmp_path, stale_after_s=5, redispatch_after_s=30, broker_url="memory://")
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        job = Job(owner="alice", spec={"real": {}, "fake": {}, "options": {}}, dispatched_at=None)
        s.add(job)
        s.commit()
        job_id = job.id
    assert Attempt(settings, sessions, job_id, "w").claim()
    with sessions() as s:  # its worker died long ago
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=now() - timedelta(seconds=60)))
        s.commit()
    broker = FlakyBroker()
    broker.down = True
    counts = reconcile(settings, sessions, broker)
    assert counts["requeued"] == 1 and counts["dispatched"] == 0 and broker.sent == []
    with sessions() as s:
        assert s.scalar(select(Job.dispatched_at).where(Job.id == job_id)) is None  # not marked as sent
    reconcile(settings, sessions, broker)  # still down: still not sent, still not marked
    broker.down = False
    assert reconcile(settings, sessions, broker)["dispatched"] == 1 and broker.sent == [job_id]
    assert reconcile(settings, sessions, broker)["dispatched"] == 0  # sent, not yet overdue
    with sessions() as s:  # sent long ago and never claimed (the message was lost): sent again
        s.execute(update(Job).where(Job.id == job_id).values(dispatched_at=now() - timedelta(seconds=60)))
        s.commit()
    assert reconcile(settings, sessions, broker)["dispatched"] == 1 and broker.sent == [job_id, job_id]
    engine.dispose()
