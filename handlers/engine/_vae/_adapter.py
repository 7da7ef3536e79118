"""The VAE adapter: how the engine calls a model's encoder and decoder, and what one probe pass learns about them.

Any ``nn.Module`` with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> x_hat`` works as is (:class:`VAEModel`);
other layouts pass the two callables explicitly. The module itself is still needed: it owns the parameters that are
frozen during a call, the train/eval mode that is restored after it, and the dotted names of the encoder layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor, nn

from handlers.engine._grid import detect_layout
from handlers.engine._hooks import capture_outputs, frozen_eval
from handlers.engine._layers import input_channels
from handlers.engine._runner import module_device, module_dtype
from handlers.engine.errors import InvalidArgumentError

__all__ = ["DecodeFn", "EncodeFn", "VAEAdapter", "VAEModel", "VAEProbe"]

EncodeFn: TypeAlias = Callable[[Tensor], tuple[Tensor, Tensor]]
DecodeFn: TypeAlias = Callable[[Tensor], Tensor]


@runtime_checkable
class VAEModel(Protocol):
    """A VAE as the engine sees it: a Gaussian encoder and a decoder (e.g. ``model_store``'s ``ShapesVAE``)."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mu, logvar)`` of the approximate posterior, each ``[B, ...]``."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Return the reconstruction ``[B, C, H, W]`` for latents ``z`` shaped like ``mu``."""
        ...


@dataclass(frozen=True)
class VAEProbe:
    """What one probe pass at a given input size learned.

    Attributes:
        output_size: The reconstruction ``(H, W)``.
        latent_shape: Per-sample shape of ``mu`` (``(C, h, w)`` for a spatial latent, ``(D,)`` for a vector).
        candidates: Modules run by ``encode`` whose output reads as a spatial grid and feeds ``mu``, in completion
            order (a separate ``logvar`` head is not a candidate: neither ``mu`` nor the reconstruction depends on it).
        grids: ``(h, w)`` of each candidate's grid.
        automatic: The last candidate that is not ``mu``/``logvar`` itself (the encoder's last feature map).
    """

    output_size: tuple[int, int]
    latent_shape: tuple[int, ...]
    candidates: tuple[str, ...]
    grids: Mapping[str, tuple[int, int]]
    automatic: str | None


class VAEAdapter:
    """Calls into a VAE and validates what comes back.

    Args:
        module: The model (owner of parameters, modes and layer names).
        encode: ``x -> (mu, logvar)``; default ``module.encode``.
        decode: ``z -> x_hat``; default ``module.decode``.

    Raises:
        InvalidArgumentError: ``module`` is not an ``nn.Module``, or has no ``encode``/``decode`` and none were given.
    """

    def __init__(self, module: nn.Module, encode: EncodeFn | None = None, decode: DecodeFn | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(module).__name__}")
        enc = encode if encode is not None else getattr(module, "encode", None)
        dec = decode if decode is not None else getattr(module, "decode", None)
        if not callable(enc) or not callable(dec):
            missing = [n for n, f in (("encode", enc), ("decode", dec)) if not callable(f)]
            raise InvalidArgumentError(
                f"{type(module).__name__} has no callable {' or '.join(missing)}; pass encode=/decode= explicitly"
            )
        self.module = module
        self._encode: EncodeFn = enc
        self._decode: DecodeFn = dec
        self.in_channels = input_channels(module)
        self._probes: dict[tuple[int, int], VAEProbe] = {}

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of ``x``, checked: two float tensors of the same shape, one row per input row."""
        out = self._encode(x)
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
            raise InvalidArgumentError(f"encode must return (mu, logvar) tensors, got {type(out).__name__}")
        mu, logvar = out
        if mu.shape != logvar.shape or mu.ndim < 2 or mu.shape[0] != x.shape[0] or not mu.is_floating_point():
            raise InvalidArgumentError(
                f"encode returned mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} for {x.shape[0]} images; "
                "both must be float [B, ...] of the same shape"
            )
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """The reconstruction of ``z``, checked: a float ``[B, C, H, W]`` tensor."""
        out = self._decode(z)
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != z.shape[0] or not out.is_floating_point():
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise InvalidArgumentError(f"decode must return a float [B, C, H, W] reconstruction, got {shape}")
        return out

    @property
    def device(self) -> torch.device:
        """Where the model's parameters (or buffers) live."""
        return module_device(self.module)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's parameters (float32 if it has none)."""
        return module_dtype(self.module, torch.float32)

    def probe(self, input_size: tuple[int, int]) -> VAEProbe:
        """Run (once per size, cached) one no-grad pass on a seeded random input to learn sizes and layers.

        The model is left as found; the global RNG is not touched.
        """
        if input_size in self._probes:
            return self._probes[input_size]
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(1, self.in_channels, *input_size, generator=generator).to(self.device, self.dtype)
        named = {name: m for name, m in self.module.named_modules() if name}
        order: list[tuple[str, Tensor]] = []
        handles = []
        with frozen_eval(self.module), torch.inference_mode(False), torch.no_grad():
            try:
                for name, m in named.items():

                    def note(_m: nn.Module, _a: object, out: object, name: str = name) -> None:
                        if isinstance(out, Tensor):
                            order.append((name, out))

                    handles.append(m.register_forward_hook(note))
                mu, logvar = self.encode(x)
            finally:
                for h in handles:
                    h.remove()
            recon = self.decode(mu)
        # A module called twice counts at its last call; candidates keep completion order.
        last: dict[str, Tensor] = {}
        for name, out in order:
            last.pop(name, None)
            last[name] = out
        heads = {t.untyped_storage().data_ptr() for t in (mu, logvar)}
        layouts = {n: detect_layout(tuple(out.shape[1:]), input_size) for n, out in last.items()}
        spatial = {n: (layout.height, layout.width) for n, layout in layouts.items() if layout is not None}
        reach = self._reaching_mu(x, {n: named[n] for n in spatial})
        candidates = [n for n in spatial if n in reach]
        features = [n for n in candidates if last[n].untyped_storage().data_ptr() not in heads]
        result = VAEProbe(
            output_size=(int(recon.shape[2]), int(recon.shape[3])),
            latent_shape=tuple(int(s) for s in mu.shape[1:]),
            candidates=tuple(candidates),
            grids={n: spatial[n] for n in candidates},
            automatic=features[-1] if features else None,
        )
        self._probes[input_size] = result
        return result

    def _reaching_mu(self, x: Tensor, modules: dict[str, nn.Module]) -> set[str]:
        """Names of ``modules`` whose output ``mu`` depends on (e.g. not a separate ``logvar`` head)."""
        if not modules:
            return set()
        with frozen_eval(self.module), torch.inference_mode(False), torch.enable_grad():
            with capture_outputs(modules, as_leaf=False) as captured:
                mu, _ = self.encode(x.clone().requires_grad_(True))
            names = [n for n in modules if n in captured and captured[n].requires_grad]
            grads = torch.autograd.grad(mu.sum(), [captured[n] for n in names], allow_unused=True)
        return {n for n, g in zip(names, grads, strict=True) if g is not None}
