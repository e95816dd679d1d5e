"""The one place where a package's public names are imported on first use (PEP 562).

Why it is still needed: importing any training module first runs ``training/__init__.py`` (and
``training/sources/__init__.py`` for the source modules). The client imports the torch-free ones
(training.options, training.result, training.table, training.sources.spec, ...); were the package
``__init__`` to import the estimator eagerly, every client would load torch. import-linter
(pyproject.toml) checks the modules' own imports; this keeps the packages' conveniences
(``from training import estimate_w1``) from undoing it."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``homes`` is imported from its
    module (absolute, or relative to ``package``) when first asked for, then kept."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
