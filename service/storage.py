"""Uploaded files: streamed to disk while hashed, size-limited, checked, then stored by content.

The multipart body is parsed as it arrives (python-multipart's streaming parser), so a large
upload never sits in memory and an oversized one is cut off at the limit (413) without ever
being complete on disk. Files live at ``<data_dir>/uploads/<sha256><suffix>``: identical content
is stored once; the database deduplicates per owner.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

DATASET_SUFFIXES = (".npz", ".npy", ".zip", ".tar", ".tar.gz", ".tgz")
GENERATOR_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}
MAX_FIELD_BYTES = 10_000


@dataclass
class Upload:
    """A received file (in the temp area) plus the small form fields that came with it."""

    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def suffix_of(filename: str, allowed) -> str:
    """The recognised suffix of ``filename`` (``.tar.gz`` counts as one), else 422."""
    name = filename.lower()
    for s in sorted(allowed, key=len, reverse=True):
        if name.endswith(s):
            return s
    raise HTTPException(422, f"file {filename!r}: unsupported type; expected one of {', '.join(allowed)}")


async def receive_upload(request: Request, tmp_dir: Path, limit: int) -> Upload:
    """Stream the multipart body's ``file`` part into ``tmp_dir``; 413 beyond ``limit`` bytes."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(422, "expected a multipart/form-data body with a 'file' field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise HTTPException(413, f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")

    tmp_dir.mkdir(parents=True, exist_ok=True)
    state: dict = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None}
    fields: dict[str, str] = {}
    digest = hashlib.sha256()
    out_path = tmp_dir / f"upload-{uuid.uuid4().hex}"
    out = None
    size = 0
    filename = None
    too_big = False

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        nonlocal out, filename
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        fname = disp.get(b"filename")
        state["filename"] = fname.decode("utf-8", "replace") if fname is not None else None
        state["buf"] = b""
        if state["name"] == "file" and state["filename"] is not None and out is None:
            filename = state["filename"]
            out = open(out_path, "wb")

    def on_part_data(data, start, end):
        nonlocal size, too_big
        chunk = data[start:end]
        if state["name"] == "file" and state["filename"] is not None:
            if out is None or out.closed or too_big:
                return
            size += len(chunk)
            if size > limit:
                too_big = True
                return
            digest.update(chunk)
            out.write(chunk)
        elif len(state["buf"]) < MAX_FIELD_BYTES:
            state["buf"] += chunk

    def on_part_end():
        if state["name"] == "file" and out is not None:
            out.close()
        elif state["name"] and state["filename"] is None:
            fields[state["name"]] = state["buf"].decode("utf-8", "replace")
        state["headers"] = {}

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if too_big:
                break
        parser.finalize()
    except HTTPException:
        raise
    except Exception as exc:  # a malformed body: nothing is kept
        if out is not None:
            out.close()
        out_path.unlink(missing_ok=True)
        if too_big:
            raise HTTPException(413, f"upload exceeds the limit of {limit} bytes") from None
        raise HTTPException(422, f"malformed multipart body: {exc}") from None
    finally:
        if out is not None and not out.closed:
            out.close()
    if too_big:
        out_path.unlink(missing_ok=True)
        raise HTTPException(413, f"upload exceeds the limit of {limit} bytes")
    if filename is None:
        out_path.unlink(missing_ok=True)
        raise HTTPException(422, "missing multipart field 'file' (with a filename)")
    return Upload(out_path, os.path.basename(filename) or "upload", digest.hexdigest(), size, fields)


def check_archive(path: Path, suffix: str) -> None:
    """Reject archives that are unreadable or whose members could escape their folder.

    open_source reads members by name only, but the service refuses such archives outright:
    they are never legitimate sample sets.
    """
    def bad_name(name: str) -> bool:
        p = PurePosixPath(name.replace("\\", "/"))
        return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")

    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip()
                if bad is not None:
                    raise ValueError(f"member {bad!r} is corrupt (CRC mismatch)")
            links = []
        elif suffix in (".tar", ".tar.gz", ".tgz"):
            with tarfile.open(path) as tf:
                members = tf.getmembers()
            names = [m.name for m in members]
            links = [m.name for m in members if not (m.isfile() or m.isdir())]
        else:
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise HTTPException(422, f"archive is corrupt or truncated: {exc}") from None
    escaping = [n for n in names if bad_name(n)]
    if escaping:
        raise HTTPException(422, f"archive member {escaping[0]!r} escapes the archive's folder")
    if links:
        raise HTTPException(422, f"archive member {links[0]!r} is a link or special file; only "
                                 "regular files are accepted")


def store(upload: Upload, uploads_dir: Path, suffix: str) -> Path:
    """Move a checked upload to its content address (keeping an identical existing file)."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    dest = uploads_dir / f"{upload.sha256}{suffix}"
    if dest.exists():
        upload.discard()
    else:
        os.replace(upload.path, dest)
    return dest
