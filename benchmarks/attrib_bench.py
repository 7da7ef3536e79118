"""The attribution rows of the engine benchmark: Integrated Gradients (50 steps) and SmoothGrad against Captum doing
the same work, as ratios to a plain forward in one run (``engine_bench.py --sections attribution``).

Same work: the top-1 prediction plus the maps. Integrated Gradients: 50 Gauss-Legendre steps from a black (zero)
baseline, and the completeness check (Captum: ``return_convergence_delta=True``, its forward of the input and the
baseline; the engine: its completeness error from the prediction forward and one baseline forward). SmoothGrad: 20
noisy copies per image (Captum: ``NoiseTunnel`` with ``nt_type="smoothgrad"``); both SmoothGrad maps of one call
are one engine call (one forward of the copies, two backward rules) against two NoiseTunnel calls. Captum runs its
default (every point of the call in one forward) and, when that is slower, with 32 points per forward
(``internal_batch_size`` / ``nt_samples_batch_size``); the table keeps the faster.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from handlers.engine import Explainer, MethodParams

__all__ = ["attribution_works"]

Contestant = Callable[[], object]
STEPS = 50
SAMPLES = 20
NOISE = 0.15


def _top1(model: nn.Module, x: Tensor) -> list[int]:
    with torch.inference_mode():
        return model(x).argmax(dim=1).tolist()  # type: ignore[no-any-return]


def _captum_ig(model: nn.Module, x: Tensor, internal: int | None) -> object:
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(
        x,
        baselines=torch.zeros_like(x),
        target=_top1(model, x),
        n_steps=STEPS,
        method="gausslegendre",
        internal_batch_size=internal,
        return_convergence_delta=True,
    )


def _captum_smoothgrad(model: nn.Module, x: Tensor, kinds: tuple[str, ...], per_forward: int | None) -> object:
    from captum.attr import GuidedBackprop, NoiseTunnel, Saliency

    target = _top1(model, x)
    stdev = NOISE * float(x.max() - x.min())
    out = []
    for kind in kinds:
        algo = Saliency(model) if kind == "saliency" else GuidedBackprop(model)
        extra = {"abs": False} if kind == "saliency" else {}
        out.append(
            NoiseTunnel(algo).attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=SAMPLES,
                nt_samples_batch_size=per_forward,
                stdevs=stdev,
                target=target,
                **extra,
            )
        )
    return out


def attribution_works(
    ex: Explainer, cap_model: nn.Module, x: Tensor, libraries: bool
) -> dict[str, dict[str, Contestant]]:
    """Each attribution row's contestants for one model and batch."""
    params = MethodParams(steps=STEPS, samples=SAMPLES, noise=NOISE)
    works: dict[str, dict[str, Contestant]] = {
        f"integrated_gradients {STEPS} steps": {
            "engine": partial(ex.explain, x, methods=("integrated_gradients",), options=params)
        },
        f"smoothgrad_saliency {SAMPLES} samples": {
            "engine": partial(ex.explain, x, methods=("smoothgrad_saliency",), options=params)
        },
        f"smoothgrad_guided_backprop {SAMPLES} samples": {
            "engine": partial(ex.explain, x, methods=("smoothgrad_guided_backprop",), options=params)
        },
        "smoothgrad saliency + guided backprop": {
            "engine": partial(
                ex.explain, x, methods=("smoothgrad_saliency", "smoothgrad_guided_backprop"), options=params
            )
        },
    }
    if libraries:
        ig, sal, gb, both = works.values()
        for label, chunk in (("captum", None), ("captum 32/forward", 32)):
            ig[label] = partial(_captum_ig, cap_model, x, chunk)
            per = None if chunk is None else max(1, chunk // int(x.shape[0]))
            sal[label] = partial(_captum_smoothgrad, cap_model, x, ("saliency",), per)
            gb[label] = partial(_captum_smoothgrad, cap_model, x, ("guided_backprop",), per)
            both[label] = partial(_captum_smoothgrad, cap_model, x, ("saliency", "guided_backprop"), per)
    return works
