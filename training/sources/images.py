"""PNG/JPEG image sets: a folder (recursive), a .zip, or a .tar / .tar.gz / .tgz archive.

Rules (documented in one place):
- Images are the files ending .png/.jpg/.jpeg (any case), in sorted path order. Other files
  (labels, READMEs) are ignored and counted in describe(); hidden files/folders (".*") and
  macOS "__MACOSX" folders are skipped. Files named like other image formats (.gif, .bmp,
  .webp, .tif) are an error rather than silently dropped.
- Every image must have the same size and mode; modes L (grey) and RGB only.
- Archive members whose names escape the root (absolute paths, "..") reject the whole archive,
  as do links; nothing is ever extracted to disk.
- Decoded images are cached as uint8 when the whole set fits under `cache_limit_bytes`;
  otherwise they are decoded on demand at read() time (tar members keep their encoded bytes
  in memory, since compressed tar streams cannot be read at random).
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import ArraySource, FiniteSource, SourceError, as_index_array
from .formats import IMAGE_SUFFIXES, in_skipped, skipped, unreadable_image

__all__ = ["open_image_set", "IMAGE_SUFFIXES", "ARCHIVE_SUFFIXES", "DEFAULT_CACHE_BYTES", "archive_kind"]

_OTHER_IMAGE_SUFFIXES = (".gif", ".bmp", ".webp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
DEFAULT_CACHE_BYTES = 2 << 30
_MODES = {"L": 1, "RGB": 3}
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)


def archive_kind(path: Path) -> str | None:
    """'zip', 'tar' or None, from the file name."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if any(name.endswith(s) for s in ARCHIVE_SUFFIXES):
        return "tar"
    return None


def open_image_set(path: Path, *, cache_limit_bytes: int | None = None, value_range="auto") -> FiniteSource:
    """Open a folder or archive of PNG/JPEG images as a finite source."""
    limit = DEFAULT_CACHE_BYTES if cache_limit_bytes is None else int(cache_limit_bytes)
    kind = "folder" if path.is_dir() else archive_kind(path)
    if kind == "folder":
        names, ignored = _select(_walk(path), str(path))
        loaders = {n: (lambda n=n: (path / n).read_bytes()) for n in names}
        return _build(path, "images", names, ignored, loaders, limit, value_range)
    if kind == "zip":
        return _open_zip(path, limit, value_range)
    if kind == "tar":
        return _open_tar(path, limit, value_range)
    raise SourceError(f"{path}: not an image folder or a .zip/.tar/.tar.gz/.tgz archive")


def _walk(root: Path) -> list[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not skipped(x)]
        rel = Path(d).relative_to(root)
        out.extend((rel / f).as_posix() for f in files)
    return out


def _check_member_name(name: str, archive: Path) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise SourceError(
            f"{archive}: member {name!r} escapes the archive root (absolute path or '..'); "
            f"refusing the archive"
        )


def _select(names: list[str], where: str) -> tuple[list[str], int]:
    """Pick the image files (sorted); count the rest; refuse other image formats."""
    images, ignored = [], 0
    for n in names:
        if in_skipped(n):
            continue
        low = n.lower()
        if low.endswith(IMAGE_SUFFIXES):
            images.append(n)
        elif low.endswith(_OTHER_IMAGE_SUFFIXES):
            raise SourceError(f"{where}: {n!r} is not PNG or JPEG; convert the set to PNG")
        else:
            ignored += 1
    if not images:
        raise SourceError(f"{where}: no PNG/JPEG images found ({ignored} other file(s) ignored)")
    return sorted(images), ignored


def _open_zip(path: Path, limit: int, value_range) -> FiniteSource:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except _ARCHIVE_ERRORS as e:
        raise SourceError(f"{path}: corrupt or truncated zip archive ({e})") from None
    for i in infos:
        _check_member_name(i.filename, path)
    names, ignored = _select([i.filename for i in infos], str(path))

    load = _ZipReader(path)
    loaders = {n: (lambda n=n: load(n)) for n in names}
    return _build(path, "zip", names, ignored, loaders, limit, value_range)


class _ZipReader:
    """Reads members of one zip, keeping the archive open (reopened in a forked worker)."""

    def __init__(self, path: Path):
        self._path, self._zf, self._pid = path, None, None

    def __call__(self, name: str) -> bytes:
        try:
            if self._zf is None or self._pid != os.getpid():
                self._zf, self._pid = zipfile.ZipFile(self._path), os.getpid()
            return self._zf.read(name)
        except _ARCHIVE_ERRORS as e:
            raise SourceError(f"{self._path}: corrupt or truncated zip archive at {name!r} ({e})") from None


