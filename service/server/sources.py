"""The one resolver of source references: ``{"dataset": id}``, ``{"catalog": name}`` or
``{"generator": id, "samples": n}`` -> what the worker opens, the shape the API checks at submit, and
the public identity a result names (id, name, hash; never a server path).

The API (at submit) and the worker (at run time) both call :func:`resolve`, so the two can never
disagree about what a reference means.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.server.db import Dataset, Generator
from service.server.settings import Settings


class UnknownSource(ValueError):
    """The reference names nothing this owner can use (a missing id, an unconfigured catalog name)."""


@dataclass
class Resolved:
    """What a source reference stands for."""

    spec: Any  # a training SourceSpec, or the catalog entry's spec string
    shape: tuple[int, int, int] | None  # None: a catalog entry not opened (the worker does not need it)
    identity: dict[str, Any] = field(default_factory=dict)  # what results show instead of paths
    count: int | None = None  # samples of a finite set, when known (the API checks splits at submit)


class Catalog:
    """Count and shape of each operator-configured entry, opened once and remembered."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._info: dict[str, dict] = {}
        self._lock = threading.Lock()

    def info(self, name: str) -> dict:
        """``{"count", "shape"}``, or ``{"error"}`` for an entry that cannot be opened (not cached)."""
        with self._lock:
            if name in self._info:
                return self._info[name]
        from training.sources import open_source

        try:
            src = open_source(self.settings.catalog[name].source)
            info = {"count": len(src) if not src.is_generator else None, "shape": list(src.shape)}
        except Exception as exc:  # a misconfigured entry is reported, not fatal
            return {"count": None, "shape": None, "error": str(exc)}
        with self._lock:
            self._info[name] = info
        return info


def resolve(session: Session, settings: Settings, owner: str, ref: dict,
            catalog: Catalog | None = None) -> Resolved:
    """The source behind ``ref`` for ``owner``; :class:`UnknownSource` when it names nothing usable.

    With ``catalog`` a catalog entry is opened (once) for its shape; without, its shape is None."""
    from training.sources import SourceSpec

    if ref.get("dataset") is not None:
        d = session.scalar(select(Dataset).where(Dataset.id == ref["dataset"], Dataset.owner == owner))
        if d is None:
            raise UnknownSource(f"no dataset {ref['dataset']!r}")
        return Resolved(SourceSpec(kind="file", path=d.path), tuple(d.shape),
                        {"dataset": d.id, "name": d.name, "sha256": d.sha256}, d.count)
    if ref.get("generator") is not None:
        g = session.scalar(select(Generator).where(Generator.id == ref["generator"], Generator.owner == owner))
        if g is None:
            raise UnknownSource(f"no generator {ref['generator']!r}")
        spec = SourceSpec(kind=g.format, path=g.path, latent=tuple(g.latent_shape), dist=g.latent_distribution,
                          output_range=tuple(g.output_range))
        return Resolved(spec, tuple(g.output_shape), {"generator": g.id, "name": g.name, "sha256": g.sha256})
    name = ref.get("catalog")
    entry = settings.catalog.get(name)
    if entry is None:
        known = ", ".join(sorted(settings.catalog)) or "none configured"
        raise UnknownSource(f"unknown catalog name {name!r} (known: {known})")
    shape, count = None, None
    if catalog is not None:
        info = catalog.info(name)
        if info.get("shape") is None:
            raise UnknownSource(f"catalog entry {name!r} cannot be opened: {info.get('error')}")
        shape, count = tuple(info["shape"]), info.get("count")
    return Resolved(entry.source, shape, {"catalog": name}, count)


def open_resolved(resolved: Resolved, settings: Settings):
    """The opened SampleSource (TorchScript only where the operator allows it)."""
    from training.sources import open_source

    return open_source(resolved.spec, allow_torchscript=settings.allow_torchscript)


# keys of a source's self-description that name server-side locations
_PRIVATE_KEYS = ("path", "root", "images", "folder")


def public_description(described: dict, identity: dict) -> dict:
    """A result's ``sources.<side>``: the source's own description without server paths, plus the
    reference's public identity (dataset id, name, sha256 / catalog name / generator id)."""
    return {**{k: v for k, v in described.items() if k not in _PRIVATE_KEYS}, **identity}
