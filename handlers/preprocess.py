"""Model-input geometry: the one definition of how a caller's picture becomes a classifier or VAE input.

Both sides use it: the TorchServe handler preprocesses every request image with :class:`Preprocessor`, and in-process
callers (the ImageNet helper ``model_store.imagenet``, tests, benchmarks) build bit-identical inputs with the same
class. It is a leaf on purpose: it imports only torch, numpy and Pillow, never the serving package (protobuf,
TorchServe conventions) or the model repository, so importing it costs nothing and cannot close an import cycle.

:class:`Preprocessor` resizes the shorter side to ``resize`` and centre-crops ``input_size``; the crop is computed as an
integer box in *original* pixel coordinates and resampled to the input size in one step, so the :class:`Geometry`
reported to the caller is exact: the model saw exactly ``crop`` of the original, stretched to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["Geometry", "Preprocessor"]


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from in the caller's image.

    Attributes:
        original_width: Width of the image as sent, after EXIF orientation.
        original_height: Height of the image as sent, after EXIF orientation.
        crop: ``(x0, y0, x1, y1)``, half-open, in original pixels: the part of the image the model saw.
        input_width: Model input width; the crop was resampled to this size.
        input_height: Model input height.
    """

    original_width: int
    original_height: int
    crop: tuple[int, int, int, int]
    input_width: int
    input_height: int


class Preprocessor:
    """Resize-shorter-side, centre-crop and normalise, with the geometry recorded exactly.

    The crop box is chosen in original pixels: the region that a resize of the shorter side to ``resize`` followed
    by a centre crop of ``input_size`` would keep, rounded to whole pixels. That box is then resampled (bilinear,
    antialiased) straight to ``input_size``. When the box already has the input size no resampling happens, so an
    image sent at the model's input size reaches the model bit-exact.

    Args:
        input_size: Model input ``(H, W)``.
        resize: Target of the shorter side before cropping; at least ``max(input_size)``.
        mean: Per-channel mean subtracted after scaling to ``[0, 1]``.
        std: Per-channel standard deviation divided by.

    Raises:
        ValueError: For inconsistent settings (the serving config validates them first with field paths).
    """

    def __init__(self, input_size: tuple[int, int], resize: int, mean: Sequence[float], std: Sequence[float]) -> None:
        height, width = input_size
        if height <= 0 or width <= 0 or resize < max(height, width):
            raise ValueError(f"need resize >= max(input_size) > 0, got resize={resize}, input_size={input_size}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError("mean and std need 3 values each, std > 0")
        self.input_size = (height, width)
        self.resize = resize
        self._mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self._std = torch.tensor([float(s) for s in std]).view(3, 1, 1)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part ``(x0, y0, x1, y1)`` of a ``width x height`` image that becomes the model input."""
        in_h, in_w = self.input_size
        shorter = min(width, height)
        crop_w = min(width, max(1, round(in_w * shorter / self.resize)))
        crop_h = min(height, max(1, round(in_h * shorter / self.resize)))
        x0 = (width - crop_w) // 2
        y0 = (height - crop_h) // 2
        return (x0, y0, x0 + crop_w, y0 + crop_h)

    def _geometry(self, width: int, height: int, box: tuple[int, int, int, int]) -> Geometry:
        in_h, in_w = self.input_size
        return Geometry(width, height, box, in_w, in_h)

    def unnormalized_from_pil(self, img: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """The cropped, resampled RGB input in ``[0, 1]`` (``[3, H, W]`` float32) and its geometry."""
        width, height = img.size
        box = self.crop_box(width, height)
        in_h, in_w = self.input_size
        if (box[2] - box[0], box[3] - box[1]) == (in_w, in_h):
            cropped = img.crop(box) if box != (0, 0, width, height) else img
        else:
            cropped = img.resize((in_w, in_h), resample=Image.Resampling.BILINEAR, box=box)
        array = np.asarray(cropped.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0
        return tensor, self._geometry(width, height, box)

    def unnormalized_from_tensor(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """As :meth:`unnormalized_from_pil` for a ``[3, H, W]`` tensor in ``[0, 1]`` (raw pixels)."""
        _, height, width = pixels.shape
        x0, y0, x1, y1 = box = self.crop_box(width, height)
        cropped = pixels[:, y0:y1, x0:x1]
        if tuple(cropped.shape[1:]) != self.input_size:
            cropped = F.interpolate(
                cropped.unsqueeze(0), size=self.input_size, mode="bilinear", align_corners=False, antialias=True
            ).squeeze(0)
        return cropped.contiguous().to(torch.float32), self._geometry(width, height, box)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(pixels - mean) / std`` per channel, for ``[3, H, W]`` or ``[B, 3, H, W]`` tensors."""
        return (pixels - self._mean.to(pixels.device)) / self._std.to(pixels.device)

    def from_pil(self, img: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """The normalised model input ``[3, H, W]`` for an RGB image, and its geometry."""
        pixels, geometry = self.unnormalized_from_pil(img)
        return self.normalize(pixels), geometry

    def from_tensor(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """The normalised model input ``[3, H, W]`` for raw pixels in ``[0, 1]``, and its geometry."""
        cropped, geometry = self.unnormalized_from_tensor(pixels)
        return self.normalize(cropped), geometry
