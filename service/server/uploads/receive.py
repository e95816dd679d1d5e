"""A multipart upload body, parsed as it arrives by streaming-form-data: the ``file`` part goes to a
temporary file while it is hashed, so a large upload never sits in memory, and an oversized one is
cut off at the limit (413) without ever being complete on disk. The small form fields beside it
(name, a generator's latent specification) are kept, each within ``MAX_FIELD_BYTES``."""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget, ValueTarget
from streaming_form_data.validators import MaxSizeValidator, ValidationError

from service.contracts import GeneratorForm
from service.server.errors import Invalid, TooLarge

FIELDS = ("name", *GeneratorForm.model_fields)  # every form field an upload route reads
MAX_FIELD_BYTES = 10_000
HEADER_SLACK = 64 * 1024  # multipart framing and fields beside the file, in a declared Content-Length


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


class HashedFile(BaseTarget):
    """The ``file`` part: written to ``path``, hashed and counted as it arrives; past ``limit`` bytes
    it stops with :class:`TooLarge` (the parser passes the exception on)."""

    def __init__(self, path: Path, limit: int):
        super().__init__()
        self.path, self.limit = path, limit
        self.digest, self.size, self.out, self.complete = hashlib.sha256(), 0, None, False

    def on_start(self) -> None:
        if self.out is not None:
            raise Invalid("more than one multipart field 'file': send one file per upload")
        self.out = open(self.path, "wb")

    def on_data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"upload exceeds the limit of {self.limit} bytes")
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_finish(self) -> None:
        self.out.close()
        self.complete = True

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


class FormField(ValueTarget):
    """A small form field, kept in memory up to ``MAX_FIELD_BYTES``; says whether it arrived whole."""

    def __init__(self):
        super().__init__(validator=MaxSizeValidator(MAX_FIELD_BYTES))
        self.started = self.complete = False

    def on_start(self) -> None:
        self.started = True

    def on_finish(self) -> None:
        self.complete = True


async def receive_upload(request: Request, tmp_dir: Path, limit: int) -> Upload:
    """Stream the multipart body's ``file`` part into ``tmp_dir``; 413 beyond ``limit`` bytes, 422 for
    a malformed body. Nothing is left in ``tmp_dir`` when it raises."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + HEADER_SLACK:
        raise TooLarge(f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")
    try:
        parser = StreamingFormDataParser(request.headers)
    except ParseFailedException:
        raise Invalid("expected a multipart/form-data body with a 'file' field") from None
    tmp_dir.mkdir(parents=True, exist_ok=True)
    target = HashedFile(tmp_dir / f"upload-{uuid.uuid4().hex}", limit)
    parser.register("file", target)
    values = {name: FormField() for name in FIELDS}
    for name, value in values.items():
        parser.register(name, value)
    try:
        async for chunk in request.stream():
            parser.data_received(chunk)
        return _received(target, values)
    except (ParseFailedException, ValidationError, UnicodeDecodeError) as exc:
        target.path.unlink(missing_ok=True)
        raise Invalid(f"malformed multipart body: {exc}") from None
    except BaseException:  # refused, or the client went away: nothing is kept
        target.path.unlink(missing_ok=True)
        raise
    finally:
        target.close()


def _received(target: HashedFile, values: dict[str, FormField]) -> Upload:
    """The upload, once the body has ended: complete, with a file, and no NUL byte in a name or field
    (PostgreSQL cannot store one; nothing legitimate has one)."""
    if (target.out is not None and not target.complete) or any(v.started and not v.complete for v in values.values()):
        raise Invalid("malformed multipart body: the body ends without its closing boundary (truncated upload?)")
    if target.multipart_filename is None or not target.complete:
        raise Invalid("missing multipart field 'file' (with a filename)")
    fields = {name: v.value.decode("utf-8", "replace") for name, v in values.items() if v.complete}
    for key, value in [("filename", target.multipart_filename), *fields.items()]:
        if "\x00" in value:
            raise Invalid(f"multipart field {key!r} contains a NUL byte")
    return Upload(target.path, os.path.basename(target.multipart_filename) or "upload", target.digest.hexdigest(),
                  target.size, fields)
