"""torchvision data sets read from a local root (downloaded only when download=True).

The images are taken straight from the data set's uint8 `.data` array (no per-item PIL
round trip). CIFAR files are Python pickles: torchvision verifies their MD5 against the
official archives before loading them, so only the published files are ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArraySource, SourceError

__all__ = ["TORCHVISION_DATASETS", "open_torchvision"]

# name -> (torchvision class, splits, how the split is passed, expected location, where to get it)
TORCHVISION_DATASETS: dict[str, dict] = {
    "cifar10": dict(cls="CIFAR10", splits=("train", "test"), arg="train", where="cifar-10-batches-py/",
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract into ROOT)"),
    "cifar100": dict(cls="CIFAR100", splits=("train", "test"), arg="train", where="cifar-100-python/",
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract into ROOT)"),
    "mnist": dict(cls="MNIST", splits=("train", "test"), arg="train",
                  where="MNIST/raw/",
                  url="the four MNIST idx files (train/t10k images-idx3 and labels-idx1, gunzipped) "
                      "into ROOT/MNIST/raw/"),
    "fashion-mnist": dict(cls="FashionMNIST", splits=("train", "test"), arg="train",
                          where="FashionMNIST/raw/",
                          url="the four Fashion-MNIST idx files (train/t10k images-idx3 and labels-idx1, "
                              "gunzipped) into ROOT/FashionMNIST/raw/"),
    "svhn": dict(cls="SVHN", splits=("train", "test", "extra"), arg="split", where="{split}_32x32.mat",
                 url="http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat into ROOT"),
    "stl10": dict(cls="STL10", splits=("train", "test", "unlabeled", "train+unlabeled"), arg="split",
                  where="stl10_binary/",
                  url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (extract into ROOT)"),
}


def open_torchvision(name: str, root: str | None, split: str | None = None, *, download: bool = False,
                     value_range="auto") -> ArraySource:
    """Open a torchvision data set split from `root` as a uint8 array source."""
    if name not in TORCHVISION_DATASETS:
        raise SourceError(
            f"unknown torchvision data set {name!r} (known: {', '.join(TORCHVISION_DATASETS)})"
        )
    meta = TORCHVISION_DATASETS[name]
    split = split or "train"
    if split not in meta["splits"]:
        raise SourceError(f"torchvision:{name}: unknown split {split!r} (known: {', '.join(meta['splits'])})")
    if not root:
        raise SourceError(f"torchvision:{name}: give the data set root, e.g. torchvision:{name}?root=DIR")
    import torchvision.datasets as tvd

    root_path = Path(root).expanduser()
    kwargs = {"train": split == "train"} if meta["arg"] == "train" else {"split": split}
    try:
        ds = getattr(tvd, meta["cls"])(str(root_path), download=download, **kwargs)
    except (RuntimeError, OSError, ValueError) as e:
        where = root_path / meta["where"].format(split=split)
        how = meta["url"].format(split=split).replace("ROOT", str(root_path))
        raise SourceError(
            f"torchvision:{name} ({split}) not found or corrupted: looked in {where} ({e}). "
            f"Get it with download=True (needs internet) or place {how}"
        ) from None
    data = ds.data
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    info = {"kind": "torchvision", "name": name, "root": str(root_path), "split": split}
    return ArraySource(data, what=f"torchvision:{name} ({split}) in {root_path}", info=info, value_range=value_range)
