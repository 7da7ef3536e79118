"""Activation maximisation: an input optimised by gradient ascent to maximise a class score or a channel.

What a class or a channel "looks for" is shown by the input that excites it most (Erhan et al. 2009; Simonyan et al.
2013; Olah et al., "Feature Visualization", 2017). Plain ascent produces high-frequency noise, so the usual
regularisers are applied: L2 decay of the image, random jitter (the gradient is taken on a randomly rolled copy),
and a Gaussian blur every few steps. Steps are normalised (``lr`` times the gradient over its mean |value|).

The ascent is **monotone**: a step is kept only if it does not lower the target score of the un-jittered image; a
step that would is retried with half the step size (up to three times), then, on a blur step, without the blur; a
step that still fails is dropped and the step size halved. So the returned score trace never decreases and the
image returned is the best one found. Work is bounded by a step budget and a wall-clock deadline checked before
every step; a seed makes the run reproducible. The result can seed a further run (``init``), so a long
optimisation is a chain of short, bounded requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from handlers.engine._hooks import capture_outputs, frozen_eval
from handlers.engine._layers import input_channels, resolve_layers
from handlers.engine._runner import module_device, module_dtype
from handlers.engine.errors import InvalidArgumentError

__all__ = ["Visualization", "VisualizeSpec", "visualize"]

_RETRIES = 3


def _positive_int(value: object, field: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise InvalidArgumentError(f"{field} must be an int >= {0 if zero else 1}, got {value!r}", field=field)
    return value


def _number(value: object, field: str, *, positive: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or float(value) < 0 or (positive and float(value) == 0):  # type: ignore[arg-type]
        raise InvalidArgumentError(
            f"{field} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}", field=field
        )
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class VisualizeSpec:
    """What to maximise and how.

    Attributes:
        target: A class id: maximise its logit. Exclusive with ``layer``.
        layer: A layer's dotted name: maximise the mean of ``channel`` of its output grid.
        channel: The channel of ``layer``.
        steps: The step budget (>= 1).
        lr: Step size of the normalised gradient, in input units (> 0).
        l2: L2 decay of the image per step (>= 0): the image is multiplied by ``1 - l2``.
        jitter: The gradient is taken on a copy rolled by up to this many pixels each way (>= 0).
        blur_every: Blur the image every this many steps (0 = never).
        blur_sigma: Standard deviation of that Gaussian blur, in pixels (> 0).
        seed: Seed of the initial noise and the jitter.
        deadline: Wall-clock budget in seconds (None = the step budget only).

    Raises:
        InvalidArgumentError: Naming the bad attribute.
    """

    target: int | None = None
    layer: str | None = None
    channel: int | None = None
    steps: int = 200
    lr: float = 0.05
    l2: float = 1e-3
    jitter: int = 2
    blur_every: int = 8
    blur_sigma: float = 0.5
    seed: int = 0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.layer is None):
            raise InvalidArgumentError("give either target (a class id) or layer + channel", field="target")
        if self.target is not None:
            _positive_int(self.target, "target", zero=True)
        else:
            if not isinstance(self.layer, str) or not self.layer:
                raise InvalidArgumentError(f"layer must be a layer name, got {self.layer!r}", field="layer")
            _positive_int(self.channel, "channel", zero=True)
        _positive_int(self.steps, "steps")
        _number(self.lr, "lr", positive=True)
        if _number(self.l2, "l2", positive=False) >= 1.0:
            raise InvalidArgumentError(f"l2 must be below 1, got {self.l2}", field="l2")
        _positive_int(self.jitter, "jitter", zero=True)
        _positive_int(self.blur_every, "blur_every", zero=True)
        _number(self.blur_sigma, "blur_sigma", positive=True)
        _positive_int(self.seed, "seed", zero=True)
        if self.deadline is not None:
            _number(self.deadline, "deadline", positive=True)


@dataclass(frozen=True, eq=False)
class Visualization:
    """The result of :func:`visualize`.

    Attributes:
        image: ``[C, H, W]`` float32 in the model's input space (normalised as the model expects), on the CPU.
        scores: The target score of the image before the first step and after every kept step (never decreasing).
        steps: Steps taken (kept or dropped).
        stopped: ``"steps"`` (the budget was used up) or ``"deadline"``.
        elapsed: Wall-clock seconds spent.
        logits: The model's output for the final image (``[K]``), for its predictions.
    """

    image: Tensor
    scores: tuple[float, ...]
    steps: int
    stopped: Literal["steps", "deadline"]
    elapsed: float
    logits: Tensor


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _score_fn(model: nn.Module, spec: VisualizeSpec) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``x -> (score [1], model output)`` for the spec's target."""
    if spec.target is not None:
        target = spec.target

        def class_score(x: Tensor) -> tuple[Tensor, Tensor]:
            out = model(x)
            if not isinstance(out, Tensor) or out.ndim != 2:
                raise InvalidArgumentError("class targets need [batch, classes] logits", field="target")
            if target >= out.shape[1]:
                raise InvalidArgumentError(f"target {target} is outside [0, {out.shape[1]})", field="target")
            return out[:, target].float(), out

        return class_score
    modules = resolve_layers(model, [str(spec.layer)])
    channel = int(spec.channel or 0)

    def channel_score(x: Tensor) -> tuple[Tensor, Tensor]:
        with capture_outputs(modules, as_leaf=False) as captured:
            out = model(x)
        if str(spec.layer) not in captured:
            raise InvalidArgumentError(f"layer {spec.layer!r} was not called during the forward pass", field="layer")
        a = captured[str(spec.layer)]
        if a.ndim != 4:
            raise InvalidArgumentError(
                f"layer {spec.layer!r} output {tuple(a.shape)} is not [B, C, h, w]", field="layer"
            )
        if channel >= a.shape[1]:
            raise InvalidArgumentError(f"channel {channel} is outside [0, {a.shape[1]})", field="channel")
        return a[:, channel].float().mean(dim=(1, 2)), out

    return channel_score


