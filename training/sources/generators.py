"""Generator sources: an ONNX model run with onnxruntime, or (opt-in) a TorchScript module.

A generator maps a latent batch (n, *latent) to images (n, C, H, W) in its declared
output_range, which is mapped linearly onto [0, 1]. Latents are drawn with the caller's
torch.Generator, so sample(n, g) is deterministic given g's state. Defaults: dist=normal,
output_range=(-1, 1) (a tanh output). Output policy: values within 1e-4 of the range width
outside it are float noise and clamped; anything further, or NaN/Inf, is an error, because a
wrongly declared range silently rescales every distance.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import RANGE_TOLERANCE, SampleSource, SourceError

__all__ = ["GeneratorSource", "open_callable", "open_onnx", "open_torchscript"]

_ONNX_FLOATS = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_BATCH = 256  # generator batch when the model's batch size is free


class GeneratorSource(SampleSource):
    """Samples drawn by pushing random latents through a model."""

    is_generator = True

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], *, what: str, info: dict,
                 latent: tuple[int, ...], dist: str, output_range: tuple[float, float],
                 fixed_batch: int | None = None):
        self._run, self._what, self._info = run, what, info
        self.latent, self.dist = tuple(int(d) for d in latent), dist
        lo, hi = (float(v) for v in output_range)
        if not lo < hi:
            raise SourceError(f"{what}: output_range must be low,high with low < high, got {output_range}")
        self.output_range = (lo, hi)
        self._fixed_batch = fixed_batch
        probe = self._generate(2, torch.Generator().manual_seed(0))
        self.shape = tuple(probe.shape[1:])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        n = int(n)
        if n < 0:
            raise ValueError(f"{self._what}: sample count must be >= 0, got {n}")
        x = self._generate(n, generator)
        if tuple(x.shape[1:]) != self.shape:
            raise SourceError(f"{self._what}: output shape changed from {self.shape} to {tuple(x.shape[1:])}")
        return x

    def _latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        draw = torch.rand if self.dist == "uniform" else torch.randn
        return draw((n, *self.latent), generator=generator, device=generator.device).cpu()

    def _generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = self._latents(n, generator)
        step = self._fixed_batch or _BATCH
        outs = []
        for start in range(0, n, step):
            zb = z[start : start + step]
            m = zb.shape[0]
            if self._fixed_batch and m < step:  # pad to the model's fixed batch; drop the padding
                zb = torch.cat([zb, zb.new_zeros((step - m, *self.latent))])
            outs.append(self._check(self._run(zb)[:m]))
        if not outs:
            return torch.empty((0, *getattr(self, "shape", ())), dtype=torch.float32)
        return torch.cat(outs)

    def _check(self, y: torch.Tensor) -> torch.Tensor:
        y = y.detach().to("cpu", torch.float32)
        if y.ndim != 4 or y.shape[1] not in (1, 3):
            raise SourceError(
                f"{self._what}: output shape {tuple(y.shape)} is not (n, C, H, W) with C in {{1, 3}}"
            )
        bad = int((~torch.isfinite(y)).sum())
        if bad:
            raise SourceError(f"{self._what}: generated {bad} NaN/Inf value(s)")
        lo, hi = self.output_range
        tol = RANGE_TOLERANCE * (hi - lo)
        ymin, ymax = float(y.min()), float(y.max())
        if ymin < lo - tol or ymax > hi + tol:
            raise SourceError(
                f"{self._what}: outputs span [{ymin:g}, {ymax:g}], outside the declared "
                f"output_range [{lo:g}, {hi:g}]; declare the generator's true output_range"
            )
        return ((y - lo) / (hi - lo)).clamp_(0.0, 1.0)

    def describe(self) -> dict:
        return {
            **self._info,
            "count": None,
            "shape": list(self.shape),
            "latent": list(self.latent),
            "dist": self.dist,
            "value_range": {"input": list(self.output_range), "rule": "declared output_range"},
            "is_generator": True,
        }


def open_callable(fn, latent=None, dist=None, output_range=None) -> GeneratorSource:
    """A generator in this process: a torch nn.Module or any callable z -> images (a tensor).

    For evaluating checkpoints inside a training loop. An nn.Module runs under no_grad on the
    device of its parameters, in eval mode for the duration of each call (its train/eval mode is
    restored afterwards); a plain callable gets CPU latents and may return a tensor on any device."""
    if latent is None:
        raise SourceError(f"{_name(fn)}: give the latent shape of the generator, e.g. latent=128 or (100, 1, 1)")
    latent = (int(latent),) if isinstance(latent, int) else tuple(int(d) for d in latent)
    if isinstance(fn, torch.nn.Module):
        module = fn
        param = next(iter(module.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")

        def run(z: torch.Tensor) -> torch.Tensor:
            was_training = module.training
            module.eval()
            try:
                with torch.no_grad():
                    return _as_tensor(module(z.to(device)), fn)
            finally:
                module.train(was_training)
    else:
        def run(z: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return _as_tensor(fn(z), fn)
    info = {"kind": "module" if isinstance(fn, torch.nn.Module) else "callable", "name": _name(fn)}
    return GeneratorSource(run, what=_name(fn), info=info, latent=latent, dist=dist or "normal",
                           output_range=output_range or (-1.0, 1.0))


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _as_tensor(y, fn) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, np.ndarray):
        return torch.from_numpy(y)
    raise SourceError(f"{_name(fn)}: a generator must return a tensor of images, got {type(y).__name__}")


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SourceError(f"{path}: {what} file not found")
    return path


def open_onnx(path: Path, latent=None, dist=None, output_range=None) -> GeneratorSource:
    """Load an ONNX generator; the latent shape may be read from the model's static input shape."""
    import onnxruntime as ort

    _existing(path, "ONNX model")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    from training.threads import onnx_session_options

    try:
        session = ort.InferenceSession(str(path), sess_options=onnx_session_options(), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad models
        raise SourceError(f"{path}: cannot load ONNX model ({e})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise SourceError(f"{path}: a generator takes one latent input; the model has {len(inputs)}")
    inp, out_name = inputs[0], session.get_outputs()[0].name
    if inp.type not in _ONNX_FLOATS:
        raise SourceError(f"{path}: latent input {inp.name!r} has type {inp.type}; expected a float tensor")
    dims = list(inp.shape)
    static = [d if isinstance(d, int) else None for d in dims[1:]]
    if latent is None:
        if not dims or any(d is None for d in static):
            raise SourceError(
                f"{path}: the model's input {inp.name!r} has shape {dims}; give the latent shape, "
                f"e.g. onnx:{path}?latent=62"
            )
        latent = tuple(static)
    latent = tuple(int(d) for d in latent)
    if len(static) != len(latent) or any(s is not None and s != l for s, l in zip(static, latent)):
        raise SourceError(f"{path}: latent {latent} does not fit the model's input shape {dims}")
    fixed_batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
    np_type = _ONNX_FLOATS[inp.type]

    def run(z: torch.Tensor) -> torch.Tensor:
        try:
            (y,) = session.run([out_name], {inp.name: z.numpy().astype(np_type)})[:1]
        except Exception as e:
            raise SourceError(f"{path}: ONNX model failed to run ({e})") from None
        return torch.from_numpy(np.asarray(y, dtype=np.float32))

    info = {"kind": "onnx", "path": str(path), "providers": session.get_providers()}
    return GeneratorSource(run, what=str(path), info=info, latent=latent, dist=dist or "normal",
                           output_range=output_range or (-1.0, 1.0), fixed_batch=fixed_batch)


def open_torchscript(path: Path, latent, dist=None, output_range=None, *, allow_torchscript=False) -> GeneratorSource:
    """Load a TorchScript generator (torch.jit.load; no pickle), only when explicitly allowed.

    TorchScript runs arbitrary TorchScript operators, so it is opt-in; the module is put in
    eval mode.
    """
    if not allow_torchscript:
        raise SourceError(
            f"{path}: TorchScript generators are disabled because a module can run "
            f"arbitrary TorchScript operators. Open it with allow_torchscript=True only for models "
            f"you trust, or export the generator to ONNX"
        )
    if latent is None:
        raise SourceError(f"{path}: TorchScript generators need the latent shape, e.g. ?latent=100,1,1")
    _existing(path, "TorchScript")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError and friends for bad archives
        raise SourceError(f"{path}: cannot load TorchScript module ({e})") from None
    module.eval()

    def run(z: torch.Tensor) -> torch.Tensor:
        try:
            with torch.inference_mode():
                y = module(z)
        except Exception as e:
            raise SourceError(f"{path}: TorchScript generator failed to run ({e})") from None
        if not isinstance(y, torch.Tensor):
            raise SourceError(f"{path}: generator returned {type(y).__name__}, expected one tensor")
        return y

    info = {"kind": "torchscript", "path": str(path)}
    return GeneratorSource(run, what=str(path), info=info, latent=latent, dist=dist or "normal",
                           output_range=output_range or (-1.0, 1.0))
