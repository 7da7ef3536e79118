"""The :class:`VAEExplainer`: area maps for regions of a VAE's reconstruction, from one forward pass per batch.

The explained path is deterministic, ``x_hat = decode(mu(x))`` (a seeded sample ``decode(mu + sigma * eps)`` only
when asked). A region's score is ``sum(x_hat * mask)`` over all channels; its gradient says which input pixels the
region was rebuilt from. All regions of all images share the passes of one call: how their backward passes are
batched is the ``strategy`` (see :data:`Strategy`; ``benchmarks/vae_bench.py`` measures the three side by side).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal, TypeGuard

import torch
from torch import Tensor, nn

from handlers.engine._context import BatchContext
from handlers.engine._device import to_device
from handlers.engine._grid import layouts_of
from handlers.engine._hooks import capture_outputs
from handlers.engine._layers import resolve_layers
from handlers.engine._result import MapKey
from handlers.engine._runner import (
    GradFn,
    GradientRunner,
    gradient_rows,
    gradients,
    input_rules,
    plan_passes,
    run_passes,
)
from handlers.engine._vae._adapter import DecodeFn, EncodeFn, VAEAdapter, VAEProbe
from handlers.engine._vae._base import IMAGE_TARGET, LATENT_TOTAL, VAEMethod, VAENeed, get_vae_method, vae_methods
from handlers.engine._vae._regions import Region, RegionsArg, check_regions, parse_regions, region_masks
from handlers.engine._vae._result import VAEExplanation
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods import GradientRule

__all__ = ["STRATEGIES", "Strategy", "VAEExplainer"]

_OFF_PATH = "a requested layer does not influence mu or the reconstruction"

#: How the backward passes of ``R`` regions per image are batched:
#:
#: * ``"replicate"``: each image is repeated once per region, then one forward and one backward per gradient rule
#:   over the ``sum(R)`` rows, each row seeded with its own region's mask;
#: * ``"batched"``: one forward over the ``B`` images, then per rule ``torch.autograd.grad(...,
#:   is_grads_batched=True)`` (vmap over the backward) with the ``max(R)`` stacked seeds, in groups of at most
#:   ``max_rows`` (image, region) rows per call;
#: * ``"loop"``: one forward, then ``max(R)`` backward passes per rule, each over the whole batch (``batched`` with
#:   one region per call; the reference the others must match).
Strategy = Literal["replicate", "batched", "loop"]
STRATEGIES: tuple[Strategy, ...] = ("replicate", "batched", "loop")


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_strategy(v: object) -> TypeGuard[Strategy]:
    return v in STRATEGIES


class VAEExplainer(GradientRunner):
    """Area maps and latent attention for a VAE, from one forward pass per batch.

    The model is used as given (already on its device) and left exactly as found after every call, including calls
    that raise: its train/eval mode per module, its parameters' ``requires_grad`` flags, no hooks and no ``.grad``.

    Args:
        model: The VAE. With ``encode(x) -> (mu, logvar)`` and ``decode(z)`` methods (:class:`VAEModel`) it works as
            is; otherwise pass ``encode`` and ``decode``, which must only use ``model``'s parameters.
        encode: ``x -> (mu, logvar)``; default ``model.encode``.
        decode: ``z -> x_hat`` ``[B, C, H, W]``; default ``model.decode``.
        layers: Default encoder layer(s) for ``area_gradcam`` / ``latent_gradcam`` by dotted module name;
            ``None`` = the encoder's last spatial feature map (found by a probe pass).
        input_size: ``(H, W)`` for the probe that lists candidate layers.
        strategy: How region backward passes are batched (:data:`Strategy`); the default is the fastest measured on
            CPU for the shapes VAE (``benchmarks/vae_bench.py``).
        max_rows: ``batched`` only: at most this many (image, region) rows per vmapped backward call, so
            ``max(1, max_rows // B)`` regions share one call; ``None`` = all regions in one call. On a 2-core CPU,
            vmapped backward passes wider than ~8 rows were slower per row than narrower ones (cache), see the
            benchmark; on a GPU a larger value (or ``None``) fits better.
        amp: Run the encoder and decoder under ``torch.autocast`` (float16 on CUDA, bfloat16 on the CPU); maps and
            reconstructions are float32.
        channels_last: Copy the images to the device as ``torch.channels_last`` (pair it with a channels-last model).

    Raises:
        InvalidArgumentError: Bad arguments, or a model without encode/decode.
        NotFoundError: A layer name the model does not have.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        encode: EncodeFn | None = None,
        decode: DecodeFn | None = None,
        layers: str | Sequence[str] | None = None,
        input_size: tuple[int, int] = (64, 64),
        strategy: Strategy = "batched",
        max_rows: int | None = 8,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(model, default_dtype=torch.float32, amp=amp, channels_last=channels_last)
        self._adapter = VAEAdapter(model, encode, decode)
        if not _is_strategy(strategy):
            raise InvalidArgumentError(f"strategy must be one of {STRATEGIES}, got {strategy!r}", field="strategy")
        if max_rows is not None and (not _is_int(max_rows) or max_rows < 1):
            raise InvalidArgumentError(f"max_rows must be None or an int >= 1, got {max_rows!r}", field="max_rows")
        self._strategy: Strategy = strategy
        self._max_rows = max_rows
        size = tuple(input_size)
        if len(size) != 2 or not all(_is_int(s) and s > 0 for s in size):
            raise InvalidArgumentError(f"input_size must be (H, W) positive ints, got {input_size!r}")
        self._input_size = (int(size[0]), int(size[1]))
        self._layers = self._parse_layers(layers) if layers is not None else None
        if self._layers is not None and not self._layers:
            raise InvalidArgumentError("layers is empty; pass None for the automatic choice", field="layers")

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def strategy(self) -> Strategy:
        """How region backward passes are batched."""
        return self._strategy

    @property
    def max_rows(self) -> int | None:
        """``batched``: most (image, region) rows per vmapped backward call (``None`` = no limit)."""
        return self._max_rows

    @property
    def candidate_layers(self) -> tuple[str, ...]:
        """Encoder modules with a spatial output at ``input_size``, in completion order (runs the probe once)."""
        return self._adapter.probe(self._input_size).candidates

    @property
    def layer_grids(self) -> Mapping[str, tuple[int, int]]:
        """``(h, w)`` of every candidate layer's grid at ``input_size`` (runs the probe once)."""
        return self._adapter.probe(self._input_size).grids

    @property
    def default_layers(self) -> tuple[str, ...]:
        """The layers given to the constructor, or the automatic choice (empty if the encoder has none)."""
        if self._layers is not None:
            return self._layers
        automatic = self._adapter.probe(self._input_size).automatic
        return (automatic,) if automatic is not None else ()

    @property
    def methods(self) -> tuple[str, ...]:
        """Registered VAE methods usable with the default layers (layer methods need an encoder feature map)."""
        has_layer = bool(self.default_layers)
        return tuple(n for n in vae_methods() if has_layer or get_vae_method(n).scope == "input")

    def output_size(self, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """The reconstruction ``(H, W)`` for inputs of ``input_size`` (default: the constructor's); regions live in
        these coordinates. One probe pass per new size, cached."""
        return self._adapter.probe(input_size or self._input_size).output_size

    def latent_dims(self, input_size: tuple[int, int] | None = None) -> int:
        """Number of latent dimensions ``latent_gradcam`` can explain: channels of a spatial ``mu``, else its size."""
        return self._adapter.probe(input_size or self._input_size).latent_shape[0]

    # ----------------------------------------------------------------------------------------------- explain
    def explain(
        self,
        images: Tensor,
        methods: str | Sequence[str] = ("area_saliency",),
        regions: RegionsArg | None = None,
        layers: str | Sequence[str] | None = None,
        latents: Sequence[int] | None = None,
        sample_seed: int | None = None,
    ) -> list[VAEExplanation]:
        """Explain a batch: one :class:`VAEExplanation` per image, in order.

        Args:
            images: ``[B, C, H, W]`` float tensor in the model's input space; moved to the model's device if needed.
            methods: VAE method names (:func:`vae_methods`); empty = the reconstruction only.
            regions: One item per image: a region or a list of regions (ragged counts allowed). A region is a
                :class:`Box` / ``(x0, y0, x1, y1)`` (half-open, reconstruction pixels) or a :class:`Mask` / bool
                ``[H', W']`` tensor of the reconstruction. Required by the area methods; optional otherwise.
            layers: Encoder layer(s) for layer methods; ``None`` = :attr:`default_layers`; several = a sweep.
            latents: Latent dimensions for ``latent_gradcam`` (``None`` = all of them).
            sample_seed: ``None`` explains ``decode(mu)``; an int explains ``decode(mu + exp(logvar / 2) * eps)``
                with ``eps`` drawn on the CPU in float32 from ``torch.Generator().manual_seed(sample_seed)`` (the
                same draws on any device and dtype), one draw per image.

        Raises:
            InvalidArgumentError: Invalid images, methods, regions (the field names image, region and coordinate),
                latents, seed, or a layer that cannot be used.
            NotFoundError: Unknown layer name.
            ResourceExhaustedError: The device ran out of memory even for a single image.
        """
        x = self._check_images(images)
        chosen = self._check_methods(methods, get_vae_method)
        batch = int(x.shape[0])
        input_hw = (int(x.shape[2]), int(x.shape[3]))
        needs_regions = any(m.rows == "regions" for m in chosen)
        parsed = parse_regions(regions, batch) if needs_regions or regions is not None else ((),) * batch
        layer_scope = any(m.scope == "layer" for m in chosen)
        names: tuple[str, ...] = ()
        if layer_scope:
            names = self._parse_layers(layers) if layers is not None else self.default_layers
            if not names:
                if layers is not None:
                    raise InvalidArgumentError("layers is empty; pass None for the default layers", field="layers")
                raise InvalidArgumentError(
                    "the encoder has no layer with a spatial output; pass layers= explicitly", field="layers"
                )
        if sample_seed is not None and (not _is_int(sample_seed) or sample_seed < 0):
            raise InvalidArgumentError(f"sample_seed must be None or an int >= 0, got {sample_seed!r}", field="seed")
        probe = self._adapter.probe(input_hw)
        check_regions(parsed, probe.output_size)
        wanted = self._check_latents(latents, probe) if any(m.rows == "latents" for m in chosen) else ()
        # Drawn once for the whole call, so a batch split after running out of memory keeps every image's sample.
        noise = None
        if sample_seed is not None:
            noise = torch.randn((batch, *probe.latent_shape), generator=torch.Generator().manual_seed(sample_seed))
        return self._split_on_oom(
            lambda part: self._run(
                x[part], chosen, names, parsed[part], wanted, None if noise is None else noise[part]
            ),
            batch,
            "VAE batch",
        )

    # ----------------------------------------------------------------------------------------------- validation
    @staticmethod
    def _check_latents(latents: Sequence[int] | None, probe: VAEProbe) -> tuple[int, ...]:
        dims = probe.latent_shape[0]
        if latents is None:
            return tuple(range(dims))
        if isinstance(latents, (str, bytes)) or not isinstance(latents, Sequence):
            raise InvalidArgumentError(f"latents must be a list of ints, got {type(latents).__name__}", field="latents")
        if not latents:
            raise InvalidArgumentError("latents is empty; pass None for all latent dimensions", field="latents")
        for i, c in enumerate(latents):
            if not _is_int(c) or not 0 <= c < dims:
                raise InvalidArgumentError(
                    f"latents[{i}] = {c!r} is not a latent dimension in [0, {dims})", field=f"latents[{i}]"
                )
        if len(set(latents)) != len(latents):
            raise InvalidArgumentError(f"latents repeats a dimension: {list(latents)}", field="latents")
        return tuple(int(c) for c in latents)

    # ----------------------------------------------------------------------------------------------- running
    def _run(
        self,
        images: Tensor,
        methods: list[VAEMethod],
        layers: tuple[str, ...],
        regions: tuple[tuple[Region, ...], ...],
        latents: tuple[int, ...],
        noise: Tensor | None,
    ) -> list[VAEExplanation]:
        """One batch: forward with hooks, the needed backward passes, the methods, the per-image results."""
        needs: set[VAENeed] = set().union(*(m.needs for m in methods)) if methods else set()
        rules = input_rules(needs)
        region_grads = bool(rules) or "layer_grad" in needs
        batch = int(images.shape[0])
        input_hw = (int(images.shape[2]), int(images.shape[3]))
        counts = [len(r) for r in regions]
        replicate = self._strategy == "replicate" and region_grads
        device = images.device
        if replicate:
            rows = to_device(torch.repeat_interleave(torch.arange(batch), torch.tensor(counts)), device)
        else:
            rows = torch.arange(batch, device=device)
        # Row of each image's first copy (its reconstruction and activations), and each row's region slot.
        offsets = [sum(counts[:i]) for i in range(batch)] if replicate else list(range(batch))
        first = to_device(torch.tensor(offsets), device)
        modules = resolve_layers(self._model, layers) if layers else {}
        with self._batch_scope(images, region_grads or bool({"latent_grad", "kl_grad"} & needs)) as x:
            if replicate:
                x = x[rows]
            if rules:
                x.requires_grad_(True)
            with capture_outputs(modules, as_leaf=True) as captured, self._autocast():
                mu, logvar = self._adapter.encode(x)
            layouts = layouts_of(modules, captured, input_hw, not_run="is not run by the encoder")
            if noise is None:
                z = mu
            else:
                if tuple(noise.shape[1:]) != tuple(mu.shape[1:]):
                    raise InvalidArgumentError(
                        f"mu is {tuple(mu.shape[1:])} but the probe saw {tuple(noise.shape[1:])}"
                    )
                z = mu + torch.exp(0.5 * logvar) * to_device(noise, mu.device, dtype=mu.dtype)[rows]
            with self._autocast():
                recon = self._adapter.decode(z)
            latent_grads: Mapping[str, Tensor] = {}
            kl_grads: Mapping[str, Tensor] = {}
            passes = plan_passes(x, captured, layers, needs)
            if "kl_grad" in needs:
                grads = _kl_grads(mu, logvar, [captured[n] for n in layers], bool(passes) or "latent_grad" in needs)
                kl_grads = dict(zip(layers, grads, strict=True))
            if "latent_grad" in needs:
                grads = _latent_grads(mu, latents, [captured[n] for n in layers], retain=bool(passes))
                latent_grads = dict(zip(layers, grads, strict=True))
            layer_grads: Mapping[str, Tensor] = {}
            input_grads: Mapping[GradientRule, Tensor] = {}
            if passes:  # the region seeds are built only when a region gradient is asked for
                layer_grads, input_grads = run_passes(
                    passes, recon.grad_fn, self._region_grads(recon, regions, replicate)
                )
            with torch.no_grad():
                activations: Mapping[str, Tensor] = captured
                if replicate:  # every copy of an image has the same activations and latent gradients
                    activations = {name: captured[name][first] for name in layers}
                    latent_grads = {name: g[:, first] for name, g in latent_grads.items()}
                    kl_grads = {name: g[:, first] for name, g in kl_grads.items()}
                reconstructions = recon.detach()[first].float()
                ctx = BatchContext(
                    input_hw,
                    activations,
                    layouts,
                    layer_grads,
                    input_grads,
                    latents=latents,
                    latent_grads=latent_grads,
                    images=x.detach()[first],
                    reconstruction=reconstructions,
                    kl_grads=kl_grads,
                )
                results = ctx.maps(methods, layers)
        return self._assemble(methods, results, regions, latents, reconstructions, input_hw)

    def _region_grads(self, recon: Tensor, regions: tuple[tuple[Region, ...], ...], replicate: bool) -> GradFn:
        """Gradients of every region score, ``[k, B, ...]`` (region slot, image; zeros past an image's last region).

        ``replicate``: one row per (image, region) copy, each seeded with its own mask, in one plain backward;
        otherwise ``k = max(R)`` stacked seeds over the images, vmapped in groups of :meth:`_group_size` slots.
        """
        counts = [len(r) for r in regions]
        batch = len(counts)
        size = (int(recon.shape[2]), int(recon.shape[3]))
        masks = [region_masks(r, size, dtype=recon.dtype, device=recon.device) for r in regions]
        k = max(counts)
        if replicate:
            rows = torch.cat(masks).expand(-1, recon.shape[1], -1, -1)

            def replicated(inputs: list[Tensor], retain: bool) -> list[Tensor]:
                return [_unreplicate(g, counts, k) for g in gradients(recon, inputs, rows, retain, _OFF_PATH)]

            return replicated
        seeds = torch.zeros((k, batch, *recon.shape[1:]), dtype=recon.dtype, device=recon.device)
        for b, m in enumerate(masks):
            seeds[: counts[b], b] = m
        group = self._group_size(k, batch)

        def grouped(inputs: list[Tensor], retain: bool) -> list[Tensor]:
            parts = [
                gradient_rows(recon, inputs, seeds[start : start + group], retain or start + group < k, _OFF_PATH)
                for start in range(0, k, group)
            ]
            return [torch.cat(gs) for gs in zip(*parts, strict=True)]

        return grouped

    def _group_size(self, k: int, batch: int) -> int:
        """Region slots per backward call: ``loop`` 1; ``batched`` as many as keep ``slots * batch <= max_rows``."""
        if self._strategy == "loop":
            return 1
        if self._max_rows is None:
            return k
        return max(1, min(k, self._max_rows // batch))

    @staticmethod
    def _assemble(
        methods: list[VAEMethod],
        results: Mapping[tuple[str, str], Tensor],
        regions: tuple[tuple[Region, ...], ...],
        latents: tuple[int, ...],
        reconstructions: Tensor,
        input_hw: tuple[int, int],
    ) -> list[VAEExplanation]:
        kinds = {m.name: m.rows for m in methods}
        out: list[VAEExplanation] = []
        for i, per_image in enumerate(regions):
            maps: dict[MapKey, Tensor] = {}
            for (method, layer), r in results.items():
                if kinds[method] == "regions":
                    maps.update((MapKey(method, layer, j), r[j, i]) for j in range(len(per_image)))
                elif kinds[method] == "image":
                    maps[MapKey(method, layer, IMAGE_TARGET)] = r[0, i]
                else:
                    maps.update((MapKey(method, layer, c), r[row, i]) for row, c in enumerate(latents))
                    maps[MapKey(method, layer, LATENT_TOTAL)] = r[-1, i]
            out.append(
                VAEExplanation(
                    predictions=(),
                    targets=tuple(range(len(per_image))),
                    maps=MappingProxyType(maps),
                    input_size=input_hw,
                    reconstruction=reconstructions[i],
                    regions=per_image,
                    latents=latents if "latents" in kinds.values() else (),
                )
            )
        return out


def _unreplicate(g: Tensor, counts: list[int], k: int) -> Tensor:
    """Rows ``[sum(R), ...]`` of a replicated batch -> ``[k, B, ...]`` (region slot, image), zeros past ``R_b``."""
    out = g.new_zeros((k, len(counts), *g.shape[1:]))
    start = 0
    for b, n in enumerate(counts):
        out[:n, b] = g[start : start + n]
        start += n
    return out


def _kl_grads(mu: Tensor, logvar: Tensor, layers: list[Tensor], retain: bool) -> list[Tensor]:
    """``d KL(q(z|x) || N(0, I)) / d layer`` for each image's own KL term, ``[1, B, ...]`` per layer, one call."""
    m, lv = mu.float(), logvar.float()
    kl = 0.5 * (m.square() + lv.exp() - lv - 1).flatten(1).sum(dim=1)  # [B]; image b's term depends on image b only
    return gradient_rows(kl, layers, torch.ones((1, *kl.shape), dtype=kl.dtype, device=kl.device), retain, _OFF_PATH)


def _latent_grads(mu: Tensor, latents: tuple[int, ...], layers: list[Tensor], retain: bool) -> list[Tensor]:
    """Per explained latent ``c``: ``d sum_positions(mu[:, c]) / d layer``, ``[L, B, ...]`` per layer, one call."""
    seeds = torch.zeros((len(latents), *mu.shape), dtype=mu.dtype, device=mu.device)
    for row, c in enumerate(latents):
        seeds[row, :, c] = 1
    return gradient_rows(mu, layers, seeds, retain, _OFF_PATH)
