"""Sample sources: every kind loads real files written here, and every bad input fails clearly."""

import io
import json
import tarfile
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from training.sources import SampleSource, SourceError, SourceSpec, open_source


def as_float(arr_nchw_uint8):
    return torch.from_numpy(arr_nchw_uint8.astype(np.float32) / np.float32(255))


def check_contract(src, n=None):
    """Contract shared by every source: shape, dtype, range, JSON-able describe()."""
    assert isinstance(src, SampleSource)
    d = json.loads(json.dumps(src.describe()))
    assert d["shape"] == list(src.shape) and d["is_generator"] == src.is_generator
    if not src.is_generator:
        assert d["count"] == len(src)
        if n is not None:
            assert len(src) == n
        x = src.read([0, len(src) - 1])
    else:
        x = src.sample(3, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.device.type == "cpu" and tuple(x.shape[1:]) == src.shape
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    return d


# -- arrays -----------------------------------------------------------------------------------


def test_npy_uint8_nchw_exact(tmp_path, digits_uint8):
    np.save(tmp_path / "d.npy", digits_uint8)
    src = open_source(tmp_path / "d.npy")
    d = check_contract(src, n=1797)
    assert src.shape == (1, 8, 8) and d["value_range"]["rule"] == "auto: uint8 [0, 255]"
    idx = [5, 0, 1796, 5]
    assert torch.equal(src.read(idx), as_float(digits_uint8[idx]))
    assert src.read([]).shape == (0, 1, 8, 8)
    with pytest.raises(IndexError, match="out of range"):
        src.read([1797])


def test_npy_is_memory_mapped_and_read_lazily(tmp_path):
    # 4000 float32 images of 3x32x32 = 49 MB on disk; opening and reading 8 must stay far below.
    data = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(4000, 3, 32, 32))
    data[:] = 0.25
    data[123] = np.linspace(0, 1, 3 * 32 * 32, dtype=np.float32).reshape(3, 32, 32)
    data.flush()
    del data
    tracemalloc.start()
    src = open_source(str(tmp_path / "big.npy"))
    x = src.read(range(120, 128))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 25e6, f"peak {peak / 1e6:.1f} MB"
    assert src.describe()["value_range"]["rule"] == "auto: float [0, 1]"
    assert torch.equal(x[3], torch.from_numpy(np.linspace(0, 1, 3 * 32 * 32, dtype=np.float32).reshape(3, 32, 32)))
    assert torch.all(x[0] == 0.25)


def test_float_ranges_layouts_and_explicit_range(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(6, 5, 7, 3)).astype(np.float32)  # NHWC in [-1, 1]
    np.savez(tmp_path / "a.npz", a)
    src = open_source(str(tmp_path / "a.npz"))
    assert src.shape == (3, 5, 7) and src.describe()["layout"] == "NHWC"
    assert src.describe()["value_range"] == {"input": [-1.0, 1.0], "rule": "auto: float [-1, 1]"}
    expect = torch.from_numpy((a.transpose(0, 3, 1, 2) + 1) / 2)
    assert torch.allclose(src.read(range(6)), expect, atol=1e-7)

    grey = rng.uniform(0, 255, size=(4, 6, 6))  # N×H×W float64 in 0..255
    with pytest.raises(SourceError, match=r"neither \[0, 1\] nor \[-1, 1\].*value_range"):
        open_source(grey)
    src = open_source(grey, value_range=(0, 255))
    assert src.shape == (1, 6, 6) and src.describe()["value_range"]["rule"] == "explicit"
    assert torch.allclose(src.read([2])[0, 0], torch.from_numpy(grey[2] / 255).float())
    with pytest.raises(SourceError, match="outside the given value_range"):
        open_source(grey, value_range=(0, 1))
    t = torch.rand(3, 1, 4, 4)
    assert torch.equal(open_source(t).read(range(3)), t)  # tensors too


