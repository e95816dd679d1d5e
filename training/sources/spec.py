"""SourceSpec: a sample source as data, so the service builds specs without string parsing.

String forms (parse() and str() round-trip):
  data/set.npz            a file: .npz, .npy, a folder of PNG/JPEG, .zip, .tar, .tar.gz/.tgz
  data/set.npz#key        one array of an .npz
  file:PATH?value_range=-1,1#key   the explicit file form (PATH, key percent-encoded)
  builtin:digits?classes=0,1,2     builtin:photos?size=32&count=2000&seed=0
  torchvision:cifar10?root=DIR&split=train
  onnx:PATH?latent=62&dist=uniform&output_range=-1,1
  torchscript:PATH?latent=100,1,1&dist=normal   (opened only with allow_torchscript=True)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal, Union
from urllib.parse import parse_qsl, quote, unquote

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .errors import SourceError

__all__ = ["SourceSpec", "SCHEMES"]

Kind = Literal["file", "builtin", "torchvision", "onnx", "torchscript"]
SCHEMES: tuple[str, ...] = ("file", "builtin", "torchvision", "onnx", "torchscript")

# Which fields each kind takes, and which it needs.
_FIELDS: dict[str, tuple[str, ...]] = {
    "file": ("path", "key", "value_range"),
    "builtin": ("name", "classes", "size", "count", "seed", "images"),
    "torchvision": ("name", "root", "split"),
    "onnx": ("path", "latent", "dist", "output_range"),
    "torchscript": ("path", "latent", "dist", "output_range"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "file": ("path",),
    "builtin": ("name",),
    "torchvision": ("name",),
    "onnx": ("path",),
    "torchscript": ("path", "latent"),
}
# Fields written as the "name" / "path" part of a string, not as query options.
_HEAD = {"file": "path", "builtin": "name", "torchvision": "name", "onnx": "path", "torchscript": "path"}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):(.*)$", re.S)


def _split_list(v):
    if isinstance(v, str):
        return tuple(p.strip() for p in v.split(",") if p.strip() != "")
    return v


class SourceSpec(BaseModel):
    """A sample source: `kind` plus the fields that kind takes (unset fields take defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    path: str | None = None
    key: str | None = None
    value_range: Union[Literal["auto", "none"], tuple[float, float], None] = None
    name: str | None = None
    root: str | None = None
    split: str | None = None
    classes: tuple[int, ...] | None = None
    size: int | None = None
    count: int | None = None
    seed: int | None = None
    images: tuple[str, ...] | None = None
    latent: tuple[int, ...] | None = None
    dist: Literal["uniform", "normal"] | None = None
    output_range: tuple[float, float] | None = None

    @field_validator("classes", "latent", "images", "value_range", "output_range", mode="before")
    @classmethod
    def _lists_from_strings(cls, v):
        if isinstance(v, str) and v not in ("auto", "none"):
            return _split_list(v)
        if isinstance(v, int) and not isinstance(v, bool):
            return (v,)
        return v

    @field_validator("path", "root", mode="before")
    @classmethod
    def _path_to_str(cls, v):
        return str(v) if isinstance(v, Path) else v

    @model_validator(mode="after")
    def _fields_fit_kind(self):
        allowed = _FIELDS[self.kind]
        extra = [f for f in type(self).model_fields if f != "kind" and f not in allowed and getattr(self, f) is not None]
        if extra:
            raise ValueError(f"{self.kind} sources take {', '.join(allowed)}; not {', '.join(extra)}")
        missing = [f for f in _REQUIRED[self.kind] if getattr(self, f) in (None, "")]
        if missing:
            raise ValueError(f"{self.kind} sources need {', '.join(missing)}")
        if self.latent is not None and (len(self.latent) == 0 or any(d < 1 for d in self.latent)):
            raise ValueError(f"latent must be positive sizes like 62 or 100,1,1, got {self.latent}")
        for f in ("value_range", "output_range"):
            v = getattr(self, f)
            if isinstance(v, tuple) and not (all(math.isfinite(x) for x in v) and v[0] < v[1]):
                raise ValueError(f"{f} must be finite low,high with low < high, got {v}")
        for f in ("size", "count"):
            v = getattr(self, f)
            if v is not None and v < 1:
                raise ValueError(f"{f} must be positive, got {v}")
        return self

    # -- strings -------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        """Parse a source string (see the module docstring); raises SourceError."""
        text = str(text).strip()
        if not text:
            raise SourceError("empty source spec")
        m = _SCHEME_RE.match(text)
        if not m or (m.group(1).lower() not in SCHEMES and Path(text).exists()):
            return cls._parse_plain_path(text)
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme not in SCHEMES:
            raise SourceError(
                f"unknown source scheme {m.group(1)!r} in {text!r} (known: {', '.join(SCHEMES)}; "
                f"or give a path to an existing file or folder)"
            )
        fields: dict = {"kind": scheme}
        if scheme == "file" and "#" in rest:
            rest, key = rest.rsplit("#", 1)
            fields["key"] = unquote(key)
        head, _, query = rest.partition("?")
        if head:
            fields[_HEAD[scheme]] = unquote(head)
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as e:
            raise SourceError(f"cannot parse options {query!r} in {text!r}: {e}") from None
        allowed = [f for f in _FIELDS[scheme] if f != _HEAD[scheme] and f != "key"]
        for k, v in pairs:
            if k not in allowed:
                raise SourceError(
                    f"unknown option {k!r} for {scheme} sources in {text!r} "
                    f"(known: {', '.join(allowed) or 'none'})"
                )
            if k in fields:
                raise SourceError(f"option {k!r} given twice in {text!r}")
            fields[k] = v
        return cls._validated(fields, text)

    @classmethod
    def _parse_plain_path(cls, text: str) -> "SourceSpec":
        fields = {"kind": "file", "path": text}
        base, sep, key = text.rpartition("#")
        if sep and base.lower().endswith(".npz") and not Path(text).exists():
            fields.update(path=base, key=key)
        return cls._validated(fields, text)

    @classmethod
    def _validated(cls, fields: dict, text: str) -> "SourceSpec":
        try:
            return cls.model_validate(fields)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors()
            )
            raise SourceError(f"invalid source spec {text!r}: {problems}") from None

    def __str__(self) -> str:
        head_field = _HEAD[self.kind]
        head = getattr(self, head_field) or ""
        opts = [
            f"{f}={_format_value(getattr(self, f))}"
            for f in _FIELDS[self.kind]
            if f not in (head_field, "key") and getattr(self, f) is not None
        ]
        if self.kind == "file" and not opts:
            plain = head if self.key is None else f"{head}#{self.key}"
            if self._plain_ok(plain):
                return plain
        text = f"{self.kind}:{quote(head, safe='/:._-~')}"
        if opts:
            text += "?" + "&".join(opts)
        if self.key is not None:
            text += "#" + quote(self.key, safe="._-~")
        return text

    def _plain_ok(self, plain: str) -> bool:
        """Whether the bare path form parses back to this spec (no scheme-like or special text)."""
        try:
            return not _SCHEME_RE.match(plain) and "?" not in plain and SourceSpec.parse(plain) == self
        except SourceError:
            return False


def _format_value(v) -> str:
    if isinstance(v, tuple):
        return ",".join(_format_value(x) for x in v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return quote(str(v), safe="/:._-~,")
