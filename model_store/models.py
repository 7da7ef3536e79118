"""The two demo networks trained on the shapes data set.

Both use plain, non-inplace :class:`torch.nn.ReLU` modules (one per use) so guided backprop and deconvnet can change
their gradient rule with hooks, and neither pools or mixes positions globally before its head, so explanation maps
stay local (the classifier's input standardisation uses each image's global mean and spread, but only to rescale
every pixel alike).

* :class:`ShapesClassifier` — a small residual CNN: per-image channel standardisation, stride-2 stem, one residual
  block at 32x32, one strided and one plain residual block at 16x16, global average pooling and a linear head, so
  CAM applies and the automatically chosen Grad-CAM layer (the last block) has a 16x16 map at 64x64 input. (A
  prototype with an 8x8 last map scored 0.86 on the pointing game; 16x16 scored 0.97.) Measured on the varied
  generator at equal training cost: a dilated last block (dilation 2, receptive field 50 px) spread every map over
  a plateau wider than small objects (Grad-CAM pointing 0.80 on boxes under 20 px), the plain one (42 px) 0.96.
* :class:`ShapesVAE` — a fully convolutional VAE with a spatial latent (``latent_channels`` x H/8 x W/8). Its encoder
  and decoder each see a local neighbourhood only (3 stride-2 stages, no global pooling, no fully connected layer),
  so which input pixels a reconstructed region depends on is a local question: the encoder's receptive field is 22 px
  (three 4x4 stride-2 convolutions, then 1x1 only) and each output pixel depends on a 2x2 neighbourhood of latent
  cells.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelStandardise", "ResidualBlock", "ShapesClassifier", "ShapesVAE"]


class ResidualBlock(nn.Module):
    """Two conv + BN layers with an identity (or projection) shortcut, ReLU after the sum.

    A strided block (``stride=2``) opens with a 4x4 stride-2 convolution and shortcuts through a 2x2 average pool and
    a 1x1 convolution, so output cell ``k`` is centred on input pixels ``2k, 2k + 1`` — where bilinear upsampling of
    a map puts it. (A 3x3 stride-2 layer is centred on pixel ``2k``: half a pixel off per stage, 1.5 px at the 16x16
    Grad-CAM layer of :class:`ShapesClassifier`, enough to pull the argmax of a map out of a small box.)
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 2:
            self.conv1 = nn.Conv2d(in_ch, out_ch, 4, 2, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride == 2:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(2), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
            )
        elif in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu2(out + self.shortcut(x))
        return result


class ChannelStandardise(nn.Module):
    """Per image and channel: subtract the mean, divide by ``std + eps`` (no parameters).

    Makes the classifier indifferent to an image's overall brightness, contrast and colour cast. ``eps`` (in units
    of [0, 1] pixel values) keeps a nearly flat image from being amplified into noise and keeps the mapping close to
    linear, which Integrated Gradients' completeness needs.
    """

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True)
        return (x - mean) / (std + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class ShapesClassifier(nn.Module):
    """Residual CNN for the shapes data set; input ``[B, 3, H, W]`` in [0, 1], output logits ``[B, num_classes]``.

    Layers (at 64x64 input): ``standardise`` (:class:`ChannelStandardise`), ``stem`` 32x32 (a 4x4 stride-2
    convolution, centred like the strided block), ``layer1`` 32x32, ``layer2`` 16x16 (strided), ``layer3`` 16x16
    (its second convolution dilated by ``dilation``), then ``pool`` (global average) and ``fc``. The automatically
    chosen CAM layer (``layer3``) has a 16x16 map.
    """

    def __init__(self, num_classes: int = 6, width: int = 32, standardise_eps: float = 0.3, dilation: int = 1) -> None:
        super().__init__()
        self.standardise = ChannelStandardise(standardise_eps)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = ResidualBlock(16, width)
        self.layer2 = ResidualBlock(width, 2 * width, stride=2)
        self.layer3 = ResidualBlock(2 * width, 2 * width, dilation=dilation)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(self.standardise(x)))))
        logits: torch.Tensor = self.fc(self.flatten(self.pool(x)))
        return logits


def _down(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 4, 2, padding=1), nn.ReLU()]


def _up(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, padding=1), nn.ReLU()]


class ShapesVAE(nn.Module):
    """Fully convolutional VAE with a spatial latent ``[B, latent_channels, H/8, W/8]``.

    Images are in [0, 1] with no normalisation; the reconstruction goes through a sigmoid. ``forward`` is the
    deterministic path ``decode(mu)``; training samples ``z = mu + exp(logvar / 2) * eps`` itself. Channel widths
    grow as resolution shrinks (``widths`` at H/2, H/4, H/8) and the decoder mirrors them, ending in a narrow
    full-resolution stage to keep the cost on CPU small.
    """

    def __init__(self, latent_channels: int = 32, widths: tuple[int, int, int] = (24, 48, 64)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.latent_channels = latent_channels
        self.encoder = nn.Sequential(
            *_down(3, w1),  # H/2
            *_down(w1, w2),  # H/4
            *_down(w2, w3),  # H/8
            nn.Conv2d(w3, w3, 1),  # 1x1: mixes channels without widening the receptive field
            nn.ReLU(),
        )
        self.to_mu = nn.Conv2d(w3, latent_channels, 1)
        self.to_logvar = nn.Conv2d(w3, latent_channels, 1)
        # start with a small posterior variance: the decoder first learns to reconstruct, then the (small) KL term
        # widens the posterior where it costs little; starting at variance 1 drowns the signal early in training
        nn.init.zeros_(self.to_logvar.weight)
        if self.to_logvar.bias is not None:
            nn.init.constant_(self.to_logvar.bias, -6.0)
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w3, 1),
            nn.ReLU(),
            *_up(w3, w2),  # H/4
            *_up(w2, w1),  # H/2
            *_up(w1, 16),  # H
            nn.Conv2d(16, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``[B, latent_channels, H/8, W/8]``."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the reconstruction ``[B, 3, 8*h, 8*w]`` in (0, 1)."""
        out: torch.Tensor = self.decoder(z)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction ``decode(mu(x))``."""
        mu, _ = self.encode(x)
        return self.decode(mu)
