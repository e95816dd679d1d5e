import pytest
import torch
from torch import nn

from critics import (BCOPConv2d, GroupSort, MaxMin, OrthoLinear, OSSNConv2d, RKOConv2d, available_critics,
                     build_critic, critic_from_spec, lipschitz_bound, register_critic)
from critics.conv import LipschitzConv2d
from critics.models import _REGISTRY, UnconstrainedConv2d


def _convs(model):
    return [m for m in model if isinstance(m, LipschitzConv2d)]


def test_registry_lists_architectures():
    assert {"dcgan", "fc"} <= set(available_critics())


def test_dcgan_at_64x64_is_the_papers_critic():
    model = build_critic("dcgan", (3, 64, 64), conv="plain")
    assert [c.out_channels for c in _convs(model)] == [64, 128, 256, 512]
    assert all(c.kernel_size == 4 and c.stride == 2 and c.effective_kernel_size == 2 for c in _convs(model))
    linear = [m for m in model if isinstance(m, OrthoLinear)]
    assert len(linear) == 1 and (linear[0].in_features, linear[0].out_features) == (8192, 1)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2,)


@pytest.mark.parametrize("shape,channels", [((1, 28, 28), [64, 128]), ((3, 16, 16), [64, 128]),
                                            ((3, 32, 48), [64, 128, 256]), ((1, 8, 8), [64])])
def test_dcgan_stages_follow_input_size(shape, channels):
    model = build_critic("dcgan", shape, conv="plain")
    assert [c.out_channels for c in _convs(model)] == channels
    assert model(torch.randn(3, *shape)).shape == (3,)


def test_dcgan_width_and_cap():
    model = build_critic("dcgan", (3, 64, 64), conv="plain", width=96, max_width=200)
    assert [c.out_channels for c in _convs(model)] == [96, 192, 200, 200]


@pytest.mark.parametrize("conv,cls", [("bcop", BCOPConv2d), ("rko", RKOConv2d), ("ossn", OSSNConv2d),
                                      ("plain", UnconstrainedConv2d)])
@pytest.mark.parametrize("activation,act_cls", [("maxmin", MaxMin), ("groupsort", GroupSort), ("relu", nn.ReLU)])
def test_dcgan_conv_and_activation_choices(conv, cls, activation, act_cls):
    model = build_critic("dcgan", (2, 8, 8), conv=conv, activation=activation, width=8, min_size=2)
    assert all(type(c) is cls for c in _convs(model)) and len(_convs(model)) == 2
    assert sum(isinstance(m, act_cls) for m in model) == 2
    assert model(torch.rand(4, 2, 8, 8)).shape == (4,)


def test_fc_critic():
    model = build_critic("fc", (1, 8, 8), width=32, depth=2, activation="groupsort", group_size=2)
    shapes = [(m.in_features, m.out_features) for m in model if isinstance(m, OrthoLinear)]
    assert shapes == [(64, 32), (32, 32), (32, 1)]
    assert model(torch.randn(5, 1, 8, 8)).shape == (5,)


@pytest.mark.parametrize("name,conv", [("dcgan", "bcop"), ("dcgan", "ossn"), ("dcgan", "rko"), ("fc", "bcop")])
def test_spec_and_state_dict_rebuild_the_same_function(name, conv):
    model = build_critic(name, (1, 8, 8), conv=conv, width=8, min_size=2) if name == "dcgan" else \
        build_critic(name, (1, 8, 8), width=16, depth=1)
    x = torch.rand(6, 1, 8, 8)
    model.train()
    model(x)  # a training forward (OSSN advances its vector)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    twin = critic_from_spec(model.spec)
    twin.load_state_dict(model.state_dict())
    assert twin.input_shape == model.input_shape == (1, 8, 8)
    torch.testing.assert_close(twin.eval()(x), model.eval()(x), rtol=0, atol=1e-6)
    assert lipschitz_bound(twin).bound == pytest.approx(lipschitz_bound(model).bound, rel=1e-6)


def test_register_custom_critic():
    name = "test-tiny-linear"

    @register_critic(name)
    def tiny(input_shape, conv, activation, width, *, bias: bool = True):
        c, h, w = input_shape
        return [nn.Flatten(1), OrthoLinear(c * h * w, 1, bias=bias), nn.Flatten(0)]

    try:
        model = build_critic(name, (1, 2, 2), bias=False)
        assert model.spec["options"] == {"bias": False} and name in available_critics()
        assert lipschitz_bound(model).bound == pytest.approx(1.0, abs=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            register_critic(name)(tiny)
    finally:
        _REGISTRY.pop(name)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "resnet"}, "unknown critic 'resnet'; available: conv, dcgan, fc"),
    ({"conv": "svcm"}, "unknown conv 'svcm'; choose one of bcop, rko, ossn, plain"),
    ({"activation": "tanh"}, "unknown activation 'tanh'; choose one of maxmin, groupsort, relu"),
    ({"input_shape": (3, 15, 15)}, r"cannot take input \(3, 15, 15\): needs H and W even"),
    ({"input_shape": (3, 6, 6)}, r"cannot take input \(3, 6, 6\)"),
    ({"input_shape": (16, 16)}, "input_shape must be"),
    ({"input_shape": (3, 0, 16)}, "input_shape must be"),
    ({"width": 7}, "maxmin needs an even number of channels, got 7"),
    ({"width": 6, "activation": "groupsort"}, "not divisible by group_size 4"),
    ({"depth": 3}, r"unknown option\(s\) depth for critic 'dcgan'; accepted: min_size"),
    ({"width": 0}, "width must be a positive int"),
    # option types from the builder's annotations (a command line or a request may send strings)
    ({"min_size": "abc"}, "critic 'dcgan' option min_size must be an integer, got 'abc'"),
    ({"min_size": 2.5}, "option min_size must be an integer, got 2.5"),
    ({"min_size": True}, "option min_size must be an integer, got True"),
    ({"padding_mode": 3}, "option padding_mode must be a string, got 3"),
    ({"name": "conv", "max_width": "64"}, "critic 'conv' option max_width must be an integer, got '64'"),
    ({"name": "fc", "bjorck_iters": 10**8}, r"bjorck_iters must be an integer in 1\.\.100"),
    ({"name": "fc", "bjorck_iters": 0}, r"bjorck_iters must be an integer in 1\.\.100"),
])
def test_build_errors_are_clear(kwargs, message):
    args = {"name": "dcgan", "input_shape": (3, 16, 16), **kwargs}
    with pytest.raises(ValueError, match=message):
        build_critic(args.pop("name"), args.pop("input_shape"), conv=args.pop("conv", "plain"), **args)


