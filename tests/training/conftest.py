"""Shared fixtures for training tests: small real data sets and files written on the spot.

Fixtures (all write real files; nothing is mocked):
- digits_uint8: scikit-learn's digits as uint8 (1797, 1, 8, 8), values 0..255 (session).
- rgb_uint8: 24 random RGB images (24, 3, 8, 8) uint8, seed 0.
- write_images(folder, array, fmt="png", prefix="img") -> list[Path]: one PNG/JPEG per image
  of a uint8 (N, C, H, W) array (C = 1 or 3), named prefix00000.png, ...
- make_archive(folder, dest) -> dest: pack a folder into .zip / .tar / .tar.gz / .tgz (by suffix),
  member names relative to the folder.
- TinyGenerator: a small torch generator class (latent (d,) -> tanh images (C, H, W)).
- onnx_exporter: export_onnx(module, example_latent, path, dynamic_batch=True) -> path.
- onnx_generator: (path, module) of a TinyGenerator(latent 4, 3x8x8) exported to ONNX with a
  dynamic batch axis (session).
- torchscript_generator: (path, module) of the same kind of generator saved as TorchScript (session).
- one_thread (autouse): torch runs on one thread in these tests; tiny critics run faster that way,
  and far faster when the CPU is shared.
- mnist_root: a folder holding a tiny MNIST in torchvision's on-disk format (MNIST/raw idx files;
  train 12 images, test 5) -> (root, train_images uint8 (12, 28, 28)).
"""

from __future__ import annotations

import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_uint8() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images  # 0..16
    return np.round(images * (255.0 / 16.0)).astype(np.uint8)[:, None]


@pytest.fixture
def rgb_uint8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(24, 3, 8, 8), dtype=np.uint8)


def _write_images(folder, array, fmt="png", prefix="img"):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    assert arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[1] in (1, 3), arr.shape
    paths = []
    for i, img in enumerate(arr):
        hwc = np.transpose(img, (1, 2, 0))
        pil = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
        p = folder / f"{prefix}{i:05d}.{fmt}"
        pil.save(p, quality=95) if fmt in ("jpg", "jpeg") else pil.save(p)
        paths.append(p)
    return paths


@pytest.fixture
def write_images():
    return _write_images


def _make_archive(folder, dest):
    folder, dest = Path(folder), Path(dest)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    name = dest.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, p.relative_to(folder).as_posix())
    else:
        mode = "w:gz" if name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(dest, mode) as tf:
            for p in files:
                tf.add(p, p.relative_to(folder).as_posix())
    return dest


@pytest.fixture
def make_archive():
    return _make_archive


class TinyGenerator(torch.nn.Module):
    """latent (d,) -> tanh images (C, H, W); small enough to export in a fraction of a second."""

    def __init__(self, latent: int = 4, shape=(3, 8, 8), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.shape = tuple(shape)
        self.fc = torch.nn.Linear(latent, int(np.prod(shape)))

    def forward(self, z):
        return torch.tanh(self.fc(z)).reshape(z.shape[0], *self.shape)


@pytest.fixture(scope="session")
def tiny_generator_cls():
    return TinyGenerator


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool = True) -> Path:
    """torch.onnx.export, by default with a dynamic batch axis (TorchScript-based exporter: fast)."""
    axes = {"z": {0: "n"}, "x": {0: "n"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, input_names=["z"], output_names=["x"],
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="session")
def onnx_exporter():
    """export_onnx(module, example_latent, path, dynamic_batch=True) -> path."""
    return export_onnx


@pytest.fixture(scope="session")
def onnx_generator(tmp_path_factory):
    g = TinyGenerator().eval()
    path = export_onnx(g, torch.zeros(2, 4), tmp_path_factory.mktemp("onnx") / "gen.onnx")
    return path, g


@pytest.fixture(scope="session")
def torchscript_generator(tmp_path_factory):
    g = TinyGenerator(seed=1).eval()
    path = tmp_path_factory.mktemp("ts") / "gen.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(g).save(str(path))
    return path, g


def _write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST idx format: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, raw bytes."""
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", train)
    _write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, size=12, dtype=np.uint8))
    _write_idx(raw / "t10k-images-idx3-ubyte", test)
    _write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, size=5, dtype=np.uint8))
    return tmp_path / "tv", train
