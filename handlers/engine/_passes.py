"""The model's own passes for methods that run it on new inputs: Integrated Gradients' interpolation points,
SmoothGrad's noisy copies and Score-CAM's masked images.

A method describes its inputs as one flat sequence, ``per_image`` points for each image of the batch in order
(point ``n`` belongs to image ``n // per_image``), built on demand by a ``make(start, stop)`` function, so a
thousand masked images never exist at once. :class:`ModelPasses` runs them through the model in chunks of
``MethodParams.pass_batch`` inputs; a chunk that runs out of device memory is retried in halves by the runner's
out-of-memory split. Every target of the call is explained at once: one forward per chunk, one vmapped backward
per ReLU rule for all targets (the targets are those the prediction forward resolved, so top-k means the same
classes for every point of an image).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from handlers.engine._hooks import relu_rule
from handlers.engine._runner import gradient_rows
from handlers.engine._targets import ResolvedTargets, TargetFn
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods import GradientRule
from handlers.engine.methods._params import MethodParams

__all__ = ["MakePoints", "MakeWeighted", "ModelPasses", "Split"]

R = TypeVar("R")
#: Points ``start:stop`` of the flat sequence, ``[stop - start, C, H, W]``.
MakePoints = Callable[[int, int], Tensor]
#: Points ``start:stop`` and the factor each point's gradient is multiplied by before it is summed into its image
#: (broadcastable to ``[stop - start, C, H, W]``).
MakeWeighted = Callable[[int, int], tuple[Tensor, Tensor]]
#: The runner's out-of-memory split: ``split(run, count, what)`` runs ``run`` over ``slice(0, count)``, in halves
#: on out-of-memory.
Split = Callable[[Callable[[slice], list[Tensor]], int, str], list[Tensor]]

_OFF_PATH = "the explained score does not depend on the input"


class ModelPasses:
    """Runs the model on a method's own inputs and reads the call's target scores from it.

    Args:
        model: The explained model (already frozen in eval mode by the caller's batch scope).
        images: The batch ``[B, C, H, W]`` as the prediction forward saw it (no autograd history).
        targets: The targets resolved by the prediction forward (their ``ids``; ``output`` gives the scores at
            the images themselves).
        fn: The callable target, when the call has one (applied to each chunk's output).
        params: The call's method parameters.
        split: The runner's out-of-memory split.
        autocast: The forward's autocast context (as for the prediction forward).
        black: The model-input value of a black pixel per channel ``[C]``.
        smooth_rules: ReLU rules whose SmoothGrad gradients the call needs (one shared forward serves all).
    """

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        targets: ResolvedTargets,
        fn: TargetFn | None,
        params: MethodParams,
        split: Split,
        autocast: Callable[[], contextlib.AbstractContextManager[object]],
        black: Tensor,
        smooth_rules: Sequence[GradientRule] = (),
    ) -> None:
        self._model = model
        self._images = images.detach()
        self._targets = targets
        self._fn = fn
        self._params = params
        self._split = split
        self._autocast = autocast
        self._black = black
        self._smooth_rules = tuple(smooth_rules)
        self._smooth: dict[GradientRule, Tensor] | None = None
        self._noise: Tensor | None = None

    # ----------------------------------------------------------------------------------------------- facts
    @property
    def images(self) -> Tensor:
        """The explained batch ``[B, C, H, W]``."""
        return self._images

    @property
    def params(self) -> MethodParams:
        """The call's method parameters."""
        return self._params

    @property
    def black(self) -> Tensor:
        """A black image in the model's input space, ``[1, C, 1, 1]``."""
        return self._black.reshape(1, -1, 1, 1).to(self._images)

    @property
    def k(self) -> int:
        """Target rows (the most targets of any image)."""
        return self._targets.k

    def input_scores(self) -> Tensor:
        """The target scores at the images themselves, ``[k, B]`` (0 on padding rows), from the prediction."""
        return self._scores_of(self._targets.output.detach(), torch.arange(self._images.shape[0]))

    # ----------------------------------------------------------------------------------------------- passes
    def scores(self, per_image: int, make: MakePoints, what: str) -> Tensor:
        """The target scores of every point, ``[k, B, per_image]``, from forwards only (no graph is recorded)."""
        total = int(self._images.shape[0]) * per_image

        def run(start: int, stop: int) -> Tensor:
            with torch.no_grad(), self._autocast():
                out = self._model(make(start, stop))
            return self._scores_of(self._output(out), torch.arange(start, stop) // per_image)

        flat = self._chunked(total, run, what)
        return flat.reshape(self.k, -1, per_image)

    def gradient_sums(
        self, per_image: int, make: MakeWeighted, rules: Sequence[GradientRule], what: str
    ) -> tuple[dict[GradientRule, Tensor], Tensor]:
        """For each rule, ``sum_n factor_n * d score / d point_n`` per image ``[k, B, C, H, W]``, and the scores of
        every point ``[k, B, per_image]``; one forward per chunk serves every rule, and each chunk's gradients are
        summed into its images as soon as it is done (memory: one chunk, not all points)."""
        batch = int(self._images.shape[0])
        chw = int(self._images[0].numel())
        acc = torch.zeros((self.k, batch, len(rules) * chw), dtype=torch.float32, device=self._images.device)

        def run(start: int, stop: int) -> Tensor:
            points, factor = make(start, stop)
            first = start // per_image
            owners = torch.arange(start, stop) // per_image
            with torch.enable_grad():
                x = points.detach().requires_grad_(True)
                with self._autocast():
                    out = self._output(self._model(x))
                target, seeds = self._seeds_of(out, owners)
                grads = []
                for i, rule in enumerate(rules):
                    retain = i < len(rules) - 1
                    with contextlib.nullcontext() if rule == "plain" else relu_rule(target.grad_fn, rule):
                        [g] = gradient_rows(target, [x], seeds, retain, _OFF_PATH)
                    grads.append((g.float() * factor).flatten(2))
                scores = self._scores_of(out.detach(), owners)
            local = torch.zeros((self.k, int(owners[-1]) - first + 1, acc.shape[2]), device=acc.device)
            local.index_add_(1, (owners - first).to(acc.device), torch.cat(grads, dim=2))
            acc[:, first : first + local.shape[1]] += local  # only once this chunk (or half) has fully succeeded
            return scores

        scores = self._chunked(batch * per_image, run, what)
        sums = {
            rule: acc[:, :, i * chw : (i + 1) * chw].reshape(self.k, *self._images.shape)
            for i, rule in enumerate(rules)
        }
        return sums, scores.reshape(self.k, batch, per_image)

    def smooth_gradients(self, rule: GradientRule) -> Tensor:
        """SmoothGrad of the input gradient under ``rule``: the mean gradient over noisy copies ``[k, B, C, H, W]``.

        Every rule the call needs is computed in the first call, from one forward per chunk of noisy copies.
        """
        if self._smooth is None:
            rules = self._smooth_rules or (rule,)
            samples = self._params.samples
            noisy = self.noisy_images()

            def make(start: int, stop: int) -> tuple[Tensor, Tensor]:
                return noisy[start:stop], torch.tensor(1.0 / samples, device=noisy.device)

            self._smooth, _ = self.gradient_sums(samples, make, rules, "SmoothGrad chunk")
        return self._smooth[rule]

    def noisy_images(self) -> Tensor:
        """SmoothGrad's noisy copies, ``[B * samples, C, H, W]`` image-major (see :func:`smoothgrad_noise`)."""
        if self._noise is None:
            x = self._images
            p = self._params
            noise = torch.stack([smoothgrad_noise(image, p.samples, p.noise, p.seed) for image in x])
            self._noise = (x.unsqueeze(1) + noise).flatten(0, 1)
        return self._noise

    # ----------------------------------------------------------------------------------------------- internals
    def _chunked(self, total: int, run: Callable[[int, int], Tensor], what: str) -> Tensor:
        """``run`` over ``0:total`` in chunks of ``pass_batch``, each halved on out-of-memory; results along dim 1."""
        parts: list[Tensor] = []
        size = self._params.pass_batch
        for start in range(0, total, size):
            stop = min(start + size, total)

            def chunk(part: slice, offset: int = start) -> list[Tensor]:
                return [run(offset + part.start, offset + part.stop)]

            parts.extend(self._split(chunk, stop - start, what))
        return torch.cat(parts, dim=1)

    def _output(self, out: object) -> Tensor:
        if not isinstance(out, Tensor):
            raise InvalidArgumentError(f"model returned {type(out).__name__}; the explainer needs a tensor")
        return out

    def _target_values(self, out: Tensor) -> Tensor:
        """The callable target's scores ``[m]`` of a chunk's output."""
        assert self._fn is not None
        values = self._fn(out)
        if not isinstance(values, Tensor) or values.shape != (out.shape[0],):
            raise InvalidArgumentError(f"target callable must return one scalar per sample [{out.shape[0]}]")
        return values

    def _scores_of(self, out: Tensor, owners: Tensor) -> Tensor:
        """Scores ``[k, m]`` of output rows ``out`` ``[m, ...]`` whose images are ``owners`` (0 on padding rows)."""
        if self._targets.ids is None:
            with torch.no_grad():
                values = out if out.ndim == 1 else self._target_values(out)
            return values.detach().float().unsqueeze(0)
        ids = self._targets.ids[:, owners.to(self._targets.ids.device)]  # [k, m]
        picked = out.detach().float().gather(1, ids.clamp(min=0).t()).t()
        return torch.where(ids >= 0, picked, torch.zeros_like(picked))

    def _seeds_of(self, out: Tensor, owners: Tensor) -> tuple[Tensor, Tensor]:
        """The tensor to differentiate for a chunk and its seeds ``[k, *that.shape]``."""
        if self._targets.ids is None:
            values = self._target_values(out)
            return values, torch.ones((1, *values.shape), dtype=values.dtype, device=values.device)
        ids = self._targets.ids[:, owners.to(self._targets.ids.device)]
        seeds = torch.zeros((ids.shape[0], *out.shape), dtype=out.dtype, device=out.device)
        seeds.scatter_(2, ids.clamp(min=0).unsqueeze(2), (ids >= 0).unsqueeze(2).to(out.dtype))
        return out, seeds


def smoothgrad_noise(image: Tensor, samples: int, noise: float, seed: int) -> Tensor:
    """SmoothGrad's noise for one image ``[C, H, W]``: ``[samples, C, H, W]`` Gaussian draws with standard
    deviation ``noise * (image.max() - image.min())`` (Smilkov et al.'s noise level), from a CPU generator seeded
    with ``seed`` (so the draws depend only on the seed and the image, on any device and in any batch)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    draws = torch.randn((samples, *image.shape), generator=generator, dtype=torch.float32)
    spread = float(image.max() - image.min()) * float(noise)
    return (draws * spread).to(device=image.device, dtype=image.dtype)
