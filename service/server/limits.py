"""What the API checks before it stores a request, so a job never fails later for a reason the API
could see: option bounds (settings ``max_*``), the critic and its options, the device, the splits
of each finite side, and cursors. Each check refuses with :class:`~service.server.errors.Invalid`.

Upload sizes (arrays, images, archives, generators) are checked in ``service.server.uploads.sizes``;
body sizes and NUL bytes in ``service.server.middleware``.
"""
from __future__ import annotations

import functools
import math
import re

from service.server.errors import refuse
from service.server.processes import count_gpus

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
MAX_CURSOR = 2**31 - 1  # job sequence numbers are 32-bit integers (PostgreSQL INTEGER)


def parse_cursor(cursor: str) -> int:
    """A ``next_cursor`` value back as an int; 422 for anything no page ever handed out."""
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 10 or int(cursor) > MAX_CURSOR:
        refuse(f"invalid cursor {cursor[:40]!r}: pass back a next_cursor value")
    return int(cursor)


# -- options ---------------------------------------------------------------------------------

def _bound(what: str, value, limit, setting: str) -> None:
    if value is not None and value > limit:
        refuse(f"options.{what} = {value:,} is over this server's limit of {limit:,} (W1_{setting.upper()})")


def check_device(device: str, settings) -> None:
    """The syntax, and that the workers have it: ``worker_devices`` when set, else the local GPUs
    for the embedded default (its workers run here); scaled out, the workers' hosts decide."""
    if not _DEVICE.match(device):
        refuse(f"options.device {device[:40]!r} is not one of auto, cpu, cuda, cuda:N, mps")
    offered = available_devices(settings)
    if device == "auto" or offered is None:
        return
    cuda = [d for d in offered if d.split(":")[0] == "cuda"]
    if not (device in offered or (device == "cuda" and cuda) or (device.startswith("cuda:") and "cuda" in offered)):
        refuse(f"options.device {device!r} is not available on this server's workers (they offer "
                f"{', '.join(offered)}); use 'auto' or one of those")


def available_devices(settings) -> list[str] | None:
    """Devices the workers offer, or None when the API cannot know (a remote broker, not configured).
    Each local worker of `w1 serve` sees one GPU (its own CUDA_VISIBLE_DEVICES), as cuda:0."""
    if settings.worker_devices:
        return [d.strip() for d in settings.worker_devices.split(",") if d.strip()]
    if not settings.broker.startswith("filesystem://"):
        return None
    return ["cpu", "cuda", "cuda:0"] if _local_gpus() else ["cpu"]


@functools.cache
def _local_gpus() -> int:
    return len(count_gpus())


def check_splits(side: str, n: int, opts) -> None:
    """The estimator's split rule for a finite side of n samples (training/estimator.py ``_Side``):
    at least 2 held out, at least 1 to train, at least 2 for validation when early stopping."""
    from training.options import split_count

    want_validation = bool(opts.early_stopping) or opts.validation > 0
    heldout = split_count(opts.holdout, n)
    validation = split_count(opts.validation, n) if want_validation else 0
    if want_validation and validation < 2:
        refuse(f"{side}: {n} samples leave {validation} for validation; early stopping needs at least 2 "
                "(raise options.validation or set early_stopping false)")
    if heldout < 2 or n - heldout - validation < 1:
        refuse(f"{side} has {n} samples: too few to hold out {heldout} and {validation} for validation and "
                f"still train (need >= 2 held out, >= 1 to train)")


