"""The W1 estimator: train a provably 1-Lipschitz critic on the train parts of two sample sources, then
report its dual value on held-out samples with an error bar, divided by its certified Lipschitz bound.

Everything random comes from generators seeded from (seed, side, purpose), and the learning-rate
schedule is a function of the step, so a checkpoint (critic, optimiser, data-order and sampler states,
curve, early-stopping state) resumes to exactly the run that was never interrupted."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.options import EstimateOptions, split_count
from training.result import Cancelled, CurvePoint, ProgressEvent, SampleCounts, Timings, W1Result

if TYPE_CHECKING:
    from training.sources import SampleSource

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1
EVAL_BATCH = 256  # forward-only batch for validation and held-out evaluation
_PURPOSES = {"split": 0, "order": 1, "train": 2, "validation": 3, "heldout": 4}


def pick_device(name: str) -> torch.device:
    """'auto' = CUDA if available, then MPS, then CPU; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def _seed(seed: int, side: int, purpose: str, extra: int = 0) -> int:
    """An independent 63-bit seed for one stream of randomness."""
    state = np.random.SeedSequence([seed, side, _PURPOSES[purpose], extra]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Side:
    """One side (real or fake): its train / validation / held-out samples, read in batches and mapped
    into the input space. A finite source is split by a seeded permutation; a generator side draws
    training batches from one seeded stream and validation / held-out samples from two others."""

    def __init__(self, source: "SampleSource", code: int, space, opts: EstimateOptions, device: torch.device,
                 want_validation: bool):
        self.source, self.code, self.space, self.device = source, code, space, device
        self.seed, self.batch_size = opts.seed, opts.batch_size
        self.is_generator = bool(getattr(source, "is_generator", False))
        self.want_validation = want_validation
        self._validation_cache: torch.Tensor | None = None
        if self.is_generator:
            self.n_heldout, self.n_validation = opts.eval_samples, (opts.validation_samples if want_validation else 0)
            self._train_gen = _generator(_seed(self.seed, code, "train"))
            self.train, self.validation, self.heldout = None, None, None
        else:
            n = len(source)
            self.n_heldout = split_count(opts.holdout, n)
            self.n_validation = split_count(opts.validation, n) if want_validation else 0
            if want_validation and self.n_validation < 2:
                raise ValueError(f"{self.name} side: {n} samples leave {self.n_validation} for validation; "
                                 "early stopping needs at least 2 (raise `validation` or disable early stopping)")
            n_train = n - self.n_heldout - self.n_validation
            if self.n_heldout < 2 or n_train < 1:
                raise ValueError(f"{self.name} side has {n} samples: too few to hold out {self.n_heldout} and "
                                 f"{self.n_validation} for validation and still train (need >= 2 held out, >= 1 train)")
            # the same permutation on both sides (side code 0): equal-size sets get the same held-out
            # indices, so paired data (fake = g(real)) is evaluated on pairs; see _stderr
            perm = torch.randperm(n, generator=_generator(_seed(self.seed, 0, "split")))
            self.heldout = perm[:self.n_heldout]
            self.validation = perm[self.n_heldout:self.n_heldout + self.n_validation]
            self.train = perm[self.n_heldout + self.n_validation:]
        self.epoch, self.position, self._order = 0, 0, None

    @property
    def name(self) -> str:
        return "real" if self.code == 0 else "fake"

    def _prepare(self, x01: torch.Tensor) -> torch.Tensor:
        return self.space.apply(x01.to(self.device, torch.float32))

    def _read(self, indices: torch.Tensor) -> torch.Tensor:
        return self.source.read(np.sort(indices.numpy()))

    def example(self) -> torch.Tensor:
        """One sample in the input space, without touching any random stream (for shapes)."""
        x = self.source.sample(1, _generator(0)) if self.is_generator else self.source.read(np.array([0]))
        return self._prepare(x)

    def train_batch(self) -> torch.Tensor:
        if self.is_generator:
            return self._prepare(self.source.sample(self.batch_size, self._train_gen))
        chunks, need = [], self.batch_size
        while need:
            if self._order is None:
                self._order = torch.randperm(len(self.train), generator=_generator(
                    _seed(self.seed, self.code, "order", self.epoch)))
            take = self._order[self.position:self.position + need]
            chunks.append(self.train[take])
            need -= len(take)
            self.position += len(take)
            if self.position == len(self.train):
                self.epoch, self.position, self._order = self.epoch + 1, 0, None
        return self._prepare(self._read(torch.cat(chunks)))

    def _batches(self, indices: torch.Tensor | None, count: int, purpose: str, raw: bool) -> Iterator[torch.Tensor]:
        gen = _generator(_seed(self.seed, self.code, purpose)) if self.is_generator else None
        for start in range(0, count, EVAL_BATCH):
            n = min(EVAL_BATCH, count - start)
            x = self.source.sample(n, gen) if gen is not None else self._read(indices[start:start + n])
            yield x if raw else self._prepare(x)

    def validation_batches(self) -> Iterator[torch.Tensor]:
        if self.is_generator:  # drawn once, so every validation sees the same samples
            if self._validation_cache is None:
                self._validation_cache = torch.cat(list(self._batches(None, self.n_validation, "validation", True)))
            for start in range(0, self.n_validation, EVAL_BATCH):
                yield self._prepare(self._validation_cache[start:start + EVAL_BATCH])
        else:
            yield from self._batches(self.validation, self.n_validation, "validation", False)

    def heldout_batches(self, raw: bool = False) -> Iterator[torch.Tensor]:
        """Held-out samples in the input space (raw=True: in the source's [0, 1] scale, for FID)."""
        yield from self._batches(self.heldout, self.n_heldout, "heldout", raw)

    def train_count(self, steps: int) -> int:
        return steps * self.batch_size if self.is_generator else len(self.train)

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position}
        if self.is_generator:
            state["train_gen"] = self._train_gen.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._order = state["epoch"], state["position"], None
        if self.is_generator:
            self._train_gen.set_state(state["train_gen"])


