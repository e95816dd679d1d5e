"""InputSpace: exact range mapping, resolving the two sides, resize and channel policies."""

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from training.space import InputSpace, SpaceMismatch


def test_range_mapping_is_exact():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2)
    out = InputSpace(size=(2, 2), channels=1).apply(x)
    assert out.flatten().tolist() == [-1.0, -0.5, 0.0, 1.0]
    same = InputSpace(value_range=(0, 1), size=2, channels=1).apply(x)
    assert torch.equal(same, x)
    bytes_ = InputSpace(value_range=(0, 255), size=2, channels=1).apply(x)
    assert bytes_.flatten().tolist() == [0.0, 63.75, 127.5, 255.0]


def test_resolve_defaults_to_real_side():
    s = InputSpace().resolve((3, 32, 32), (3, 32, 32))
    assert (s.size, s.channels, s.shape) == ((32, 32), 3, (3, 32, 32))
    assert s.value_range == (-1.0, 1.0) and s.resize == "none"
    # resolving does not change the original (frozen) space
    assert InputSpace().size is None


def test_size_mismatch_names_sizes_and_fix():
    with pytest.raises(SpaceMismatch, match=r"fake is 28x28.*options.space.resize"):
        InputSpace().resolve((3, 32, 32), (3, 28, 28))
    with pytest.raises(SpaceMismatch, match=r"real is 32x32.*fake is 32x32"):
        InputSpace(size=64).resolve((3, 32, 32), (3, 32, 32))
    s = InputSpace(resize="bilinear").resolve((3, 32, 32), (3, 28, 28))
    assert s.size == (32, 32)
    assert InputSpace(size=64, resize="nearest").resolve((3, 32, 32), (3, 28, 28)).size == (64, 64)


def test_channel_mismatch_needs_explicit_channels():
    with pytest.raises(SpaceMismatch, match=r"real has 3, fake has 1.*options.space.channels = 3"):
        InputSpace().resolve((3, 8, 8), (1, 8, 8))
    assert InputSpace(channels=3).resolve((3, 8, 8), (1, 8, 8)).channels == 3
    assert InputSpace(channels=1).resolve((3, 8, 8), (1, 8, 8)).channels == 1
    with pytest.raises(SpaceMismatch, match="cannot be converted"):
        InputSpace(channels=3).resolve((3, 8, 8), (2, 8, 8))
    with pytest.raises(SpaceMismatch, match=r"\(C, H, W\)"):
        InputSpace().resolve((8, 8), (1, 8, 8))


def test_channel_conversion_values():
    grey = torch.rand(2, 1, 4, 4)
    rgb = InputSpace(value_range=(0, 1), size=4, channels=3).apply(grey)
    assert rgb.shape == (2, 3, 4, 4) and all(torch.equal(rgb[:, c : c + 1], grey) for c in range(3))
    red_green_blue = torch.eye(3).view(3, 3, 1, 1)  # pure red, green, blue pixels
    luma = InputSpace(value_range=(0, 1), size=1, channels=1).apply(red_green_blue).flatten()
    assert torch.allclose(luma, torch.tensor([0.299, 0.587, 0.114]))


def test_nearest_upsampling_doubles_distances():
    # The design's warning, checked: nearest 2x upsampling doubles every Euclidean distance.
    x, y = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    s = InputSpace(value_range=(0, 1), size=16, channels=3, resize="nearest")
    ux, uy = s.apply(x), s.apply(y)
    assert ux.shape == (3, 3, 16, 16)
    assert torch.equal(ux[:, :, ::2, ::2], x) and torch.equal(ux[:, :, 1::2, 1::2], x)
    d0 = (x - y).flatten(1).norm(dim=1)
    assert torch.allclose((ux - uy).flatten(1).norm(dim=1), 2 * d0, rtol=1e-5)


def test_area_and_bilinear_resize():
    x = torch.rand(2, 3, 8, 8)
    area = InputSpace(value_range=(0, 1), size=4, channels=3, resize="area").apply(x)
    assert torch.allclose(area, F.avg_pool2d(x, 2))
    const = torch.full((1, 1, 8, 8), 0.3)
    for size in (4, 13):
        out = InputSpace(value_range=(0, 1), size=size, channels=1, resize="bilinear").apply(const)
        assert out.shape == (1, 1, size, size) and torch.allclose(out, torch.full_like(out, 0.3))


def test_apply_checks():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="resolve"):
        InputSpace().apply(x)
    with pytest.raises(SpaceMismatch, match="resize='none'"):
        InputSpace(size=4, channels=1).apply(x)
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        InputSpace(size=8, channels=1).apply(x[0])
    with pytest.raises(ValueError, match="float"):
        InputSpace(size=8, channels=1).apply(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_validation_and_describe():
    for bad in (dict(value_range=(1, 0)), dict(value_range=(0, float("inf"))), dict(channels=4),
                dict(size=(0, 3)), dict(resize="cubic"), dict(unknown=1)):
        with pytest.raises(ValidationError):
            InputSpace(**bad)
    s = InputSpace(size=32, resize="area")
    with pytest.raises(ValidationError):
        s.size = (8, 8)  # frozen
    d = s.resolve((1, 28, 28), (1, 28, 28)).describe()
    assert json.loads(json.dumps(d)) == {"value_range": [-1.0, 1.0], "size": [32, 32], "channels": 1, "resize": "area"}
    assert InputSpace.model_validate_json(InputSpace(size=32).model_dump_json()) == InputSpace(size=(32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_apply_on_cuda_matches_cpu():
    x = torch.rand(4, 1, 12, 12)
    for resize, size in (("nearest", 24), ("area", 6), ("bilinear", 7), ("bilinear", 20)):
        s = InputSpace(size=size, channels=3, resize=resize)
        out = s.apply(x.cuda())
        assert out.device.type == "cuda"
        assert torch.allclose(out.cpu(), s.apply(x), atol=1e-5), resize