def check_options(opts, input_shape: tuple[int, int, int], counts: dict[str, int | None], settings,
                  latents: dict[str, tuple[int, ...] | None] | None = None) -> None:
    """Every option within the server's limits, and everything the worker would refuse, refused now.

    ``opts``: resolved EstimateOptions; ``input_shape``: (C, H, W) of the resolved input space;
    ``counts``: samples of each finite side (None for a generator side); ``latents``: the latent
    shape of each generator side (a batch of latents and the cached validation draw are bounded)."""
    _bound("batch_size", opts.batch_size, settings.max_batch_size, "max_batch_size")
    _bound("steps", opts.steps, settings.max_steps, "max_steps")
    _bound("eval_samples", opts.eval_samples, settings.max_eval_samples, "max_eval_samples")
    _bound("validation_samples", opts.validation_samples, settings.max_validation_samples, "max_validation_samples")
    c, h, w = input_shape
    if h * w > settings.max_space_pixels:
        refuse(f"options.space.size {h}x{w} = {h * w:,} pixels is over this server's limit of "
                f"{settings.max_space_pixels:,} (W1_MAX_SPACE_PIXELS)")
    batch_bytes = opts.batch_size * c * h * w * 4
    if batch_bytes > settings.max_batch_bytes:
        refuse(f"options.batch_size {opts.batch_size} of {c}x{h}x{w} samples is {batch_bytes:,} bytes per batch, "
                f"over this server's limit of {settings.max_batch_bytes:,} (W1_MAX_BATCH_BYTES)")
    for side, latent in (latents or {}).items():
        if latent is None:
            continue
        latent_bytes = opts.batch_size * math.prod(latent) * 4
        if latent_bytes > settings.max_batch_bytes:
            refuse(f"{side}: a batch of {opts.batch_size} latents of {'x'.join(map(str, latent))} is {latent_bytes:,} "
                    f"bytes, over this server's limit of {settings.max_batch_bytes:,} (W1_MAX_BATCH_BYTES)")
        cached = (opts.validation_samples or 0) * c * h * w * 4
        if (opts.early_stopping or opts.validation) and cached > settings.max_decoded_bytes:
            refuse(f"{side}: {opts.validation_samples:,} validation samples of {c}x{h}x{w} are {cached:,} bytes, "
                    f"over this server's limit of {settings.max_decoded_bytes:,} (W1_MAX_DECODED_BYTES)")
    if opts.early_stopping and opts.validation == 0:
        refuse("options: early stopping needs a validation split: set validation > 0 or early_stopping false")
    for side, n in counts.items():
        if n is not None:
            check_splits(side, n, opts)
    check_device(opts.device, settings)
    check_critic(opts, input_shape, settings)


def check_critic(opts, input_shape, settings) -> None:
    """Build the critic on PyTorch's meta device (no memory): an unknown critic, unknown or bad
    critic_options, and the parameter count are all known before the job is stored."""
    from critics.models import available_critics

    if opts.critic == "auto":  # the estimator's candidates: conv, activation, width, critic_options must be unset
        from training.selection import candidates  # the estimator's own rule

        try:
            candidates(opts, opts.resolved(), tuple(input_shape))  # as the worker will call it with the stored options
        except ValueError as exc:
            refuse(f"options: {exc}")
        return
    if opts.critic not in available_critics():
        refuse(f"options.critic {opts.critic!r} is unknown; available: {', '.join(available_critics())}")
    import json

    params, problem = _critic_size(opts.critic, tuple(input_shape), opts.conv, opts.activation, opts.width,
                                   json.dumps(opts.critic_options, sort_keys=True, default=str))
    if problem is not None:
        refuse(f"options: critic {opts.critic!r} cannot be built for input {'x'.join(map(str, input_shape))}: {problem}")
    if params > settings.max_critic_parameters:
        refuse(f"options: critic {opts.critic!r} (width {opts.width}) has {params:,} parameters, over this "
                f"server's limit of {settings.max_critic_parameters:,} (W1_MAX_CRITIC_PARAMETERS)")


@functools.lru_cache(maxsize=512)
def _critic_size(name, input_shape, conv, activation, width, options_json) -> tuple[int, str | None]:
    """(parameter count, None) or (0, why it cannot be built); remembered, since clients submit the
    same options again and again and a build holds the GIL (measured: it slowed a 200-request burst)."""
    import json

    import torch
    from critics import build_critic

    try:
        with torch.device("meta"):
            critic = build_critic(name, input_shape, conv=conv, activation=activation, width=width,
                                  **json.loads(options_json))
    except (TypeError, ValueError) as exc:
        return 0, str(exc)
    return sum(math.prod(p.shape) for p in critic.parameters()), None