def test_forward_rejects_wrong_input_shape():
    model = build_critic("dcgan", (3, 16, 16), conv="plain", width=8)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, 16, 16\), got \(2, 3, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("shape,opts,channels,kernels", [
    ((1, 8, 8), {"min_size": 2}, [4, 4, 16, 16], [2, 3, 2, 2]),
    ((1, 8, 8), {}, [4, 4, 16, 16, 64, 64], [2, 3, 2, 2, 1, 1]),
    ((3, 16, 16), {}, [12, 12, 48, 48, 192, 192, 256, 256], [2, 3, 2, 3, 2, 2, 1, 1]),
    ((3, 32, 32), {}, [12, 12, 48, 48, 64, 64, 64, 64, 64, 64], [2, 3, 2, 3, 2, 3, 2, 2, 1, 1]),
    ((3, 16, 16), {"blocks": 2, "max_width": 32, "min_size": 2}, [12, 12, 12, 32, 32, 32, 32, 32, 32],
     [2, 3, 3, 2, 3, 3, 2, 2, 2]),
    ((2, 28, 28), {"blocks": 0}, [8, 32], [2, 2]),
])
def test_conv_critic_keeps_depth_on_small_images(shape, opts, channels, kernels):
    """Stages (unshuffle + 2x2 conv) keep 4C channels (no expansion) up to max_width, each followed by
    stride-1 blocks, so an 8x8 input still gets several non-linear layers."""
    model = build_critic("conv", shape, conv="plain", **opts)
    assert [c.out_channels for c in _convs(model)] == channels
    assert [c.effective_kernel_size for c in _convs(model)] == kernels
    blocks = opts.get("blocks", 1)
    assert [c.stride for c in _convs(model)] == ([2] + [1] * blocks) * (len(channels) // (1 + blocks))
    assert model(torch.randn(3, *shape)).shape == (3,)


def test_conv_critic_width_and_group_size():
    model = build_critic("conv", (1, 8, 8), conv="plain", width=32, activation="groupsort", group_size=8)
    assert [c.out_channels for c in _convs(model)] == [32, 32, 128, 128, 256, 256]
    sizes = [m.group_size for m in model if isinstance(m, GroupSort)]
    assert sizes == [8] * 6
    small = build_critic("conv", (1, 8, 8), conv="plain", activation="groupsort", group_size=8)
    assert [m.group_size for m in small if isinstance(m, GroupSort)] == [4, 4, 8, 8, 8, 8]  # a 4-channel layer: one group
    rgb = build_critic("conv", (3, 8, 8), conv="plain", activation="groupsort", group_size=8)
    assert [m.group_size for m in rgb if isinstance(m, GroupSort)] == [6, 6, 8, 8, 8, 8]  # 12 channels: groups of 6


def test_conv_critic_input_errors():
    with pytest.raises(ValueError, match=r"conv critic cannot take input \(1, 7, 7\): needs H and W even and >= 2"):
        build_critic("conv", (1, 7, 7))
    with pytest.raises(ValueError, match="need min_size >= 1, blocks >= 0"):
        build_critic("conv", (1, 8, 8), blocks=-1)


def test_default_activation_is_the_critics_own():
    conv, fc, dcgan = (build_critic(n, (1, 8, 8), conv="plain") for n in ("conv", "fc", "dcgan"))
    assert conv.spec["activation"] == fc.spec["activation"] == "groupsort"
    assert dcgan.spec["activation"] == "maxmin" and any(isinstance(m, MaxMin) for m in dcgan)
    assert [m.group_size for m in fc if isinstance(m, GroupSort)] == [8, 8, 8]
    assert [m.out_features for m in fc if isinstance(m, OrthoLinear)] == [256, 256, 256, 1]
    twin = critic_from_spec(conv.spec)
    assert [type(m) for m in twin] == [type(m) for m in conv]


def test_option_types_allow_none_where_annotated_and_every_layer_bounds_bjorck_iters():
    assert build_critic("conv", (1, 8, 8), max_width=None).spec["options"] == {"max_width": None}
    assert build_critic("fc", (1, 8, 8), bjorck_iters=100)[1].bjorck_iters == 100
    for make in (lambda: OrthoLinear(4, 4, bjorck_iters=101), lambda: BCOPConv2d(4, 4, 3, bjorck_iters=101),
                 lambda: RKOConv2d(4, 4, 3, bjorck_iters=101)):
        with pytest.raises(ValueError, match=r"bjorck_iters must be an integer in 1\.\.100"):
            make()
