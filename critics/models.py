"""Critic architectures and their registry.

A registered builder returns the critic's layers in forward order; build_critic wraps them in a
`Critic` (an nn.Sequential), which is the contract critics.lipschitz certifies and critics.export
converts. A builder therefore only needs to use certifiable leaves (see critics.lipschitz)."""
from __future__ import annotations

import inspect
import operator
import types
import typing
from typing import Callable

import torch
from torch import nn

from critics.bcop import BCOPConv2d
from critics.conv import LipschitzConv2d
from critics.layers import GroupSort, MaxMin, OrthoLinear
from critics.ossn import OSSNConv2d
from critics.rko import RKOConv2d

CONVS = ("bcop", "rko", "ossn", "plain")
ACTIVATIONS = ("maxmin", "groupsort", "relu")
_REGISTRY: dict[str, Callable[..., list[nn.Module]]] = {}
_DEFAULT_ACTIVATION: dict[str, str] = {}


class UnconstrainedConv2d(LipschitzConv2d):
    """Baseline with a free kernel (not Lipschitz-constrained), sharing the unshuffle + 'same' padding
    of the constrained layers so that only the parameterisation differs. Its certificate is still
    exact, computed from the kernel's spectrum."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, padding_mode: str = "circular"):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, padding_mode)
        k = self.effective_kernel_size
        self.kernel = nn.Parameter(torch.empty(out_channels, self.effective_in_channels, k, k))
        nn.init.kaiming_uniform_(self.kernel, a=5 ** 0.5)  # nn.Conv2d's default initialisation

    def build_weight(self) -> torch.Tensor:
        return self.kernel


class Critic(nn.Sequential):
    """A critic: layers in forward order mapping (N, C, H, W) to (N,).

    `input_shape` and `spec` (name, input_shape, conv, activation, width, options) are enough to rebuild
    it with `critic_from_spec` and then load its state_dict."""

    def __init__(self, layers: list[nn.Module], input_shape: tuple[int, int, int], spec: dict):
        super().__init__(*layers)
        self.input_shape = tuple(input_shape)
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"critic expects input of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        for module in self:
            x = module(x)
        return x


def register_critic(name: str, activation: str = "maxmin"):
    """Decorator registering `builder(input_shape, conv, activation, width, **options) -> list of layers`;
    `activation` is what build_critic uses when none is given."""
    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(f"critic {name!r} is already registered")
        _REGISTRY[name] = builder
        _DEFAULT_ACTIVATION[name] = activation
        return builder
    return decorator


def available_critics() -> list[str]:
    return sorted(_REGISTRY)


def build_critic(name: str, input_shape, conv: str = "bcop", activation: str | None = None,
                 width: int | None = None, **options) -> Critic:
    """Build the registered critic `name` for per-sample inputs (C, H, W); see the builders for options.
    `activation=None` takes the critic's own default (GroupSort for conv and fc, MaxMin for dcgan)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown critic {name!r}; available: {', '.join(available_critics())}")
    if activation is None:
        activation = _DEFAULT_ACTIVATION[name]
    if conv not in CONVS:
        raise ValueError(f"unknown conv {conv!r}; choose one of {', '.join(CONVS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    try:
        shape = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    if width is not None and (not isinstance(width, int) or width < 1):
        raise ValueError(f"width must be a positive int, got {width!r}")
    builder = _REGISTRY[name]
    accepted = [p.name for p in inspect.signature(builder).parameters.values()
                if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for critic {name!r}; "
                         f"accepted: {', '.join(accepted) or 'none'}")
    _check_option_types(name, builder, options)
    layers = builder(shape, conv, activation, width, **options)
    spec = {"name": name, "input_shape": list(shape), "conv": conv, "activation": activation,
            "width": width, "options": dict(options)}
    return Critic(layers, shape, spec)


_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _check_option_types(name: str, builder, options: dict) -> None:
    """Each option of the builder's annotated type (int, float, str, bool, or None where allowed), so a
    bad value (a string for `depth`, from a command line or a request) is named, not a TypeError deep inside."""
    try:
        params = inspect.signature(builder, eval_str=True).parameters
    except (NameError, TypeError):  # annotations this module cannot resolve: the builder checks its own
        return
    for key, value in options.items():
        annotation = params[key].annotation
        kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
        if value is None and type(None) in kinds or not all(k in _KINDS or k is type(None) for k in kinds):
            continue
        if not any(_is_kind(value, k) for k in kinds if k in _KINDS):
            wanted = " or ".join(_KINDS[k] for k in kinds if k in _KINDS)
            raise ValueError(f"critic {name!r} option {key} must be {wanted}, got {value!r}")


def _is_kind(value, kind) -> bool:
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def critic_from_spec(spec: dict) -> Critic:
    """Rebuild a critic (fresh parameters) from its `.spec`; load the state_dict afterwards."""
    return build_critic(spec["name"], tuple(spec["input_shape"]), conv=spec["conv"],
                        activation=spec["activation"], width=spec["width"], **spec.get("options", {}))


def make_conv(conv: str, in_channels: int, out_channels: int, kernel_size: int, stride: int,
              padding_mode: str, input_size: tuple[int, int]) -> LipschitzConv2d:
    """One convolution of the named kind; `input_size` (H, W) is the layer's spatial input size."""
    if conv == "bcop":
        return BCOPConv2d(in_channels, out_channels, kernel_size, stride, padding_mode=padding_mode)
    if conv == "rko":
        return RKOConv2d(in_channels, out_channels, kernel_size, stride, padding_mode=padding_mode)
    if conv == "ossn":
        return OSSNConv2d(in_channels, out_channels, kernel_size, stride, padding_mode=padding_mode,
                          input_size=input_size)
    if conv == "plain":
        return UnconstrainedConv2d(in_channels, out_channels, kernel_size, stride, padding_mode=padding_mode)
    raise ValueError(f"unknown conv {conv!r}; choose one of {', '.join(CONVS)}")


def make_activation(activation: str, channels: int, group_size: int) -> nn.Module:
    """The named activation for `channels` channels (checks the channel count suits it)."""
    if activation == "maxmin":
        if channels % 2:
            raise ValueError(f"maxmin needs an even number of channels, got {channels}")
        return MaxMin()
    if activation == "groupsort":
        if channels % group_size:
            raise ValueError(f"groupsort: {channels} channels are not divisible by group_size {group_size}")
        return GroupSort(group_size)
    if activation == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


@register_critic("dcgan")
def dcgan(input_shape, conv, activation, width, *, min_size: int = 4, max_width: int = 512,
          padding_mode: str = "circular", group_size: int = 4) -> list[nn.Module]:
    """The Wasserstein critic of Li et al. (their DCGANDiscriminator) for any C x H x W, without their
    upsampling (it would scale distances): stages of (unshuffle by 2, 2x2 conv, activation) while H and W
    are even and the halved size is >= min_size; channels `width` (default 64) doubling per stage up to
    `max_width`; then flatten and a unit-vector linear layer. 64x64 gives the paper's 4 stages."""
    c, h, w = input_shape
    width = 64 if width is None else width
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    layers: list[nn.Module] = []
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= min_size and w // 2 >= min_size:
        out = min(width * 2 ** (len(layers) // 2), max_width)
        layers += [make_conv(conv, c, out, 4, 2, padding_mode, (h, w)), make_activation(activation, out, group_size)]
        c, h, w = out, h // 2, w // 2
    if not layers:
        raise ValueError(f"dcgan critic cannot take input {tuple(input_shape)}: needs H and W even and "
                         f">= 2*min_size = {2 * min_size} (got {input_shape[1]}x{input_shape[2]})")
    return layers + [nn.Flatten(1), OrthoLinear(c * h * w, 1), nn.Flatten(0)]


def _divisor_at_most(channels: int, group_size: int) -> int:
    return max(d for d in range(1, min(channels, group_size) + 1) if channels % d == 0)


@register_critic("conv", activation="groupsort")
def conv_critic(input_shape, conv, activation, width, *, blocks: int = 1, kernel_size: int = 3, min_size: int = 1,
                max_width: int | None = None, group_size: int = 4, padding_mode: str = "circular") -> list[nn.Module]:
    """A convolutional critic whose depth does not need a large image: stages of (unshuffle by 2, 2x2 conv,
    activation) while H and W are even and the halved size is >= min_size, each followed by `blocks`
    stride-1 k x k convolutions (k = min(kernel_size, H, W); 1x1 grids get dense 1x1 layers) with the
    activation; then flatten and a unit-vector linear layer.

    Channels: a stage keeps the unshuffled count 4C (the first stage `width` if given), capped at
    `max_width` (default 256 up to 16x16 inputs, 64 above: at 32x32x3 a 256 cap costs about 6x more per
    step, and 64 already reaches 0.999 of W1 on photo patches; bench/results/critic_design_2026-12-03_cpu.md).
    Without `width` no layer expands, so every layer is orthogonal or has orthonormal rows and the
    gradient norm is 1 at initialisation (an expanding first layer starts at sqrt(C_in/C_out)).
    GroupSort groups have `group_size` channels, or the largest divisor of a layer's channel count below
    it (12 channels with group_size 8: groups of 6)."""
    c, h, w = input_shape
    if max_width is None:
        max_width = 256 if h * w <= 256 else 64
    if min_size < 1 or blocks < 0 or kernel_size < 1 or max_width < 1:
        raise ValueError(f"need min_size >= 1, blocks >= 0, kernel_size >= 1, max_width >= 1; got "
                         f"{min_size}, {blocks}, {kernel_size}, {max_width}")
    layers: list[nn.Module] = []
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= min_size and w // 2 >= min_size:
        out = min(width if (width is not None and not layers) else 4 * c, max_width)
        k = 4 if h >= 4 and w >= 4 else 2  # 2x2 after unshuffle; onto a 1x1 grid a 1x1 (dense) layer
        act = make_activation(activation, out, _divisor_at_most(out, group_size))
        layers += [make_conv(conv, c, out, k, 2, padding_mode, (h, w)), act]
        c, h, w = out, h // 2, w // 2
        k = min(kernel_size, h, w)
        for _ in range(blocks):
            layers += [make_conv(conv, c, c, k, 1, padding_mode, (h, w)),
                       make_activation(activation, c, _divisor_at_most(c, group_size))]
    if not layers:
        raise ValueError(f"conv critic cannot take input {tuple(input_shape)}: needs H and W even and "
                         f">= 2*min_size = {2 * min_size} (got {input_shape[1]}x{input_shape[2]})")
    return layers + [nn.Flatten(1), OrthoLinear(c * h * w, 1), nn.Flatten(0)]


@register_critic("fc", activation="groupsort")
def fc(input_shape, conv, activation, width, *, depth: int = 3, group_size: int = 8,
       bjorck_iters: int = 1) -> list[nn.Module]:
    """Björck fully connected critic (Anil et al. 2019): flatten, `depth` orthonormal hidden layers of
    `width` (default 256) units with the activation, then a unit-vector output. `conv` is unused.
    Defaults from bench/results/critic_design_2026-12-03_cpu.md: GroupSort in groups of 8 folds a norm
    (the optimal critic of a scaling) far better than MaxMin, and width 256 is as tight as 1024 there."""
    c, h, w = input_shape
    width = 256 if width is None else width
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    layers: list[nn.Module] = [nn.Flatten(1)]
    features = c * h * w
    for _ in range(depth):
        layers += [OrthoLinear(features, width, bjorck_iters=bjorck_iters),
                   make_activation(activation, width, group_size)]
        features = width
    return layers + [OrthoLinear(features, 1), nn.Flatten(0)]