def test_npz_keys(tmp_path, digits_uint8):
    np.savez_compressed(tmp_path / "two.npz", real=digits_uint8[:10], fake=digits_uint8[10:30])
    with pytest.raises(SourceError, match=r"two.npz: holds 2 arrays \(real, fake\).*#KEY"):
        open_source(tmp_path / "two.npz")
    fake = open_source(f"{tmp_path / 'two.npz'}#fake")
    assert len(fake) == 20 and torch.equal(fake.read([0]), as_float(digits_uint8[10:11]))
    assert fake.describe()["key"] == "fake"
    via_spec = open_source(SourceSpec(kind="file", path=str(tmp_path / "two.npz"), key="real"))
    assert len(via_spec) == 10
    with pytest.raises(SourceError, match="no array named 'nope'"):
        open_source(f"{tmp_path / 'two.npz'}#nope")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 3, 8, 8), np.uint8), "empty"),
        (np.zeros((8,), np.uint8), "1-D"),
        (np.zeros((2, 2, 3, 8, 8), np.uint8), "5-D"),
        (np.zeros((2, 4, 8, 8), np.uint8), "4 channels"),
        (np.zeros((2, 5, 8, 7), np.uint8), "channel axis of size 1 or 3"),
        (np.zeros((2, 3, 8, 8), np.complex64), "dtype"),
        (np.full((2, 3, 8, 8), 300, np.int32), "not 0..255"),
    ],
)
def test_bad_arrays(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(SourceError, match=message) as e:
        open_source(tmp_path / "bad.npy")
    assert "bad.npy" in str(e.value)


def test_nan_inf_counted(tmp_path):
    a = np.zeros((3, 1, 4, 4), np.float32)
    a[0, 0, 0, 0], a[2, 0, 1, 1], a[2, 0, 2, 2] = np.nan, np.inf, -np.inf
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(SourceError, match=r"nan.npy: contains 3 NaN/Inf"):
        open_source(tmp_path / "nan.npy")


def test_corrupt_and_pickled_arrays(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(SourceError, match="junk.npz: not an .npz"):
        open_source(tmp_path / "junk.npz")
    np.save(tmp_path / "cut.npy", np.zeros((100, 3, 8, 8), np.uint8))
    raw = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match="cut.npy"):
        open_source(tmp_path / "cut.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x00" * 64)
    with pytest.raises(SourceError, match="junk.npy: not a .npy file"):
        open_source(tmp_path / "junk.npy")
    obj = np.empty(2, dtype=object)
    obj[:] = [np.zeros(3), "x"]
    np.savez(tmp_path / "obj.npz", obj)  # numpy pickles object arrays; we must refuse them
    with pytest.raises(SourceError, match="never unpickled"):
        open_source(tmp_path / "obj.npz")
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(SourceError, match="unsupported file type"):
        open_source(tmp_path / "x.csv")


# -- image folders and archives -----------------------------------------------------------------


@pytest.fixture
def png_set(tmp_path, rgb_uint8, write_images):
    """24 RGB PNGs split over two subfolders, plus files that must be skipped."""
    root = tmp_path / "pngs"
    write_images(root / "a", rgb_uint8[:10], prefix="x")
    write_images(root / "b", rgb_uint8[10:], prefix="x")
    (root / "labels.txt").write_text("not an image")
    write_images(root / ".hidden", rgb_uint8[:1])
    return root


def test_png_folder_exact_and_sorted(png_set, rgb_uint8):
    src = open_source(str(png_set))
    d = check_contract(src, n=24)
    assert d["kind"] == "images" and d["ignored_files"] == 1 and d["cached"] is True
    assert torch.equal(src.read(range(24)), as_float(rgb_uint8))  # PNG is lossless: exact


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz"])
def test_archives_equal_folder(tmp_path, png_set, rgb_uint8, make_archive, suffix):
    path = make_archive(png_set, tmp_path / f"set{suffix}")
    src = open_source(path)
    check_contract(src, n=24)
    assert torch.equal(src.read(range(24)), as_float(rgb_uint8))
    lazy = open_source(path, cache_limit_bytes=0)  # decoded on demand
    assert lazy.describe()["cached"] is False
    assert torch.equal(lazy.read([23, 0, 7]), as_float(rgb_uint8[[23, 0, 7]]))


def test_grey_png_and_jpeg(tmp_path, digits_uint8, rgb_uint8, write_images):
    write_images(tmp_path / "grey", digits_uint8[:30])
    grey = open_source(tmp_path / "grey", cache_limit_bytes=0)
    assert grey.shape == (1, 8, 8) and torch.equal(grey.read(range(30)), as_float(digits_uint8[:30]))
    smooth = np.repeat(np.linspace(40, 200, 16, dtype=np.uint8)[None, None, None], 16, axis=2)
    smooth = np.repeat(np.repeat(smooth, 3, axis=1), 4, axis=0)  # (4, 3, 16, 16) gentle ramp
    write_images(tmp_path / "jpg", smooth, fmt="jpg")
    src = open_source(tmp_path / "jpg")
    assert src.shape == (3, 16, 16) and len(src) == 4
    assert float((src.read(range(4)) - as_float(smooth)).abs().max()) < 4 / 255  # lossy, but close


def test_mixed_sizes_and_modes_name_two_files(tmp_path, rgb_uint8, write_images):
    write_images(tmp_path / "s", rgb_uint8[:3])
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(tmp_path / "s" / "odd.png")
    with pytest.raises(SourceError, match=r"images differ: 'img00000.png' is 8x8 RGB but 'odd.png' is 9x7 RGB"):
        open_source(tmp_path / "s")
    write_images(tmp_path / "m", rgb_uint8[:2])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m" / "z.png")
    with pytest.raises(SourceError, match=r"'img00000.png' is 8x8 RGB but 'z.png' is 8x8 L"):
        open_source(tmp_path / "m")


def test_unsupported_images(tmp_path, rgb_uint8, write_images):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "rgba.png")
    with pytest.raises(SourceError, match="rgba.png: image mode RGBA is not supported"):
        open_source(tmp_path)
    (tmp_path / "rgba.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.gif")
    with pytest.raises(SourceError, match="'x.gif' is not PNG or JPEG"):
        open_source(tmp_path)
    (tmp_path / "x.gif").unlink()
    (tmp_path / "fake.png").write_bytes(b"hello")
    with pytest.raises(SourceError, match="fake.png: not a readable PNG/JPEG") as err:
        open_source(tmp_path)
    assert str(err.value).endswith("(cannot identify image file)")  # without PIL's repr of the buffer


