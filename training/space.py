"""The common input space both sides are mapped into before a critic sees them.

W1 depends on the space it is measured in: the pixel range scales every distance, upsampling
changes it, and a grey image is not an RGB image.  Results therefore carry their `InputSpace`,
and nothing is resized or converted unless the user asked for it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, Union

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

if TYPE_CHECKING:  # torch is imported where a batch is mapped, so the options stay importable without it
    import torch

__all__ = ["InputSpace", "SpaceMismatch"]

Shape = tuple[int, int, int]

# ITU-R BT.601 luma weights: the usual RGB -> grey conversion (PIL's "L" mode uses the same).
_LUMA = (0.299, 0.587, 0.114)


class SpaceMismatch(ValueError):
    """The two sides do not live in the same space and no option says how to reconcile them."""


class InputSpace(BaseModel):
    """Pixel range, size and channel count every sample is mapped into.

    `value_range` is the range [0, 1] source values are mapped onto, or "none": values are used as the
    sources hand them out (arrays opened with value_range="none" keep their own values: vectors,
    features, unbounded data need no fake pixel range). Vectors N×D are 1×1×D images.
    `size=None` / `channels=None` mean "the real side's"; `resolve()` fills them in.
    `resize` names the interpolation used when a side's size differs from `size`;
    "none" makes any size difference an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    value_range: Union[tuple[float, float], Literal["none"]] = (-1.0, 1.0)
    size: tuple[int, int] | None = None
    channels: int | None = None
    resize: Literal["none", "nearest", "bilinear", "area"] = "none"

    @field_validator("size", mode="before")
    @classmethod
    def _square_size(cls, v):
        # Accept `size=64` as shorthand for (64, 64).
        if isinstance(v, int) and not isinstance(v, bool):
            return (v, v)
        return v

    @field_validator("size")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and (v[0] < 1 or v[1] < 1):
            raise ValueError(f"size must be positive, got {v}")
        return v

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v):
        if v is not None and v not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {v}")
        return v

    @model_validator(mode="after")
    def _valid_range(self):
        if self.value_range == "none":
            return self
        lo, hi = self.value_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"value_range must be finite with low < high, got {self.value_range}")
        return self

    # -- resolving ---------------------------------------------------------------------------

    @property
    def is_resolved(self) -> bool:
        return self.size is not None and self.channels is not None

    @property
    def shape(self) -> Shape:
        """(C, H, W) of the resolved space."""
        self._require_resolved("shape")
        return (self.channels, self.size[0], self.size[1])

    def resolve(self, real_shape: Shape, fake_shape: Shape) -> "InputSpace":
        """Fill in size and channels (default: the real side's) and check both sides fit.

        Raises SpaceMismatch naming what differs and which option fixes it.
        """
        real_shape, fake_shape = tuple(real_shape), tuple(fake_shape)
        for side, shp in (("real", real_shape), ("fake", fake_shape)):
            if len(shp) != 3 or any(int(s) < 1 for s in shp):
                raise SpaceMismatch(f"{side} shape must be (C, H, W) with positive sizes, got {shp}")
        (rc, rh, rw), (fc, fh, fw) = real_shape, fake_shape

        channels = self.channels if self.channels is not None else rc
        if self.channels is None and rc != fc:
            raise SpaceMismatch(
                f"channels differ: real has {rc}, fake has {fc}. Convert one side: --channels 3 (a job's "
                f"options.space.channels = 3) repeats grey into RGB, --channels 1 (options.space.channels = 1) "
                f"converts RGB to grey (luma), on whichever side needs it."
            )
        for side, c in (("real", rc), ("fake", fc)):
            if c != channels and {c, channels} != {1, 3}:
                raise SpaceMismatch(
                    f"{side} side has {c} channels and cannot be converted to {channels}; "
                    f"only grey (1) <-> RGB (3) conversion is supported."
                )

        size = self.size if self.size is not None else (rh, rw)
        if self.resize == "none":
            wrong = [
                f"{side} is {h}x{w}"
                for side, h, w in (("real", rh, rw), ("fake", fh, fw))
                if (h, w) != tuple(size)
            ]
            if wrong:
                raise SpaceMismatch(
                    f"image sizes differ from the space's {size[0]}x{size[1]} ({', '.join(wrong)}) "
                    f"and resize='none'. Pass --resize bilinear, area or nearest (a job's options.space.resize) "
                    f"and --size H,W (options.space.size = [H, W]) to choose the common size (default: the real "
                    f"side's). Note that resizing changes W1: results are only comparable in the same space."
                )
        return self.model_copy(update={"size": tuple(size), "channels": channels})

    # -- mapping -----------------------------------------------------------------------------

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Map a float batch (n, C, H, W) in [0, 1] into this (resolved) space, on x's device."""
        self._require_resolved("apply")
        if x.ndim != 4:
            raise ValueError(f"expected a batch of shape (n, C, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float tensor in [0, 1], got dtype {x.dtype}")
        x = self._convert_channels(x)
        if tuple(x.shape[-2:]) != self.size:
            x = self._resize(x)
        if self.value_range == "none":
            return x
        lo, hi = self.value_range
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        return x

    def _convert_channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.channels:
            return x
        if c == 1 and self.channels == 3:
            return x.expand(-1, 3, -1, -1).contiguous()
        if c == 3 and self.channels == 1:
            import torch

            w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x * w).sum(dim=1, keepdim=True)
        raise SpaceMismatch(f"cannot convert {c} channels to {self.channels}")

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        h, w = x.shape[-2:]
        if self.resize == "none":
            raise SpaceMismatch(
                f"batch is {h}x{w} but the space is {self.size[0]}x{self.size[1]} and resize='none'"
            )
        if self.resize == "nearest":
            return F.interpolate(x, size=self.size, mode="nearest-exact")
        if self.resize == "area":
            return F.interpolate(x, size=self.size, mode="area")
        # Bilinear with antialiasing when shrinking, so downsampling does not alias.
        shrinking = self.size[0] < h or self.size[1] < w
        return F.interpolate(
            x, size=self.size, mode="bilinear", align_corners=False, antialias=shrinking
        )

    def _require_resolved(self, what: str) -> None:
        if not self.is_resolved:
            raise ValueError(
                f"InputSpace.{what} needs size and channels; call resolve(real_shape, fake_shape) first"
            )

    def describe(self) -> dict:
        """JSON-able summary, stored with every result."""
        return {
            "value_range": "none" if self.value_range == "none" else [float(v) for v in self.value_range],
            "size": list(self.size) if self.size is not None else None,
            "channels": self.channels,
            "resize": self.resize,
        }