@torch.no_grad()
def critic_values(critic: torch.nn.Module, batches) -> np.ndarray:
    """f(x) over all batches, in eval mode, as float64 (so means and variances do not lose digits)."""
    was_training = critic.training
    critic.eval()
    try:
        out = [critic(x).double().cpu() for x in batches]
    finally:
        critic.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def _dual_value(critic, real: _Side, fake: _Side, which: str) -> tuple[float, np.ndarray, np.ndarray]:
    fr = critic_values(critic, getattr(real, f"{which}_batches")())
    ff = critic_values(critic, getattr(fake, f"{which}_batches")())
    return float(fr.mean() - ff.mean()), fr, ff


def _same_heldout(real: _Side, fake: _Side) -> bool:
    return (real.heldout is not None and fake.heldout is not None and len(real.heldout) == len(fake.heldout)
            and bool(torch.equal(real.heldout, fake.heldout)))


def _stderr(fr: np.ndarray, ff: np.ndarray, paired: bool) -> float:
    """Standard error of mean(fr) - mean(ff). Independent sides: from the two sample variances. When
    both sides used the same indices, the samples may be paired (fake = g(real)), so the larger of the
    independent and the paired (variance of differences) errors is reported: valid either way."""
    independent = math.sqrt(fr.var(ddof=1) / len(fr) + ff.var(ddof=1) / len(ff))
    if not paired:
        return independent
    return max(independent, float(np.std(fr - ff, ddof=1)) / math.sqrt(len(fr)))


def _lr_at(opts: EstimateOptions, step: int) -> float:
    """The learning rate for training step `step` (0-based): a pure function, so resuming needs no state."""
    if opts.lr_schedule == "step" and opts.lr_decay_every:
        return opts.lr * opts.lr_decay_factor ** (step // opts.lr_decay_every)
    if opts.lr_schedule == "cosine":
        return opts.lr * 0.5 * (1 + math.cos(math.pi * step / opts.steps))
    return opts.lr


def _make_optimizer(opts: EstimateOptions, params) -> torch.optim.Optimizer:
    if opts.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=opts.lr)
    return torch.optim.Adam(params, lr=opts.lr, betas=(0.5, 0.999))


def _as_source(spec, **generator) -> "SampleSource":
    if hasattr(spec, "describe") and (hasattr(spec, "read") or hasattr(spec, "sample")):
        return spec
    from training.sources import open_source
    if not callable(spec):  # latent/dist/output_range describe a module or callable generator
        generator = {}
    return open_source(spec, **generator)


