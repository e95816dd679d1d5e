"""Step 1 of an estimate: the data. Each side (real, fake) is split once into train / validation /
held-out parts; a candidate critic reads training batches through its own `BatchStream`.

The held-out part is sealed until a critic has been chosen: reading it earlier raises HeldOutSealed,
so no choice (of a critic, of a step) can ever depend on the samples the reported number is measured
on. Every random stream is seeded from (seed, side, purpose), so a run is reproducible and resumable."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.options import EstimateOptions, split_count

if TYPE_CHECKING:
    from training.sources import SampleSource

EVAL_BATCH = 256  # forward-only batch for validation and held-out evaluation
# A finite side's training and validation samples are read and mapped into the input space once, and
# kept on the device, when each split takes at most this much there: a step then only gathers rows.
PREPARED_BYTES = 128 * 2 ** 20
_PURPOSES = {"split": 0, "order": 1, "train": 2, "validation": 3, "heldout": 4, "noise": 5}


class HeldOutSealed(RuntimeError):
    """The held-out samples were asked for before the critic was chosen (a bug, never user error)."""


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


def open_for_space(spec, space, **kwargs) -> "SampleSource":
    """A SampleSource as is; anything else through open_source, with arrays and array files kept as
    they are (value_range="none") when the space keeps values as they are."""
    if hasattr(spec, "describe") and (hasattr(spec, "read") or hasattr(spec, "sample")):
        return spec
    from pathlib import Path

    from training.sources import SourceSpec, open_source
    if space.value_range == "none":
        is_file = isinstance(spec, (np.ndarray, torch.Tensor, Path))
        if isinstance(spec, str):
            is_file = SourceSpec.parse(spec).kind == "file"
        if is_file:
            return open_source(spec, value_range="none", **kwargs)
    return open_source(spec, **kwargs)


def stream_seed(seed: int, side: int, purpose: str, extra: int = 0) -> int:
    """An independent 63-bit seed for one stream of randomness."""
    state = np.random.SeedSequence([seed, side, _PURPOSES[purpose], extra]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def split_indices(n: int, opts: EstimateOptions, want_validation: bool, fold: tuple[int, int] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(held-out, validation, train) indices of a finite side of n samples. The same permutation on
    both sides (side code 0): equal-size sets get the same held-out indices, so paired data
    (fake = g(real)) is evaluated on pairs (see report.stderr).

    With fold=(k, K) (cross-fitting) the permutation is cut into K near-equal parts; part k is held out
    and `validation` is taken from the rest, so over k = 0..K-1 every sample is held out exactly once."""
    perm = torch.randperm(n, generator=_generator(stream_seed(opts.seed, 0, "split")))
    n_validation = split_count(opts.validation, n) if want_validation else 0
    if fold is None:
        n_heldout = split_count(opts.holdout, n)
        return perm[:n_heldout], perm[n_heldout:n_heldout + n_validation], perm[n_heldout + n_validation:]
    k, folds = fold
    lo, hi = round(k * n / folds), round((k + 1) * n / folds)
    rest = torch.cat([perm[:lo], perm[hi:]])
    return perm[lo:hi], rest[:n_validation], rest[n_validation:]