def visualize(
    model: nn.Module,
    spec: VisualizeSpec,
    input_size: tuple[int, int],
    *,
    bounds: tuple[Tensor, Tensor] | None = None,
    init: Tensor | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Visualization:
    """Optimise an input for ``spec``'s target (see the module docstring); the model is left exactly as found.

    Args:
        model: The classifier.
        spec: What to maximise and the budget.
        input_size: ``(H, W)`` of the image.
        bounds: Per-channel ``(low, high)`` of valid inputs ``[C]`` (pixels 0 and 1 after normalisation); the image
            is clamped to them after every step. None = unbounded.
        init: ``[C, H, W]`` starting image in input space (e.g. a previous result); None = seeded noise.
        clock: Seconds, for the deadline (tests pass a fake).

    Raises:
        InvalidArgumentError: A bad target, layer, channel, init or size.
        NotFoundError: An unknown layer.
    """
    if not isinstance(spec, VisualizeSpec):
        raise InvalidArgumentError("spec must be a VisualizeSpec", field="spec")
    start = clock()
    device, dtype = module_device(model), module_dtype(model, torch.float32)
    channels = input_channels(model)
    height, width = (int(v) for v in input_size)
    generator = torch.Generator().manual_seed(spec.seed)
    if init is None:
        x = (torch.randn(1, channels, height, width, generator=generator) * 0.1).to(device, dtype)
    else:
        if not isinstance(init, Tensor) or tuple(init.shape) != (channels, height, width):
            shape = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise InvalidArgumentError(f"init must be [{channels}, {height}, {width}], got {shape}", field="init")
        if not bool(torch.isfinite(init).all()):
            raise InvalidArgumentError("init contains NaN or infinite values", field="init")
        x = init.detach()[None].to(device, dtype).clone()
    low, high = (b.to(device, dtype).view(1, -1, 1, 1) for b in bounds) if bounds is not None else (None, None)
    score_of = _score_fn(model, spec)

    def clamp(t: Tensor) -> Tensor:
        return t if low is None or high is None else torch.maximum(torch.minimum(t, high), low)

    def evaluate(t: Tensor) -> float:
        with torch.no_grad():
            return float(score_of(t)[0][0])

    with frozen_eval(model), torch.inference_mode(False), torch.enable_grad():
        x = clamp(x)
        current = evaluate(x)
        scores = [current]
        lr = float(spec.lr)
        steps = 0
        stopped: Literal["steps", "deadline"] = "steps"
        while steps < spec.steps:
            if spec.deadline is not None and clock() - start >= spec.deadline:
                stopped = "deadline"
                break
            steps += 1
            dy, dx = (int(v) for v in torch.randint(-spec.jitter, spec.jitter + 1, (2,), generator=generator))
            leaf = x.detach().requires_grad_(True)
            score, _ = score_of(torch.roll(leaf, shifts=(dy, dx), dims=(2, 3)))
            (grad,) = torch.autograd.grad(score.sum(), leaf)
            direction = grad / grad.abs().mean().clamp(min=1e-12)
            blur = spec.blur_every > 0 and steps % spec.blur_every == 0
            with torch.no_grad():
                kept = False
                for attempt in range(_RETRIES + (2 if blur else 1)):
                    use_blur = blur and attempt <= _RETRIES
                    step = lr * 0.5 ** min(attempt, _RETRIES)
                    candidate = (x + step * direction) * (1.0 - spec.l2)
                    candidate = clamp(_blur(candidate, spec.blur_sigma) if use_blur else candidate)
                    value = evaluate(candidate)
                    if value >= current:
                        x, current, kept = candidate, value, True
                        lr = min(float(spec.lr), step * 1.5)  # grow back after a shortened step
                        break
                if kept:
                    scores.append(current)
                else:
                    lr *= 0.5
        with torch.no_grad():
            logits = score_of(x)[1]
    return Visualization(
        image=x[0].detach().to("cpu", torch.float32),
        scores=tuple(scores),
        steps=steps,
        stopped=stopped,
        elapsed=clock() - start,
        logits=logits[0].detach().to("cpu", torch.float32) if logits.ndim == 2 else logits.detach().cpu(),
    )
