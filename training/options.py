"""Every option of the W1 estimator, validated, JSON-able, with presets.

A field left as None takes its preset's value; `resolved()` fills them all in, and that full set is
what a result records, so a run can be reproduced without knowing which preset version it used."""
from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.space import InputSpace

# "default" was tuned on the known-answer cases (bench/estimation_quality.py): Adam (betas 0.5, 0.999)
# at 3e-3 with a cosine decay is within 1 % of its final value after ~100 steps there (1e-3: ~200,
# same final value); early stopping on a validation split ends easy problems after a few hundred steps.
# critic="auto" trains the candidates of training.selection.auto_candidates and keeps the best on the
# validation split; conv/activation/width below apply when a critic is named (activation None: the
# critic's own default, GroupSort for conv and fc, MaxMin for dcgan).
# time_budget_s: no default estimate runs unbounded on a slow machine; 600 s is several times what a
# default estimate takes on one CPU core at 8x8 to 32x32x3, so it binds only where the machine is slow
# (the result then says so). The paper's protocol is a fixed number of steps: no budget (0).
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(
        critic="auto", conv="bcop", activation=None, width=None,
        optimizer="adam", lr=3e-3, lr_schedule="cosine", lr_decay_every=0, lr_decay_factor=0.1,
        steps=2000, batch_size=64, early_stopping=True, eval_every=100, patience=4, min_delta=1e-3,
        holdout=0.2, validation=0.1, eval_samples=6400, validation_samples=1280,
        checkpoint_every=500, progress_every=10, time_budget_s=600.0, folds=1,
    ),
    # The BCOP paper's protocol (Li et al. 2019): RMSprop 1e-4 decayed 10x every 6,000 steps,
    # 25,600 steps of 64 + 64 samples, evaluated on 100 batches of 64.
    "paper": dict(
        critic="dcgan", conv="bcop", activation="maxmin", width=None,
        optimizer="rmsprop", lr=1e-4, lr_schedule="step", lr_decay_every=6000, lr_decay_factor=0.1,
        steps=25600, batch_size=64, early_stopping=False, eval_every=1000, patience=5, min_delta=1e-3,
        holdout=0.2, validation=0.0, eval_samples=6400, validation_samples=1280,
        checkpoint_every=1000, progress_every=50, time_budget_s=0.0, folds=1,
    ),
}


