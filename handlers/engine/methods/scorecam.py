"""Score-CAM (Wang et al. 2020), gradient-free: each channel's upsampled, min-max normalised activation masks the
image, and the target's score under that mask weighs the channel.

As pytorch-grad-cam's ``ScoreCAM``: masks upsampled bilinearly with ``align_corners=True``, normalised to [0, 1] per
channel (``(m - min) / (max - min + 1e-8)``), the weights are the softmax over channels of the target's logit on
the masked images, the map is ``ReLU(sum_c w_c A_c)`` on the layer's grid. One masked forward per channel, batched
(``MethodParams.pass_batch`` per forward) and built chunk by chunk; a layer with more channels than
``MethodParams.max_channels`` is refused before the first masked forward.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from handlers.engine.errors import ResourceExhaustedError
from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["ScoreCam"]


class ScoreCam(Method):
    """``ReLU(sum_c softmax_c(Y(x * norm(up(A_c)))) A_c)``, ``[h, w]`` per target."""

    name = "scorecam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[Need]] = frozenset({"activation", "passes"})
    cost: ClassVar[Cost] = Cost(forwards=1, per=("channels",))

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        passes = ctx.passes
        a = ctx.activation(layer)
        channels = int(a.shape[1])
        limit = passes.params.max_channels
        if channels > limit:
            raise ResourceExhaustedError(
                f"scorecam on {layer!r} needs one forward per channel: {channels} channels, over the bound of {limit}; "
                "pick a layer with fewer channels",
                field="layers",
            )
        x = passes.images
        size = (int(x.shape[2]), int(x.shape[3]))

        def make(start: int, stop: int) -> Tensor:
            n = torch.arange(start, stop, device=a.device)
            b, c = n // channels, n % channels
            masks = F.interpolate(a[b, c].unsqueeze(1), size=size, mode="bilinear", align_corners=True)
            lo = masks.amin(dim=(2, 3), keepdim=True)
            hi = masks.amax(dim=(2, 3), keepdim=True)
            return x[b] * ((masks - lo) / (hi - lo + 1e-8)).to(x.dtype)

        weights = passes.scores(channels, make, "Score-CAM chunk").softmax(dim=-1)  # [k, B, C]
        return torch.relu(torch.einsum("kbc,bchw->kbhw", weights, a))
