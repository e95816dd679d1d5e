"""The content store: every accepted upload lives at ``<data_dir>/uploads/<sha256><suffix>``, so
identical content is stored once (the records deduplicate per owner, see ``records``). A stored
file is removed only when no record names it any more."""
from __future__ import annotations

import os
from pathlib import Path

from service.server.errors import refuse
from service.server.uploads.receive import Upload

GENERATOR_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


def suffix_of(filename: str, allowed) -> str:
    """The recognised suffix of ``filename`` (``.tar.gz`` counts as one), else 422."""
    name = filename.lower()
    for s in sorted(allowed, key=len, reverse=True):
        if name.endswith(s):
            return s
    refuse(f"file {filename!r}: unsupported type; expected one of {', '.join(allowed)}")


def with_suffix(upload: Upload, suffix: str) -> Path:
    """Give the received temporary file its suffix (sources are opened by their suffix)."""
    named = upload.path.with_name(upload.path.name + suffix)
    upload.path.rename(named)
    upload.path = named
    return named


def address(uploads_dir: Path, upload: Upload, suffix: str) -> Path:
    """Where content like this upload's is stored."""
    return uploads_dir / f"{upload.sha256}{suffix}"


def store(upload: Upload, uploads_dir: Path, suffix: str) -> Path:
    """Move a checked upload to its content address (keeping an identical existing file)."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    dest = address(uploads_dir, upload, suffix)
    if dest.exists():
        upload.discard()
    else:
        os.replace(upload.path, dest)
    return dest
