"""No host synchronisation inside the engine's pass loop, checked on the CPU.

``torch.cuda.set_sync_debug_mode`` needs a GPU, so the test does what it would: every tensor operation that makes the
host wait for the device (``item``, ``tolist``, ``numpy``, ``cpu``, ``bool`` / ``int`` / ``float`` / ``index`` of a
tensor, ``nonzero``, boolean-mask indexing) is wrapped to record where the engine called it, through any torch
Python code in between. An explanation may read the device only where it must, once per batch and never between
its forward and the last map: the input check (on the caller's tensor, before its copy to the device), the
predictions, and the top-k target ids (both after the maps). Everything else the engine does per pass (target
seeds, region masks, backward passes, every method) must be queued without the host waiting.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import handlers.engine
from handlers.engine import Box, Explainer, Mask, Region, VAEExplainer

from .vae_helpers import TinyVAE

ENGINE_DIR = str(Path(handlers.engine.__file__).parent)
TORCH_DIR = str(Path(torch.__file__).parent)
SYNCING = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero")

#: Engine functions that may read device values on the host: input validation and results, once per batch.
ALLOWED = {
    "_check_images",  # finiteness of the caller's images, before they move to the device
    "_structure",  # a mask region's 0/1 check, on the caller's mask, before the batch runs
    "_predictions",  # the top predictions, after the maps
    "per_image",  # the top-k target ids, after the maps
}
ALL = ("gradcam", "gradcam++", "xgradcam", "layercam", "saliency", "guided_backprop", "deconvnet", "guided_gradcam")
VAE_ALL = ("area_saliency", "area_gradcam", "area_guided", "latent_gradcam", "anomaly_recon_error", "anomaly_latent")


class HostSyncs:
    """Records ``(operation, engine function)`` for every host-syncing tensor operation the engine calls."""

    def __init__(self) -> None:
        self.sites: list[tuple[str, str]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in SYNCING:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        getitem = torch.Tensor.__getitem__

        def masked_getitem(t: Tensor, index: Any) -> Any:
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts):
                self._record("bool-mask indexing")
            return getitem(t, index)

        monkeypatch.setattr(torch.Tensor, "__getitem__", masked_getitem)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(t: Tensor, *args: Any, **kwargs: Any) -> Any:
            self._record(name)
            return original(t, *args, **kwargs)

        return wrapper

    def _record(self, what: str) -> None:
        frame: FrameType | None = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.startswith(TORCH_DIR):
            frame = frame.f_back  # through torch's own Python code to whoever called it
        if frame is not None and frame.f_code.co_filename.startswith(ENGINE_DIR):
            self.sites.append((what, frame.f_code.co_name))

    def take(self) -> list[tuple[str, str]]:
        sites, self.sites = self.sites, []
        return sites


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostSyncs]:
    guard = HostSyncs()
    guard.install(monkeypatch)
    yield guard


def _functions(sites: list[tuple[str, str]]) -> set[str]:
    return {fn for _, fn in sites}


def test_the_guard_sees_the_engines_host_reads(resnet18: nn.Module, syncs: HostSyncs) -> None:
    """The guard is live: the reads the engine must do are seen (so a new one in the loop would be too)."""
    ex = Explainer(copy.deepcopy(resnet18))
    ex.explain(torch.randn(1, 3, 64, 64))  # the probe (once per explainer) is not part of a call
    syncs.take()
    ex.explain(torch.randn(2, 3, 64, 64), methods=("gradcam",), top_k=2)
    sites = syncs.take()
    assert ("tolist", "_predictions") in sites and ("tolist", "per_image") in sites
    assert ("__bool__", "_check_images") in sites


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "amp"])
def test_classifier_passes_never_wait_for_the_device(resnet18: nn.Module, syncs: HostSyncs, amp: bool) -> None:
    ex = Explainer(copy.deepcopy(resnet18), amp=amp)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ex.explain(x[:1])  # probe
    syncs.take()
    ex.explain(x, methods=("gradcam",))
    one = syncs.take()
    ex.explain(x, methods=ALL, layers=("layer2", "layer3", "layer4"), top_k=[1, 3, 2])
    many = syncs.take()
    ex.explain(x, methods=("cam", "gradcam++"), layers="layer4", top_k=2)  # the head's weights, by target id
    head = syncs.take()
    ex.explain(x, methods=ALL, layers=("layer3", "layer4"), targets=[[1, 2], 3, [4, 5, 6]])
    classes = syncs.take()
    ex.explain(x, methods=("gradcam", "saliency"), targets=lambda out: out[:, 0] - out[:, 1])
    custom = syncs.take()
    for sites in (one, many, head, classes, custom):
        assert _functions(sites) <= ALLOWED, sites
    # more methods, layers, passes and targets add no read of the device: the reads are per batch
    assert len(many) == len(one) == len(head), (one, many, head)
    assert len(classes) < len(one) and len(custom) < len(one)  # class ids are known on the host


@pytest.mark.parametrize("strategy", ["batched", "replicate", "loop"])
def test_vae_passes_never_wait_for_the_device(syncs: HostSyncs, strategy: str) -> None:
    torch.manual_seed(0)
    vae = TinyVAE().eval()
    ex = VAEExplainer(vae, input_size=(8, 8), strategy=strategy)  # type: ignore[arg-type]
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 1:6] = True
    ex.explain(x[:1], "area_saliency", regions=[[Box(0, 0, 2, 2)]])  # probe
    syncs.take()
    ex.explain(x, "area_saliency", regions=[[Box(0, 0, 4, 4)], [Box(1, 1, 3, 3)]])
    one = syncs.take()
    regions = [[Box(0, 0, 4, 4), Box(2, 2, 8, 8), Box(0, 4, 4, 8)], [Box(1, 1, 3, 3)]]
    ex.explain(x, VAE_ALL, regions=regions, layers="encoder.0", latents=(0, 1), sample_seed=5)
    many = syncs.take()
    mixed: list[list[Region]] = [[Mask(mask)], [Box(1, 1, 3, 3), Mask(mask)]]
    ex.explain(x, VAE_ALL, regions=mixed)
    masks = syncs.take()
    for sites in (one, many, masks):
        assert _functions(sites) <= ALLOWED, sites
    assert len(many) == len(one), (one, many)
    assert all(fn == "_structure" for fn in _functions(masks) - _functions(one))  # masks are checked up front