class Side:
    """One side (real or fake): its train / validation / held-out samples, read in batches and mapped
    into the input space. A finite source is split by a seeded permutation; a generator side draws
    training batches from one seeded stream and validation / held-out samples from two others."""

    def __init__(self, source: "SampleSource", code: int, space, opts: EstimateOptions, device: torch.device,
                 want_validation: bool, fold: tuple[int, int] | None = None):
        self.source, self.code, self.space, self.device = source, code, space, device
        self.seed, self.batch_size = opts.seed, opts.batch_size
        self.is_generator = bool(getattr(source, "is_generator", False))
        self.sealed = True
        self._validation_cache: torch.Tensor | None = None
        self._prepared: dict[str, tuple[torch.Tensor, object]] = {}  # split -> (samples, the indices they are of)
        if self.is_generator:
            self.n_heldout, self.n_validation = opts.eval_samples, (opts.validation_samples if want_validation else 0)
            self.train, self.validation, self.heldout = None, None, None
            return
        n = len(source)
        self.heldout, self.validation, self.train = split_indices(n, opts, want_validation, fold)
        self.n_heldout, self.n_validation = len(self.heldout), len(self.validation)
        if want_validation and self.n_validation < 2:
            raise ValueError(f"{self.name} side: {n} samples leave {self.n_validation} for validation; "
                             "early stopping and critic selection need at least 2 (raise `validation`, "
                             "disable early stopping, or name a critic)")
        if self.n_heldout < 2 or len(self.train) < 1:
            raise ValueError(f"{self.name} side has {n} samples: too few to hold out {self.n_heldout} and "
                             f"{self.n_validation} for validation and still train (need >= 2 held out, >= 1 train)")

    @property
    def name(self) -> str:
        return "real" if self.code == 0 else "fake"

    def prepare(self, x01: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and x01.device.type == "cpu":
            # pinned + non_blocking: a blocking upload would wait for every queued kernel each step
            x01 = x01.to(torch.float32).pin_memory().to(self.device, non_blocking=True)
        return self.space.apply(x01.to(self.device, torch.float32))

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        return self.source.read(np.sort(indices.numpy()))

    def example(self) -> torch.Tensor:
        """One sample in the input space, without touching any random stream (for shapes)."""
        x = self.source.sample(1, _generator(0)) if self.is_generator else self.source.read(np.array([0]))
        return self.prepare(x)

    def stream(self) -> "BatchStream":
        """A fresh stream of training batches (each candidate critic gets its own, from the same seed)."""
        return BatchStream(self)

    def _batches(self, indices: torch.Tensor | None, count: int, purpose: str, raw: bool) -> Iterator[torch.Tensor]:
        gen = _generator(stream_seed(self.seed, self.code, purpose)) if self.is_generator else None
        for start in range(0, count, EVAL_BATCH):
            n = min(EVAL_BATCH, count - start)
            x = self.source.sample(n, gen) if gen is not None else self.read(indices[start:start + n])
            yield x if raw else self.prepare(x)

    def validation_batches(self) -> Iterator[torch.Tensor]:
        if self.is_generator:  # drawn once, so every validation sees the same samples
            if self._validation_cache is None:
                self._validation_cache = torch.cat(list(self._batches(None, self.n_validation, "validation", True)))
            for start in range(0, self.n_validation, EVAL_BATCH):
                yield self.prepare(self._validation_cache[start:start + EVAL_BATCH])
        elif self._fits(self.n_validation):
            yield from self.prepared("validation")
        else:
            yield from self._batches(self.validation, self.n_validation, "validation", False)

    def _fits(self, count: int) -> bool:
        return count * 4 * int(np.prod(self.space.shape)) <= PREPARED_BYTES

    def prepared(self, split: str):
        """The split's samples in the input space, on the device, read once: a list of the batches
        `_batches` yields (validation), or (one tensor in ascending source-index order, those indices)
        (train). Rebuilt if the split's indices are replaced."""
        indices = getattr(self, split)
        cached = self._prepared.get(split)
        if cached is None or cached[1] is not indices:
            if split == "train":
                value = (self.prepare(self.read(indices)), np.sort(indices.numpy()))
            else:
                value = list(self._batches(indices, len(indices), split, False))
            cached = self._prepared[split] = (value, indices)
        return cached[0]

    def train_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Training samples `indices` (source indices from the train split) in the input space, in
        ascending index order: gathered from the prepared split when it fits, else read and mapped."""
        if not self._fits(len(self.train)):
            return self.prepare(self.read(indices))
        samples, order = self.prepared("train")
        rows = torch.from_numpy(np.searchsorted(order, np.sort(indices.numpy())))
        if self.device.type == "cuda":
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        return samples[rows.to(self.device)]

    def heldout_batches(self, raw: bool = False) -> Iterator[torch.Tensor]:
        """Held-out samples in the input space (raw=True: in the source's scale, for FID)."""
        if self.sealed:
            raise HeldOutSealed(f"{self.name} side: held-out samples read before the critic was chosen")
        yield from self._batches(self.heldout, self.n_heldout, "heldout", raw)

    def unseal(self) -> None:
        """Called once the critic is final: only then may the held-out samples be read."""
        self.sealed = False

    def train_count(self, steps: int) -> int:
        return steps * self.batch_size if self.is_generator else len(self.train)


class BatchStream:
    """Training batches of one side for one critic: a seeded order per epoch (finite side) or a seeded
    generator stream, with state_dict/load_state_dict so a checkpoint resumes the exact sequence."""

    def __init__(self, side: Side):
        self.side = side
        self.epoch, self.position, self._order = 0, 0, None
        self._gen = _generator(stream_seed(side.seed, side.code, "train")) if side.is_generator else None

    def next(self) -> torch.Tensor:
        side = self.side
        if self._gen is not None:
            return side.prepare(side.source.sample(side.batch_size, self._gen))
        chunks, need = [], side.batch_size
        while need:
            if self._order is None:
                self._order = torch.randperm(len(side.train), generator=_generator(
                    stream_seed(side.seed, side.code, "order", self.epoch)))
            take = self._order[self.position:self.position + need]
            chunks.append(side.train[take])
            need -= len(take)
            self.position += len(take)
            if self.position == len(side.train):
                self.epoch, self.position, self._order = self.epoch + 1, 0, None
        return side.train_batch(torch.cat(chunks))

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position}
        if self._gen is not None:
            state["train_gen"] = self._gen.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._order = state["epoch"], state["position"], None
        if self._gen is not None:
            self._gen.set_state(state["train_gen"])


@dataclass
class Sides:
    """Both sides of one estimate, split and mapped into one input space. `open_sides` with the same
    real source and options always gives the real side the same split (it depends only on the seed,
    the sample count and the split options), so a series of fakes against one real set never lets a
    critic train on a real sample that another item holds out."""

    real: Side
    fake: Side
    space: Any  # the resolved InputSpace
    input_shape: tuple[int, int, int]
    sources: dict[str, dict]

    @property
    def device(self) -> torch.device:
        return self.real.device

    @property
    def train_samples(self) -> int | None:
        """Training samples of the smaller finite side (None: both sides are generators, unlimited)."""
        counts = [len(side.train) for side in (self.real, self.fake) if not side.is_generator]
        return min(counts) if counts else None

    def spread(self) -> float:
        """The real training samples' spread in the input space: the root mean square over coordinates
        of their standard deviation (the scale of a candidate's input noise); read once, then kept."""
        if getattr(self, "_spread", None) is None:
            side = self.real
            if side.is_generator:
                x = side.prepare(side.source.sample(EVAL_BATCH, _generator(stream_seed(side.seed, 0, "noise"))))
            elif side._fits(len(side.train)):  # the training split as the steps will gather it
                x = side.prepared("train")[0]
            else:
                x = torch.cat([side.prepare(side.read(side.train[i:i + EVAL_BATCH]))
                               for i in range(0, len(side.train), EVAL_BATCH)])
            self._spread = float(x.flatten(1).double().var(dim=0).mean().sqrt())
        return self._spread

    def unseal(self) -> None:
        self.real.unseal()
        self.fake.unseal()


def wants_validation(opts: EstimateOptions) -> bool:
    """Whether the sides need a validation split: auto chooses on it, early stopping watches it."""
    return opts.critic == "auto" or bool(opts.early_stopping) or opts.validation > 0


def open_sides(real, fake, opts: EstimateOptions, *, fold: tuple[int, int] | None = None, latent=None, dist=None,
               output_range=None) -> Sides:
    """Step 1: open both sources (anything open_source takes, a SampleSource, or a generator module or
    callable described by latent/dist/output_range), resolve the input space, split each side (with
    fold=(k, K): hold out part k of K, see split_indices)."""
    generator = dict(latent=latent, dist=dist, output_range=output_range)
    real_src, fake_src = (open_for_space(side, opts.space, **(generator if callable(side) else {}))
                          for side in (real, fake))
    space = opts.space.resolve(real_src.shape, fake_src.shape)
    device = pick_device(opts.device)
    validation = wants_validation(opts)
    real_side = Side(real_src, 0, space, opts, device, validation, fold)
    fake_side = Side(fake_src, 1, space, opts, device, validation, fold)
    input_shape = tuple(real_side.example().shape[1:])
    if tuple(fake_side.example().shape[1:]) != input_shape:
        raise ValueError(f"real and fake map to different shapes in the input space: {input_shape} vs "
                         f"{tuple(fake_side.example().shape[1:])}")
    return Sides(real_side, fake_side, space, input_shape,
                 {"real": real_src.describe(), "fake": fake_src.describe()})


def folds_for(opts: EstimateOptions, sides: Sides) -> int:
    """How many cross-fitting folds an estimate uses: `opts.folds`, when both sides are finite (a
    generator side draws fresh held-out samples instead), else 1."""
    finite = not (sides.real.is_generator or sides.fake.is_generator)
    return opts.folds if finite and opts.folds > 1 else 1
