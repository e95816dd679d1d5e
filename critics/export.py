"""Export a critic as plain torch.nn modules with fixed weights: the same function, no parameterisation,
ready for TorchScript and ONNX (opset >= 17)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from critics.conv import LipschitzConv2d
from critics.layers import OrthoLinear


def export_plain(model: nn.Module) -> nn.Sequential:
    """A copy of `model` (an nn.Sequential of certifiable leaves) in eval mode in which every
    LipschitzConv2d is pixel unshuffle + explicit padding + nn.Conv2d with its current kernel, and every
    OrthoLinear an nn.Linear. MaxMin and GroupSort are already plain tensor ops and are kept.
    The result is certifiable by lipschitz_bound with the same bound."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"export_plain needs an nn.Sequential model, got {type(model).__name__}")
    was_training = model.training
    model.eval()  # the cached, final kernels
    try:
        plain = _convert(model)
    finally:
        model.train(was_training)
    if hasattr(model, "input_shape"):
        plain.input_shape = tuple(model.input_shape)
    return plain.eval().requires_grad_(False)


def _convert(m: nn.Module) -> nn.Module:
    if isinstance(m, nn.Sequential):
        return nn.Sequential(*[_convert(child) for child in m])
    if isinstance(m, LipschitzConv2d):
        return _plain_conv(m)
    if isinstance(m, OrthoLinear):
        linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(m.weight)
            if m.bias is not None:
                linear.bias.copy_(m.bias)
        return linear.to(m.param.device)
    return copy.deepcopy(m)


def _plain_conv(m: LipschitzConv2d) -> nn.Sequential:
    weight = m.weight.detach()
    layers: list[nn.Module] = []
    if m.stride > 1:
        layers.append(nn.PixelUnshuffle(m.stride))
    if m.effective_kernel_size > 1:
        pad = m.same_padding()
        layers.append(nn.CircularPad2d(pad) if m.padding_mode == "circular" else nn.ZeroPad2d(pad))
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], m.effective_kernel_size, bias=m.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if m.bias is not None:
            conv.bias.copy_(m.bias)
    layers.append(conv.to(weight.device))
    return nn.Sequential(*layers)