def test_truncated_png_in_folder(tmp_path, rgb_uint8, write_images):
    rnd = np.random.default_rng(3).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8)
    paths = write_images(tmp_path / "t", rnd)
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match=r"img00001.png: corrupt or truncated"):
        open_source(tmp_path / "t")
    lazy = open_source(tmp_path / "t", cache_limit_bytes=0)  # header is fine: fails when read
    assert torch.equal(lazy.read([0]), as_float(rnd[:1]))
    with pytest.raises(SourceError, match=r"img00001.png: corrupt or truncated"):
        lazy.read([1])


def test_empty_sets(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no PNG/JPEG images found"):
        open_source(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(SourceError, match=r"e.zip: no PNG/JPEG images found \(1 other"):
        open_source(tmp_path / "e.zip")


def png_bytes(value=0):
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("member", ["../evil.png", "a/../../evil.png", "/abs/evil.png", "C:/evil.png"])
def test_zip_slip_rejected(tmp_path, member):
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as zf:
        zf.writestr("ok.png", png_bytes())
        zf.writestr(member, png_bytes())
    with pytest.raises(SourceError, match="escapes the archive root"):
        open_source(tmp_path / "slip.zip")
    with tarfile.open(tmp_path / "slip.tar", "w") as tf:
        for name in ("ok.png", member):
            data = png_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match=r"slip.tar: member .* escapes the archive root"):
        open_source(tmp_path / "slip.tar")


def test_tar_links_rejected(tmp_path):
    with tarfile.open(tmp_path / "link.tar", "w") as tf:
        data = png_bytes()
        info = tarfile.TarInfo("ok.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(SourceError, match="'link.png' is a link"):
        open_source(tmp_path / "link.tar")


def test_truncated_and_corrupt_archives(tmp_path, png_set, make_archive):
    for suffix in (".tar.gz", ".zip", ".tar"):
        path = make_archive(png_set, tmp_path / f"full{suffix}")
        raw = path.read_bytes()
        for frac in (0.3, 0.6):
            cut = tmp_path / f"cut{suffix}"
            cut.write_bytes(raw[: int(len(raw) * frac)])
            with pytest.raises(SourceError, match=rf"cut{suffix}: (corrupt or truncated|.*not a readable)"):
                open_source(cut)
    (tmp_path / "junk.tgz").write_bytes(b"\x1f\x8b" + b"garbage" * 20)
    with pytest.raises(SourceError, match="junk.tgz: corrupt or truncated tar"):
        open_source(tmp_path / "junk.tgz")


# -- built-in data sets -------------------------------------------------------------------------


def test_builtin_digits(digits_uint8):
    from sklearn.datasets import load_digits

    d = load_digits()
    src = open_source("builtin:digits")
    check_contract(src, n=1797)
    assert torch.equal(src.read(range(1797)), torch.from_numpy(d.images[:, None] / 16).float())
    few = open_source("builtin:digits?classes=0,1,2")
    assert len(few) == int(np.isin(d.target, [0, 1, 2]).sum())
    assert few.describe()["classes"] == [0, 1, 2]
    with pytest.raises(SourceError, match="classes must be digits 0..9"):
        open_source("builtin:digits?classes=12")


def test_builtin_photos_deterministic_crops():
    import skimage.data

    src = open_source("builtin:photos?size=16&count=50&seed=3")
    check_contract(src, n=50)
    assert src.shape == (3, 16, 16)
    x = src.read(range(50))
    assert torch.equal(x, open_source("builtin:photos?size=16&count=50&seed=3").read(range(50)))
    assert not torch.equal(x, open_source("builtin:photos?size=16&count=50&seed=4").read(range(50)))
    photos = [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")]
    for i in (0, 17, 49):  # each patch is a real crop of one of the photographs
        patch = np.round(x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert any(_contains(p, patch) for p in photos), f"patch {i} not found"


def _contains(img, patch):
    s = patch.shape[0]
    ys, xs = np.nonzero(np.all(img[: img.shape[0] - s + 1, : img.shape[1] - s + 1] == patch[0, 0], axis=-1))
    return any(np.array_equal(img[y : y + s, x : x + s], patch) for y, x in zip(ys, xs))


def test_builtin_errors():
    with pytest.raises(SourceError, match=r"unknown built-in data set 'cifar' \(known: digits, photos\)"):
        open_source("builtin:cifar")
    with pytest.raises(SourceError, match="builtin:digits takes classes; not size"):
        open_source("builtin:digits?size=3")
    with pytest.raises(SourceError, match=r"unknown option 'colour'"):
        open_source("builtin:photos?colour=1")
    with pytest.raises(SourceError, match="size must be 1..300"):
        open_source("builtin:photos?size=400")


# -- torchvision ------------------------------------------------------------------------------


def test_torchvision_mnist_from_local_files(mnist_root):
    root, train = mnist_root
    src = open_source(f"torchvision:mnist?root={root}&split=train")
    d = check_contract(src, n=12)
    assert src.shape == (1, 28, 28) and d["split"] == "train"
    assert torch.equal(src.read(range(12)), torch.from_numpy(train[:, None].astype(np.float32) / 255))
    assert len(open_source(SourceSpec(kind="torchvision", name="mnist", root=str(root), split="test"))) == 5


def test_torchvision_errors(tmp_path):
    # CIFAR files are checked against their MD5s by torchvision, so tiny fakes cannot be used:
    # only the missing-files error is tested for CIFAR-10.
    with pytest.raises(SourceError) as e:
        open_source(f"torchvision:cifar10?root={tmp_path}")
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "download=True" in msg and "cifar-10-python.tar.gz" in msg
    with pytest.raises(SourceError, match=r"looked in .*MNIST/raw"):
        open_source(f"torchvision:mnist?root={tmp_path}&split=test")
    with pytest.raises(SourceError, match=r"unknown torchvision data set 'imagenet'"):
        open_source(f"torchvision:imagenet?root={tmp_path}")
    with pytest.raises(SourceError, match=r"unknown split 'extra'"):
        open_source(f"torchvision:cifar10?root={tmp_path}&split=extra")
    with pytest.raises(SourceError, match="give the data set root"):
        open_source("torchvision:svhn")


# -- generators -------------------------------------------------------------------------------


def test_onnx_generator_matches_torch(onnx_generator):
    path, module = onnx_generator
    src = open_source(f"onnx:{path}?latent=4&dist=normal&output_range=-1,1")
    d = check_contract(src)
    assert src.is_generator and src.shape == (3, 8, 8) and d["latent"] == [4] and d["count"] is None
    x = src.sample(300, torch.Generator().manual_seed(7))  # more than one internal batch
    z = torch.randn(300, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expect = (module(z) + 1) / 2
    assert torch.allclose(x, expect, atol=1e-5)
    assert torch.equal(x, src.sample(300, torch.Generator().manual_seed(7)))  # deterministic
    assert not torch.equal(x[:5], src.sample(5, torch.Generator().manual_seed(8)))
    with pytest.raises(TypeError, match="generator"):
        len(src)
    with pytest.raises(TypeError, match="use sample"):
        src.read([0])
    assert src  # truthy although it has no length


def test_onnx_uniform_latent_inferred_and_fixed_batch(tmp_path, onnx_generator, onnx_exporter, tiny_generator_cls):
    path, module = onnx_generator
    src = open_source(str(path))  # a plain .onnx path: latent read from the model
    assert src.describe()["latent"] == [4] and src.describe()["dist"] == "normal"
    uni = open_source(SourceSpec(kind="onnx", path=str(path), dist="uniform"))
    z = torch.rand(6, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(uni.sample(6, torch.Generator().manual_seed(1)), (module(z) + 1) / 2, atol=1e-5)
    # a model exported with a fixed batch of 4 still serves any count (the last batch is padded)
    g = tiny_generator_cls(latent=3, shape=(1, 5, 6)).eval()
    fixed = open_source(onnx_exporter(g, torch.zeros(4, 3), tmp_path / "fixed.onnx", dynamic_batch=False))
    assert fixed.shape == (1, 5, 6) and fixed.describe()["latent"] == [3]
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(fixed.sample(7, torch.Generator().manual_seed(5)), (g(z) + 1) / 2, atol=1e-5)


def test_onnx_errors(tmp_path, onnx_generator):
    path, _ = onnx_generator
    with pytest.raises(SourceError, match=r"outside the declared output_range \[0, 0.5\]"):
        open_source(f"onnx:{path}?latent=4&output_range=0,0.5")
    with pytest.raises(SourceError, match=r"latent \(5,\) does not fit"):
        open_source(f"onnx:{path}?latent=5")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(SourceError, match="bad.onnx: cannot load ONNX model"):
        open_source(f"onnx:{tmp_path / 'bad.onnx'}?latent=4")
    with pytest.raises(SourceError, match="not found"):
        open_source(f"onnx:{tmp_path / 'none.onnx'}?latent=4")


def test_torchscript_needs_opt_in(torchscript_generator):
    path, module = torchscript_generator
    spec = f"torchscript:{path}?latent=4&dist=uniform&output_range=-1,1"
    with pytest.raises(SourceError, match="allow_torchscript=True"):
        open_source(spec)
    src = open_source(spec, allow_torchscript=True)
    check_contract(src)
    z = torch.rand(5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(src.sample(5, torch.Generator().manual_seed(2)), (module(z) + 1) / 2, atol=1e-6)
    with pytest.raises(SourceError, match="need the latent shape|latent"):
        open_source(f"torchscript:{path}", allow_torchscript=True)
    with pytest.raises(SourceError, match="torchscript:"):
        open_source(path)  # a bare .pt path is never loaded


class _Evil:
    """Unpickling this runs a shell command: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickled_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weights": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(SourceError, match="evil.pt: cannot load TorchScript module"):
        open_source(f"torchscript:{tmp_path / 'evil.pt'}?latent=4", allow_torchscript=True)
    with pytest.raises(SourceError, match="never loaded"):
        open_source(tmp_path / "evil.pt")
    assert not marker.exists()


def test_generator_nan_output(tmp_path):
    class NaNGen(torch.nn.Module):
        def forward(self, z):
            return torch.full((z.shape[0], 1, 4, 4), float("nan"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(NaNGen()).save(str(tmp_path / "nan.pt"))
    with pytest.raises(SourceError, match="NaN/Inf"):
        open_source(f"torchscript:{tmp_path / 'nan.pt'}?latent=2", allow_torchscript=True)


# -- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "data/set.npz",
        "data/set.npz#fake",
        "file:my%20data/x.npy?value_range=-1,1",
        "file:a.npz?value_range=0,255#k",
        "builtin:digits?classes=0,1,2",
        "builtin:photos?size=32&count=2000&seed=0",
        "torchvision:cifar10?root=/data/tv&split=train",
        "onnx:gen.onnx?latent=100,1,1&dist=uniform&output_range=-1,1",
        "torchscript:gen.pt?latent=62&dist=normal&output_range=0,1",
    ],
)
def test_spec_round_trip(text):
    spec = SourceSpec.parse(text)
    assert str(spec) == text and SourceSpec.parse(str(spec)) == spec
    assert SourceSpec.model_validate_json(spec.model_dump_json()) == spec


def test_spec_fields_and_errors():
    s = SourceSpec.parse("onnx:g.onnx?latent=100,1,1&output_range=-1,1")
    assert s.latent == (100, 1, 1) and s.output_range == (-1.0, 1.0) and s.dist is None
    odd = SourceSpec(kind="file", path="we?ird#name.npz", key="a b")
    assert SourceSpec.parse(str(odd)) == odd
    with pytest.raises(SourceError, match=r"unknown source scheme 'http'"):
        SourceSpec.parse("http://example.com/x.npz")
    with pytest.raises(SourceError, match=r"unknown option 'seed' for onnx"):
        SourceSpec.parse("onnx:g.onnx?seed=1")
    with pytest.raises(SourceError, match="torchscript sources need latent"):
        SourceSpec.parse("torchscript:g.pt")
    with pytest.raises(SourceError, match="given twice"):
        SourceSpec.parse("builtin:photos?size=3&size=4")
    with pytest.raises(ValueError, match="builtin sources take"):
        SourceSpec(kind="builtin", name="digits", path="x")
    with pytest.raises(SourceError, match="empty"):
        SourceSpec.parse("  ")


def test_open_from_dict_and_value_range_conflict(tmp_path, digits_uint8):
    src = open_source({"kind": "builtin", "name": "digits", "classes": [3]})
    assert src.describe()["classes"] == [3]
    np.save(tmp_path / "f.npy", np.linspace(-1, 1, 2 * 16, dtype=np.float32).reshape(2, 1, 4, 4))
    spec = f"file:{tmp_path / 'f.npy'}?value_range=-1,1"
    assert open_source(spec).describe()["value_range"]["rule"] == "explicit"
    with pytest.raises(SourceError, match="conflicts"):
        open_source(spec, value_range=(0, 1))
    with pytest.raises(SourceError, match="value_range applies to array and image files only"):
        open_source("builtin:digits", value_range=(0, 1))
    with pytest.raises(SourceError, match="cannot open a source from int"):
        open_source(3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generator_with_cuda_rng(onnx_generator):
    path, module = onnx_generator
    src = open_source(f"onnx:{path}?latent=4")
    x = src.sample(10, torch.Generator(device="cuda").manual_seed(3))
    assert x.device.type == "cpu" and torch.equal(x, src.sample(10, torch.Generator(device="cuda").manual_seed(3)))
    z = torch.randn(10, 4, generator=torch.Generator(device="cuda").manual_seed(3), device="cuda").cpu()
    with torch.no_grad():
        assert torch.allclose(x, (module(z) + 1) / 2, atol=1e-5)