def _open_tar(path: Path, limit: int, value_range) -> FiniteSource:
    blobs: dict[str, bytes] = {}
    others: list[str] = []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                _check_member_name(m.name, path)
                is_image = m.name.lower().endswith(IMAGE_SUFFIXES)
                if (m.issym() or m.islnk()) and is_image:
                    raise SourceError(f"{path}: member {m.name!r} is a link; only regular files are read")
                if not m.isfile():
                    continue
                if is_image:
                    blobs[m.name] = tf.extractfile(m).read()
                else:
                    others.append(m.name)
            # A tar cut at a member boundary still parses; its end-of-archive zero block is gone.
            tf.fileobj.seek(tf.offset)
            if tf.fileobj.read(512) != bytes(512):
                raise SourceError(f"{path}: corrupt or truncated tar archive (no end-of-archive marker)")
    except SourceError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise SourceError(f"{path}: corrupt or truncated tar archive ({e})") from None
    names, ignored = _select(list(blobs) + others, str(path))
    loaders = {n: (lambda n=n: blobs[n]) for n in names}
    return _build(path, "tar", names, ignored, loaders, limit, value_range)


def _decode_header(raw: bytes, where: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise SourceError(unreadable_image(where, e)) from None
    if img.format not in ("PNG", "JPEG", "MPO"):  # MPO: camera JPEGs with extra frames
        raise SourceError(f"{where}: is {img.format}, not PNG or JPEG")
    if img.mode not in _MODES:
        raise SourceError(
            f"{where}: image mode {img.mode} is not supported; convert the images to RGB or L (grey)"
        )
    return img


def _pixels(img: Image.Image, where: str) -> np.ndarray:
    """Decode fully into (H, W, C) uint8; a truncated or corrupt file is an error here."""
    try:
        arr = np.asarray(img)
    except (OSError, SyntaxError, ValueError, zlib.error) as e:
        raise SourceError(f"{where}: corrupt or truncated image ({e})") from None
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _build(path, kind, names, ignored, loaders, limit, value_range) -> FiniteSource:
    first = _decode_header(loaders[names[0]](), f"{path}: {names[0]}")
    mode, size = first.mode, first.size
    c, (w, h) = _MODES[mode], size
    info = {"kind": kind, "path": str(path), "ignored_files": ignored}
    cache = len(names) * h * w * c <= limit
    data = np.empty((len(names), h, w, c), dtype=np.uint8) if cache else None
    for i, n in enumerate(names):
        where = f"{path}: {n}"
        img = first if i == 0 else _decode_header(loaders[n](), where)
        if img.mode != mode or img.size != size:
            raise SourceError(
                f"{path}: images differ: {names[0]!r} is {h}x{w} {mode} but {n!r} is "
                f"{img.size[1]}x{img.size[0]} {img.mode} (HxW); all images of a set must match"
            )
        if cache:
            data[i] = _pixels(img, where)
    if cache:
        return ArraySource(data, what=str(path), info={**info, "cached": True}, value_range=value_range, layout="NHWC")
    return _LazyImageSource(path, names, loaders, (c, h, w), mode, size, info, value_range)


class _LazyImageSource(FiniteSource):
    """Images decoded at read() time, for sets too large to cache."""

    def __init__(self, path, names, loaders: dict[str, Callable[[], bytes]], shape, mode, size, info, value_range):
        if value_range not in ("auto", (0, 255), (0.0, 255.0)):
            raise SourceError(f"{path}: images are 8-bit; value_range must be 'auto' (0..255)")
        self.shape = shape
        self._path, self._names, self._loaders = path, names, loaders
        self._mode, self._size, self._info = mode, size, info

    def __len__(self) -> int:
        return len(self._names)

    def read(self, indices) -> torch.Tensor:
        idx = as_index_array(indices, len(self), str(self._path))
        out = np.empty((idx.size, self.shape[1], self.shape[2], self.shape[0]), dtype=np.uint8)
        for j, i in enumerate(idx):
            n = self._names[i]
            where = f"{self._path}: {n}"
            img = _decode_header(self._loaders[n](), where)
            if img.mode != self._mode or img.size != self._size:
                raise SourceError(f"{where}: changed since the set was opened")
            out[j] = _pixels(img, where)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()

    def describe(self) -> dict:
        return {
            **self._info,
            "cached": False,
            "count": len(self),
            "shape": list(self.shape),
            "dtype": "uint8",
            "layout": "NHWC",
            "value_range": {"input": [0.0, 255.0], "rule": "auto: uint8 [0, 255]"},
            "is_generator": False,
        }
