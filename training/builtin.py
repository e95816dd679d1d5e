"""Built-in offline data sets that ship with installed packages (no download).

- digits: scikit-learn's 8×8 handwritten digits (1,797 grey images, values 0..16).
- photos: square patches cut at random from scikit-image's sample photographs (RGB uint8),
  deterministic given (size, count, seed, images).

Each loader returns (array, value_range, info): the raw array, the stored range that maps to
[0, 1], and a JSON-able description.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["BUILTIN_DATASETS", "PHOTO_NAMES", "load_builtin", "digits", "photos"]

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
BUILTIN_DATASETS = ("digits", "photos")


def digits(classes=None) -> tuple[np.ndarray, tuple[float, float], dict]:
    """(N, 8, 8) uint8 digits in 0..16, optionally only the given classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images, target = d.images.astype(np.uint8), d.target
    info = {"kind": "builtin", "name": "digits"}
    if classes is not None:
        classes = sorted({int(c) for c in classes})
        if not classes or any(c < 0 or c > 9 for c in classes):
            raise ValueError(f"builtin:digits: classes must be digits 0..9, got {classes}")
        images = images[np.isin(target, classes)]
        info["classes"] = classes
    return np.ascontiguousarray(images), (0.0, 16.0), info


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img.setflags(write=False)
    return img


def photos(size: int = 32, count: int = 2000, seed: int = 0, images=None) -> tuple[np.ndarray, tuple[float, float], dict]:
    """(count, size, size, 3) uint8 patches; image and position drawn with numpy's PCG64(seed)."""
    names = tuple(images) if images else PHOTO_NAMES
    unknown = [n for n in names if n not in PHOTO_NAMES]
    if unknown:
        raise ValueError(f"builtin:photos: unknown image(s) {unknown} (known: {', '.join(PHOTO_NAMES)})")
    pics = [_photo(n) for n in names]
    limit = min(min(p.shape[:2]) for p in pics)
    if not 1 <= size <= limit:
        raise ValueError(f"builtin:photos: size must be 1..{limit} for these images, got {size}")
    if count < 1:
        raise ValueError(f"builtin:photos: count must be positive, got {count}")
    rng = np.random.default_rng(seed)
    which = rng.integers(len(pics), size=count)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i, k in enumerate(which):
        h, w = pics[k].shape[:2]
        y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
        out[i] = pics[k][y : y + size, x : x + size]
    info = {"kind": "builtin", "name": "photos", "size": size, "count": count, "seed": seed, "images": list(names)}
    return out, (0.0, 255.0), info


def load_builtin(name: str, **options) -> tuple[np.ndarray, tuple[float, float], dict]:
    """Dispatch by name; options not taken by that data set are an error."""
    loaders = {"digits": (digits, {"classes"}), "photos": (photos, {"size", "count", "seed", "images"})}
    if name not in loaders:
        raise ValueError(f"unknown built-in data set {name!r} (known: {', '.join(BUILTIN_DATASETS)})")
    fn, allowed = loaders[name]
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - allowed)
    if extra:
        raise ValueError(f"builtin:{name} takes {', '.join(sorted(allowed))}; not {', '.join(extra)}")
    return fn(**given)