def _versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {"w1-service": version("w1-service"), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _layer_dict(layer) -> dict[str, Any]:
    if dataclasses.is_dataclass(layer):
        return dataclasses.asdict(layer)
    if hasattr(layer, "model_dump"):
        return layer.model_dump()
    if hasattr(layer, "_asdict"):
        return dict(layer._asdict())
    return {k: getattr(layer, k) for k in ("name", "kind", "bound", "method") if hasattr(layer, k)}


def _fingerprint(opts: EstimateOptions, sources: dict) -> str:
    """What a checkpoint must match to be resumed: options that change the run, and the sources."""
    relevant = opts.model_dump(mode="json", exclude={"device", "checkpoint_every", "progress_every", "fid",
                                                     "fid_weights"})
    blob = json.dumps({"options": relevant, "sources": sources}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Run:
    """Mutable training state, kept in one place so checkpoints save and restore all of it."""

    def __init__(self):
        self.step = 0
        self.curve: list[dict] = []
        self.obj_sum, self.obj_count = 0.0, 0
        self.last_validation: float | None = None
        self.best_value, self.best_step, self.best_state = -math.inf, 0, None
        self.bad_evals, self.stopped_early, self.done = 0, False, False
        self.train_s = 0.0


def _save_checkpoint(path: Path, fingerprint: str, run: _Run, critic, optimizer, real: _Side, fake: _Side) -> None:
    state = {
        "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "step": run.step, "curve": run.curve,
        "obj": [run.obj_sum, run.obj_count], "last_validation": run.last_validation,
        "best": {"value": run.best_value, "step": run.best_step, "state": run.best_state, "bad": run.bad_evals},
        "stopped_early": run.stopped_early, "done": run.done, "train_s": run.train_s,
        "critic": critic.state_dict(), "optimizer": optimizer.state_dict(),
        "real": real.state_dict(), "fake": fake.state_dict(), "torch_rng": torch.get_rng_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own per writer (a zombie attempt of a job may still be saving), renamed into place:
    # never a half-written or interleaved checkpoint behind
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint: str, run: _Run, critic, optimizer, real: _Side, fake: _Side,
                     device: torch.device) -> None:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    if state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {path} belongs to a run with other options or sources; "
                         "use another checkpoint directory or delete it")
    critic.load_state_dict(state["critic"])
    optimizer.load_state_dict(state["optimizer"])
    real.load_state_dict(state["real"])
    fake.load_state_dict(state["fake"])
    torch.set_rng_state(state["torch_rng"].cpu())
    run.step, run.curve = state["step"], list(state["curve"])
    run.obj_sum, run.obj_count = state["obj"]
    run.last_validation = state["last_validation"]
    best = state["best"]
    run.best_value, run.best_step, run.best_state, run.bad_evals = best["value"], best["step"], best["state"], best["bad"]
    run.stopped_early, run.done, run.train_s = state["stopped_early"], state["done"], state["train_s"]


def estimate_w1(real, fake, options: EstimateOptions | dict | None = None, *,
                progress: Callable[[ProgressEvent], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                checkpoint_dir: str | os.PathLike | None = None, latent=None, dist=None, output_range=None,
                **overrides) -> W1Result:
    """Estimate W1(real, fake) with a trained 1-Lipschitz critic.

    `real`/`fake`: anything open_source accepts (spec string, SourceSpec, array) or a SampleSource.
    `options` and keyword `overrides` give EstimateOptions. `progress(ProgressEvent)` is called every
    `progress_every` steps; `should_stop()` is polled between steps and a true answer raises Cancelled
    (after saving a checkpoint). With `checkpoint_dir`, the run checkpoints every `checkpoint_every`
    steps and resumes from a checkpoint it finds there. A side may also be a torch nn.Module or a
    callable z -> images: `latent` (its latent shape), `dist` and `output_range` describe it."""
    from critics import build_critic, lipschitz_bound, orthogonality_error

    t_start = time.perf_counter()
    opts = EstimateOptions.build(options, **overrides).resolved()
    want_validation = bool(opts.early_stopping) or opts.validation > 0
    if opts.early_stopping and opts.validation == 0:
        raise ValueError("early stopping needs a validation split: set validation > 0 or early_stopping=False")
    generator = dict(latent=latent, dist=dist, output_range=output_range)
    real_src, fake_src = _as_source(real, **generator), _as_source(fake, **generator)
    space = opts.space.resolve(real_src.shape, fake_src.shape)
    device = pick_device(opts.device)
    sides = (_Side(real_src, 0, space, opts, device, want_validation),
             _Side(fake_src, 1, space, opts, device, want_validation))
    real_side, fake_side = sides
    input_shape = tuple(real_side.example().shape[1:])
    if tuple(fake_side.example().shape[1:]) != input_shape:
        raise ValueError(f"real and fake map to different shapes in the input space: {input_shape} vs "
                         f"{tuple(fake_side.example().shape[1:])}")
    sources = {"real": real_src.describe(), "fake": fake_src.describe()}

    torch.manual_seed(opts.seed)
    critic = build_critic(opts.critic, input_shape, conv=opts.conv, activation=opts.activation, width=opts.width,
                          **opts.critic_options).to(device)
    optimizer = _make_optimizer(opts, critic.parameters())
    run = _Run()
    fingerprint = _fingerprint(opts, sources)
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        _load_checkpoint(ckpt, fingerprint, run, critic, optimizer, real_side, fake_side, device)

    def checkpoint():
        if ckpt is not None:
            _save_checkpoint(ckpt, fingerprint, run, critic, optimizer, real_side, fake_side)

    t_train = time.perf_counter() - run.train_s  # so train_s keeps counting across resumes
    critic.train()
    while not run.done and run.step < opts.steps:
        if should_stop is not None and should_stop():
            run.train_s = time.perf_counter() - t_train
            checkpoint()
            raise Cancelled(run.step)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(opts, run.step)
        xr, xf = real_side.train_batch(), fake_side.train_batch()
        out = critic(torch.cat([xr, xf]))  # one forward: a BCOP kernel is built once per step
        objective = out[:len(xr)].mean() - out[len(xr):].mean()
        optimizer.zero_grad(set_to_none=True)
        (-objective).backward()
        optimizer.step()
        run.step += 1
        run.obj_sum += float(objective.detach())
        run.obj_count += 1

        validated = want_validation and (run.step % opts.eval_every == 0 or run.step == opts.steps)
        if validated:
            value, _, _ = _dual_value(critic, real_side, fake_side, "validation")
            run.last_validation = value
            if value > run.best_value + opts.min_delta * abs(run.best_value) or run.best_state is None:
                run.best_value, run.best_step, run.bad_evals = value, run.step, 0
                run.best_state = copy.deepcopy(critic.state_dict())
            else:
                run.bad_evals += 1
                if opts.early_stopping and run.bad_evals >= opts.patience:
                    run.stopped_early = True
        if run.step % opts.progress_every == 0 or validated or run.step == opts.steps or run.stopped_early:
            mean_obj = run.obj_sum / max(run.obj_count, 1)
            elapsed = time.perf_counter() - t_train
            run.curve.append({"step": run.step, "objective": mean_obj,
                              "validation": run.last_validation if validated else None, "time_s": elapsed})
            run.obj_sum, run.obj_count = 0.0, 0
            if progress is not None:
                progress(ProgressEvent(step=run.step, total=opts.steps, objective=mean_obj,
                                       estimate=run.last_validation, elapsed_s=elapsed))
        run.done = run.stopped_early or run.step >= opts.steps
        if ckpt is not None and (run.step % opts.checkpoint_every == 0 or run.done):
            run.train_s = time.perf_counter() - t_train
            checkpoint()
    train_s = time.perf_counter() - t_train

    t_eval = time.perf_counter()
    if opts.early_stopping and run.best_state is not None:
        critic.load_state_dict(run.best_state)
    critic.eval()
    estimate, fr, ff = _dual_value(critic, real_side, fake_side, "heldout")
    stderr = _stderr(fr, ff, paired=_same_heldout(real_side, fake_side))
    from scipy.stats import norm
    z = float(norm.ppf(0.5 + opts.confidence / 2))
    ci = (estimate - z * stderr, estimate + z * stderr)
    cert = lipschitz_bound(critic, input_shape)
    bound = float(cert.bound)
    fid = None
    if opts.fid:
        from training.fid import compute_fid
        fid = compute_fid(real_side.heldout_batches(raw=True), fake_side.heldout_batches(raw=True),
                          opts.fid_weights, device)
    eval_s = time.perf_counter() - t_eval

    result = W1Result(
        estimate=estimate, stderr=stderr, ci=ci, confidence=opts.confidence,
        lipschitz_bound=bound, lipschitz_layers=[_layer_dict(layer) for layer in cert.layers],
        certified_lower_bound=estimate / bound, certified_ci=(ci[0] / bound, ci[1] / bound),
        orthogonality_error=float(orthogonality_error(critic)),
        samples=SampleCounts(real_train=real_side.train_count(run.step), real_heldout=len(fr),
                             fake_train=fake_side.train_count(run.step), fake_heldout=len(ff)),
        space=space.describe(), sources=sources, curve=[CurvePoint(**p) for p in run.curve],
        steps_run=run.step, stopped_early=run.stopped_early,
        timings=Timings(train_s=train_s, eval_s=eval_s, total_s=time.perf_counter() - t_start),
        device=str(device), seed=opts.seed, options=opts.model_dump(mode="json"), versions=_versions(), fid=fid,
    )
    result._critic = critic
    return result