class EstimateOptions(BaseModel):
    """Options of one W1 estimate. None means "the preset's value"."""

    # inf/nan are refused: JSON has no Infinity, so a budget of Infinity would come back as None (the preset's)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    preset: Literal["default", "paper"] = Field(
        "default", description="Defaults for every field left unset: 'default' (a good estimate fast) or 'paper' "
        "(the BCOP paper's protocol).")
    critic: str | None = Field(None, description="Critic architecture: 'auto' (train several certified critics, "
                               "keep the best on the validation split), 'conv' (BCOP, depth at every input size), "
                               "'dcgan' (the paper's) or 'fc' (Björck MLP).")
    conv: Literal["bcop", "rko", "ossn", "plain"] | None = Field(
        None, description="Convolution of the conv and dcgan critics.")
    activation: Literal["maxmin", "groupsort", "relu"] | None = Field(
        None, description="Activation of the critic; unset: the critic's own (GroupSort for conv and fc, MaxMin "
        "for dcgan).")
    width: int | None = Field(None, ge=1, description="Critic width (channels of the first stage / hidden units); "
                              "None = the critic's own default.")
    critic_options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword options for the critic.")
    optimizer: Literal["rmsprop", "adam"] | None = Field(None, description="Optimiser of the critic.")
    lr: float | None = Field(None, gt=0, description="Learning rate.")
    lr_schedule: Literal["constant", "step", "cosine"] | None = Field(
        None, description="'step': multiply the rate by lr_decay_factor every lr_decay_every steps; "
        "'cosine': cosine decay to 0 over `steps`.")
    lr_decay_every: int | None = Field(None, ge=0, description="Steps between decays for the 'step' schedule.")
    lr_decay_factor: float | None = Field(None, gt=0, le=1, description="Decay factor for the 'step' schedule.")
    steps: int | None = Field(None, ge=1, description="Training steps of the chosen critic (early stopping or "
                              "the time budget may end sooner).")
    time_budget_s: float | None = Field(
        None, ge=0, description="Time budget of the estimate in seconds, counted from its start, beside `steps` "
        "(whichever ends first; the result says when it bound the estimate): with critic='auto' the candidates' "
        "trials take at most half of what is left after loading, the winner the rest. 0 = no time limit.")
    batch_size: int | None = Field(None, ge=1, description="Samples per side per training step.")
    early_stopping: bool | None = Field(None, description="Stop when the validation estimate has not improved "
                                        "for `patience` evaluations (the best critic is kept); with the cosine "
                                        "schedule not before half of `steps`.")
    eval_every: int | None = Field(None, ge=1, description="Steps between validation estimates.")
    patience: int | None = Field(None, ge=1, description="Validation evaluations without improvement before stopping.")
    min_delta: float | None = Field(None, ge=0, description="Relative improvement that counts for early stopping.")
    holdout: float | int | None = Field(None, description="Held-out part of each finite side, for the reported "
                                        "estimate: a fraction in (0, 1) or a sample count.")
    validation: float | int | None = Field(None, description="Validation part of each finite side (taken out of "
                                           "training; used for the curve, early stopping and auto's choice): "
                                           "fraction or count, 0 = none.")
    folds: int | None = Field(
        None, ge=1, le=20, description="Cross-fitting: split each finite side into this many folds; the critic of "
        "fold k trains on the others and is evaluated on fold k only, so every sample is held out once and the "
        "pooled estimate varies less from run to run. Its reported standard error sums the folds' own (valid "
        "whatever their dependence), so the confidence bound stays about as wide as with one held-out part. "
        "folds times the training; 1 = one held-out part (`holdout`).")
    eval_samples: int | None = Field(None, ge=2, description="Held-out samples drawn from a generator side.")
    validation_samples: int | None = Field(None, ge=2, description="Validation samples drawn from a generator side.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the reported intervals.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of everything random (splits, initialisation, batches).")
    device: str = Field("auto", description="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:1', 'mps'.")
    space: InputSpace = Field(default_factory=InputSpace, description="Input space every sample is mapped into.")
    checkpoint_every: int | None = Field(None, ge=1, description="Steps between checkpoints (with a checkpoint dir).")
    progress_every: int | None = Field(None, ge=1, description="Steps between progress reports.")
    fid: bool = Field(False, description="Also compute FID (needs local Inception weights; never downloads).")
    fid_weights: str | None = Field(None, description="Path of pytorch-fid's Inception weights "
                                    "(pt_inception-2015-12-05-*.pth); default: the torch hub cache.")

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data):
        """true/false where a number belongs is refused (pydantic would read `steps: true` as 1 step)."""
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(value, bool) else None
                kinds = set(typing.get_args(field.annotation) or (field.annotation,)) if field else set()
                if kinds & {int, float} and bool not in kinds:
                    raise ValueError(f"{key} must be a number, not {str(value).lower()}")
        return data

    @model_validator(mode="after")
    def _check_splits(self):
        for name in ("holdout", "validation"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, float) and not value.is_integer() and not 0 < value < 1:
                raise ValueError(f"{name} must be a fraction in (0, 1) or a whole sample count, got {value}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.holdout is not None and self.holdout == 0:
            raise ValueError("holdout must be positive: an estimate on training samples is biased upwards")
        return self

    def resolved(self) -> "EstimateOptions":
        """A copy with every None replaced by the preset's value (and the paper's ReLU learning rate)."""
        preset = dict(PRESETS[self.preset])
        if self.preset == "paper" and self.activation == "relu":
            preset["lr"] = 1e-3  # the paper trains ReLU critics at 1e-3
        update = {k: v for k, v in preset.items() if getattr(self, k) is None}
        return self.model_copy(update=update)

    @classmethod
    def build(cls, options: "EstimateOptions | dict | None" = None, **overrides) -> "EstimateOptions":
        """Options from a model, a dict or None, with keyword overrides applied and validated."""
        if options is None:
            base: dict[str, Any] = {}
        elif isinstance(options, EstimateOptions):
            base = options.model_dump(exclude_unset=True)
        else:
            base = dict(options)
        return cls.model_validate({**base, **overrides})


def split_count(value: float | int, n: int) -> int:
    """Samples a holdout/validation setting takes out of n: a fraction (< 1) or a count."""
    count = round(value * n) if 0 < value < 1 else int(value)
    return count
