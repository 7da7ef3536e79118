"""The tiny seeded VAE and the helpers the VAE engine tests share (tests/engine/test_vae*.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

AREA_METHODS = ("area_saliency", "area_guided", "area_gradcam", "area_layercam")
#: (strategy, max_rows): every way of batching region backward passes; with 3 images, max_rows=8 groups 2 regions
#: per vmapped call (a full group and a remainder), None puts all in one.
CONFIGS = [("replicate", None), ("batched", None), ("batched", 8), ("loop", None)]
ANOMALY_METHODS = ("anomaly_recon_error", "anomaly_latent")
ALL_METHODS = (*AREA_METHODS, "latent_gradcam", *ANOMALY_METHODS)


class TinyVAE(nn.Module):
    """8x8 RGB -> spatial latent [2, 4, 4] -> 8x8 RGB; seeded weights, sigmoid output, non-inplace ReLUs.

    Two encoder stages so a layer sweep and a "not the last layer" case exist; a ReLU in the decoder so the guided
    rule matters on both sides of the latent.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()
        )
        self.to_mu = nn.Conv2d(5, 2, 1)
        self.to_logvar = nn.Conv2d(5, 2, 1)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2, 4, 4, 2, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])


def _x(batch: int = 3, dtype: torch.dtype = torch.float64, seed: int = 1) -> Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _close(got: Tensor, ref: Tensor) -> None:
    """Maps are float32 by contract; the float64 references agree to float32 rounding."""
    assert got.dtype == torch.float32
    scale = float(ref.abs().max())  # CAM maps are float32 sums of larger terms: allow float32 rounding of those
    torch.testing.assert_close(got.double(), ref.double(), atol=1e-6 * scale + 1e-12, rtol=1e-6)


def _mask(region: object, size: tuple[int, int] = (8, 8)) -> Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    if isinstance(region, Tensor):
        return region.bool()
    x0, y0, x1, y1 = region  # type: ignore[misc]
    m[y0:y1, x0:x1] = True
    return m


def _score_fn(model: TinyVAE, mask: Tensor) -> Callable[[Tensor], Tensor]:
    """The region score as a plain forward function: ``sum(x_hat * mask)`` over channels and pixels."""
    return lambda x: (model(x) * mask.to(x.dtype)).sum(dim=(1, 2, 3))


class _Scored(nn.Module):
    """The VAE followed by the masked sum, as an ``nn.Module`` (Captum's guided backprop hooks its ReLU modules)."""

    def __init__(self, model: TinyVAE, mask: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return (self.model(x) * self.mask.to(x.dtype)).sum(dim=(1, 2, 3))


REGIONS = [[(0, 0, 3, 3), (2, 1, 8, 5)], [(4, 4, 8, 8)], [(1, 6, 2, 7), (0, 0, 8, 8), (3, 0, 7, 2)]]
