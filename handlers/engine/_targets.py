"""Targets: what score each explanation explains, validated up front, as in pytorch-grad-cam's model_targets.

A request names targets per image (top-1, top-k, class ids, ragged lists) or gives one callable that maps the
model output to one scalar per sample. Either way the engine differentiates one output tensor ``Y`` with a stack of
``k`` gradient seeds ``[k, *Y.shape]`` (one-hot rows for classes, zero rows where an image has fewer targets), so
all targets share one batched backward instead of a Python loop.

Top-k targets stay on the device: the class ids are the logits' top-k indices, seeded without reading them on the
host, so the backward passes are queued right behind the forward; :meth:`ResolvedTargets.per_image` reads them
once, after the maps (the engine's one device-to-host read per batch besides the predictions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import Tensor

from handlers.engine._device import to_device
from handlers.engine._result import CUSTOM_TARGET
from handlers.engine.errors import InternalError, InvalidArgumentError

__all__ = ["ResolvedTargets", "TargetFn", "TargetSpec", "TargetsArg", "TopKArg", "parse_targets"]

TargetFn = Callable[[Tensor], Tensor]
TargetsArg = int | Sequence[int | Sequence[int]] | TargetFn | None
TopKArg = int | Sequence[int] | None


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class TargetSpec:
    """Validated targets for a batch, before the forward pass (top-k needs the logits to become class ids).

    Exactly one of ``top_k`` (per image), ``classes`` (per image) and ``fn`` is set.
    """

    top_k: tuple[int, ...] | None = None
    classes: tuple[tuple[int, ...], ...] | None = None
    fn: TargetFn | None = None

    def slice(self, start: int, stop: int) -> TargetSpec:
        """The spec for images ``start:stop`` (used when a batch is split after running out of memory)."""
        return TargetSpec(
            top_k=None if self.top_k is None else self.top_k[start:stop],
            classes=None if self.classes is None else self.classes[start:stop],
            fn=self.fn,
        )


@dataclass(frozen=True)
class ResolvedTargets:
    """Targets after the forward pass.

    Attributes:
        known: The target ids of each image when the host knows them (class ids, a callable), ``None`` for top-k.
        ids: ``[k, B]`` long tensor of class ids on the output's device, ``-1`` padding (class targets only, else
            ``None``).
        output: The tensor to differentiate: logits ``[B, K]``, or the callable's scores ``[B]``.
        seeds: ``[k, *output.shape]`` gradient seeds, one backward per row.
        counts: The number of targets of each image.
    """

    known: tuple[tuple[int, ...], ...] | None
    ids: Tensor | None
    output: Tensor
    seeds: Tensor
    counts: tuple[int, ...]

    def per_image(self) -> tuple[tuple[int, ...], ...]:
        """The target ids of each image, in request order (``CUSTOM_TARGET`` for a callable).

        For top-k targets this reads the ids from the device (a host synchronisation): call it after the passes.
        """
        if self.known is not None:
            return self.known
        if self.ids is None:
            raise InternalError("resolved targets have neither host ids nor a device table")
        columns = self.ids.t().tolist()
        return tuple(tuple(col[:n]) for col, n in zip(columns, self.counts, strict=True))

    @property
    def k(self) -> int:
        """Number of gradient seeds (the largest number of targets of any image)."""
        return int(self.seeds.shape[0])


def parse_targets(targets: TargetsArg, top_k: TopKArg, batch: int) -> TargetSpec:
    """Validate the ``targets`` / ``top_k`` arguments of :meth:`Explainer.explain` for a batch of ``batch`` images.

    Raises:
        InvalidArgumentError: Malformed targets, both given, wrong lengths, empty or duplicate lists, bad top_k.
    """
    if targets is not None and top_k is not None:
        raise InvalidArgumentError("give either targets or top_k, not both", field="targets")
    if top_k is not None:
        ks = [top_k] * batch if _is_int(top_k) else top_k
        if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not all(_is_int(k) for k in ks):
            raise InvalidArgumentError("top_k must be an int or a list of ints, one per image", field="top_k")
        if len(ks) != batch:
            raise InvalidArgumentError(f"top_k has {len(ks)} entries for {batch} images", field="top_k")
        if any(int(k) < 1 for k in ks):
            raise InvalidArgumentError(f"top_k must be >= 1, got {list(ks)}", field="top_k")
        return TargetSpec(top_k=tuple(int(k) for k in ks))
    if targets is None:
        return TargetSpec(top_k=(1,) * batch)
    if _is_int(targets):
        return TargetSpec(classes=((int(targets),),) * batch)
    if callable(targets):
        return TargetSpec(fn=targets)
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise InvalidArgumentError(
            f"targets must be None, an int, a list (one item per image) or a callable, got {type(targets).__name__}",
            field="targets",
        )
    if len(targets) != batch:
        raise InvalidArgumentError(
            f"{len(targets)} targets for {batch} images; give one item per image", field="targets"
        )
    per_image: list[tuple[int, ...]] = []
    for i, item in enumerate(targets):
        ids = [item] if _is_int(item) else item
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not all(_is_int(c) for c in ids):
            raise InvalidArgumentError(f"targets[{i}] must be an int or a list of ints, got {item!r}", field="targets")
        if not ids:
            raise InvalidArgumentError(f"targets[{i}] is empty", field="targets")
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError(f"targets[{i}] repeats a class: {list(ids)}", field="targets")
        per_image.append(tuple(int(c) for c in ids))
    return TargetSpec(classes=tuple(per_image))


def resolve_targets(spec: TargetSpec, output: Tensor, *, differentiate: bool = True) -> ResolvedTargets:
    """Turn a spec into gradient seeds for this batch's model output.

    Args:
        spec: The validated request targets.
        output: The model output of this batch.
        differentiate: Whether a backward pass follows (then a callable's scores must depend on the output).

    Raises:
        InvalidArgumentError: Class id or top_k out of range for the model's number of classes, or a callable
            that does not return one differentiable scalar per sample.
    """
    batch = output.shape[0]
    if spec.fn is not None:
        scores = spec.fn(output)
        if not isinstance(scores, Tensor) or scores.shape != (batch,):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise InvalidArgumentError(f"target callable must return one scalar per sample [{batch}], got {shape}")
        if differentiate and not scores.requires_grad:
            raise InvalidArgumentError("target callable returned a tensor that does not depend on the model output")
        seeds = torch.ones((1, batch), dtype=scores.dtype, device=scores.device)
        return ResolvedTargets(((CUSTOM_TARGET,),) * batch, None, scores, seeds, (1,) * batch)

    if output.ndim != 2:
        raise InvalidArgumentError(
            f"class targets need [batch, classes] logits, the model returned {tuple(output.shape)}; use a callable"
        )
    n_classes = output.shape[1]
    known: tuple[tuple[int, ...], ...] | None = None
    if spec.top_k is not None:
        k = max(spec.top_k)
        if k > n_classes:
            raise InvalidArgumentError(f"top_k {k} exceeds the {n_classes} classes", field="top_k")
        table = output.detach().topk(k, dim=1).indices.t()
        if min(spec.top_k) < k:  # ragged: pad the slots past each image's own k with -1
            past = torch.arange(k).unsqueeze(1) >= torch.tensor(spec.top_k).unsqueeze(0)
            table = table.masked_fill(to_device(past, output.device), -1)
        counts = spec.top_k
    else:
        if spec.classes is None:
            raise InternalError("target spec has neither top_k, classes nor a callable")
        known = spec.classes
        for i, ids in enumerate(known):
            bad = [c for c in ids if not 0 <= c < n_classes]
            if bad:
                raise InvalidArgumentError(
                    f"targets[{i}] has class ids {bad} outside [0, {n_classes})", field="targets"
                )
        counts = tuple(len(ids) for ids in known)
        k = max(counts)
        host = torch.full((k, batch), -1, dtype=torch.long)
        for i, ids in enumerate(known):
            host[: len(ids), i] = torch.tensor(ids, dtype=torch.long)
        table = to_device(host, output.device)
    seeds = torch.zeros((k, *output.shape), dtype=output.dtype, device=output.device)
    valid = table >= 0
    seeds.scatter_(2, table.clamp(min=0).unsqueeze(2), valid.unsqueeze(2).to(output.dtype))
    return ResolvedTargets(known, table, output, seeds, counts)
