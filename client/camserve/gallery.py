"""The HTML gallery: one ``index.html`` with PNGs a person can open, for many images and their explanations.

Per image, the original (the model's crop outlined), the model's input and the VAE reconstruction; then a table
of maps: methods x layers per explained class (classifiers), or methods x regions with each region drawn (VAEs;
maps of the whole image, such as the anomaly maps at target -1, get a "whole image" column);
then, when the call asked for them, the feature maps (one row of channels per layer, each at its native grid) and
the consistency check (each map beside its flipped / shifted / rotated copies mapped back, with their agreement).
The pictures are :mod:`camserve.render`'s; this module lays them out and writes the page.

::

    from camserve import gallery

    entries = (gallery.Entry(path.name, path, result) for path, result in zip(paths, results))
    gallery.write(entries, "out")  # out/index.html
    gallery.write_filters(client.filters("shapes-classifier", layers=["stem.0", "layer2.conv1"]), "out/filters")
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from camserve import render
from camserve._files import slug
from camserve._filters import Filter, Filters
from camserve._images import load_rgb
from camserve._maps import Map, MapKey
from camserve._results import ExplainResult
from camserve._visualize import Visualization
from camserve.errors import CamserveError, InvalidArgument

__all__ = ["Entry", "write", "write_filters", "write_visualizations"]


@dataclass(frozen=True)
class Entry:
    """One image for :func:`write`.

    Attributes:
        name: A title (e.g. the file name).
        image: The image as sent (path, bytes, PIL image or array).
        result: Its :class:`~camserve.ExplainResult`.
        regions: VAE boxes ``(x0, y0, x1, y1)`` in model-input pixels, in request order (map target = index).
    """

    name: str
    image: object
    result: ExplainResult
    regions: Sequence[tuple[int, int, int, int]] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Style:
    """How every picture of one gallery is drawn (see :func:`write`)."""

    cmap: str
    alpha: float
    size: int
    gradients: render.GradientDisplay

    def check(self) -> None:
        """Raises :class:`~camserve.errors.InvalidArgument` for a style the pictures cannot use."""
        render.check_style(cmap=self.cmap, alpha=self.alpha, gradients=self.gradients)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise InvalidArgument(f"size must be a positive number of pixels, got {self.size!r}", field="size")

    def picture(
        self, entry: Entry, m: Map, *, on_original: bool = True, boxes: Sequence[tuple[int, int, int, int]] = ()
    ) -> Image.Image:
        """One map of ``entry``, drawn by :func:`camserve.render.render_map` in this style."""
        return render.render_map(
            entry.image,
            m,
            geometry=entry.result.geometry,
            on_original=on_original,
            cmap=self.cmap,
            alpha=self.alpha,
            size=self.size,
            boxes=boxes,
            gradients=self.gradients,
        )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #f6f6f6; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin: 0 0 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 14px 18px; margin: 18px 0; }
.legend { font-size: 13px; color: #555; } .legend img { display: inline-block; vertical-align: middle; margin: 0 6px; }
.preds { color: #444; font-size: 14px; margin: 0 0 10px; }
.row { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; text-align: center; } figcaption { font-size: 12px; color: #555; margin-top: 3px; }
table { border-collapse: collapse; } td { padding: 4px; vertical-align: top; }
th { font-size: 12px; font-weight: 600; color: #333; padding: 4px 8px; } th.rowhead { text-align: right; }
img { display: block; border-radius: 3px; }
.error { color: #b00020; font-weight: 600; } .meta { color: #777; font-size: 12px; margin-top: 8px; }
"""

_LEGEND = "Overlays and heat maps: {bar} low → high (each map scaled to its own range)."
_LEGEND_GRADIENTS = (
    " Gradient images (3-channel input gradients): grey is zero, brighter/darker is positive/negative per colour "
    "channel."
)


def _page(root: Path, title: str, body: str) -> Path:
    """Writes ``root/index.html`` atomically (a reader never sees a half-written page)."""
    index = root / "index.html"
    partial = root / ".index.html.part"
    partial.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}</body></html>\n",
        encoding="utf-8",
    )
    partial.replace(index)
    return index


def write_filters(
    result: Filters, out_dir: str | Path, *, title: str = "", cmap: str = "inferno", size: int = 48
) -> Path:
    """Writes a page of a model's convolution kernels (``client.filters``): ``out_dir/index.html`` + PNGs.

    RGB kernels (a first layer) are shown as they are: grey is a zero weight, each kernel scaled to its own largest
    |weight|. Deeper kernels are shown per output channel as their spatial profile ``||w[o, :, y, x]||`` (one
    colour scale for the whole layer, so strong and weak channels compare), with the layer's connection matrix
    ``||w[o, i]||`` (output channels down, input channels across). Pixels are blocks: a 3x3 kernel is 3x3.

    Raises:
        InvalidArgument: An unknown ``cmap`` or a bad ``size`` (the tile's longer side in pixels).
    """
    render.check_style(cmap=cmap)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidArgument(f"size must be a positive number of pixels, got {size!r}", field="size")
    root = Path(out_dir)
    folder = root / "filters"
    folder.mkdir(parents=True, exist_ok=True)
    page = _Page(folder, root)
    sections = [
        f"<p class='legend'>{len(result.conv_layers)} convolutions in {html.escape(result.model_name)}; "
        f"shown: {html.escape(', '.join(f.layer for f in result.filters))}.</p>"
    ]
    sections += [_filter_section(f, page, cmap, size) for f in result.filters]
    return _page(root, title or f"{result.model_name}: filters", "\n".join(sections))


def write_visualizations(
    items: Sequence[tuple[str, Visualization]], out_dir: str | Path, *, title: str = "activation maximisation"
) -> Path:
    """A page of ``client.visualize`` results, one ``(name, visualization)`` each: ``out_dir/index.html``."""
    from camserve._visualize_page import write_visualizations as write  # it builds on this module's layout

    return write(items, out_dir, title=title)


def _blocks(picture: np.ndarray, size: int) -> Image.Image:
    """An ``H x W x 3`` uint8 array scaled up by a whole factor so its longer side is about ``size``."""
    h, w = picture.shape[:2]
    scale = max(1, size // max(h, w))
    return Image.fromarray(picture).resize((w * scale, h * scale), Image.Resampling.NEAREST)


def _filter_section(f: Filter, page: _Page, cmap: str, size: int) -> str:
    kh, kw = f.kernel_size
    shape = f"{f.out_channels} kernels of {f.in_channels}x{kh}x{kw}" + (f", {f.groups} groups" if f.groups > 1 else "")
    cells = []
    if f.rgb:
        pictures = list(f.tile_images())
    else:
        peak = float(f.tiles.max()) or 1.0
        pictures = [render.colorize(t / peak, cmap, normalize=False) for t in f.tiles]
    for i, picture in enumerate(pictures):
        caption = f"c{i} · |w| {float(f.norms[i]):.2g}"
        cells.append(page.figure(_blocks(picture, size), f"{f.layer}_c{i}", caption))
    what = "kernels as RGB (grey = 0)" if f.rgb else "spatial profile per output channel"
    out = [f"<section><h2>{html.escape(f.layer)}</h2><p class='preds'>{html.escape(shape)}; {what}</p>"]
    out.append(f"<div class='row'>{''.join(cells)}</div>")
    if not f.rgb and f.in_channels > 1:
        matrix = render.colorize(f.connections, cmap)
        caption = f"connections: {len(pictures)} output channels x {f.in_channels} inputs"
        figure = page.figure(_blocks(matrix, 4 * size), f"{f.layer}_connections", caption)
        out.append(f"<h3>connections</h3><div class='row'>{figure}</div>")
    out.append("</section>")
    return "\n".join(out)


def write(
    entries: Iterable[Entry],
    out_dir: str | Path,
    *,
    title: str = "camserve explanations",
    cmap: str = "inferno",
    alpha: float = 0.8,
    size: int = 224,
    gradients: render.GradientDisplay = "heat",
) -> Path:
    """Writes an HTML page with PNGs a person can open: ``out_dir/index.html`` and ``out_dir/gallery/...``.

    Per image: the original (the model's crop outlined), the model's input (VAE regions drawn) and the
    reconstruction (VAEs); then, for classifiers, one table per explained class with methods as rows and layers
    as columns ("input" for input-level methods), maps overlaid on the whole original; for VAEs, one table of
    methods x regions on the model's input, each region outlined. Images that failed show their error.

    ``entries`` may be a generator (e.g. over ``explain_many``): each entry is rendered and written as it comes,
    so memory does not grow with the number of images.

    Args:
        entries: The images and their results.
        out_dir: Folder to write into (created; earlier gallery files are overwritten).
        title: Page title.
        cmap: Colormap of overlays and heat maps.
        alpha: Overlay weight at a map's maximum.
        size: Longer side of every picture in pixels (small model inputs are scaled up to it).
        gradients: How 3-channel input-gradient maps are drawn: ``"heat"`` (``|g|``) or ``"gradient"`` (signed
            RGB); see :func:`camserve.render.display_kind`.

    Returns:
        The path of ``index.html``.

    Raises:
        InvalidArgument: A style argument the pictures cannot use (checked before anything is written).
    """
    style = _Style(cmap, alpha, size, gradients)
    style.check()
    root = Path(out_dir)
    assets = root / "gallery"
    assets.mkdir(parents=True, exist_ok=True)
    render.colorbar(cmap).save(assets / "colorbar.png")
    bar = "<img src='gallery/colorbar.png' width='256' height='12' alt='colormap, low to high'>"
    legend = _LEGEND.format(bar=bar) + (_LEGEND_GRADIENTS if gradients == "gradient" else "")
    index = root / "index.html"
    partial = root / ".index.html.part"
    with partial.open("w", encoding="utf-8") as page_file:
        page_file.write(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class='legend'>{legend}</p>\n"
        )
        for n, entry in enumerate(entries):
            folder = assets / slug(f"{n:03d}_{Path(entry.name).stem if entry.name else 'image'}")
            folder.mkdir(exist_ok=True)
            page_file.write(_entry_html(entry, _Page(folder, root), style) + "\n")
        page_file.write("</body></html>\n")
    partial.replace(index)  # a reader never sees a half-written page
    return index


class _Page:
    """Saves one entry's pictures under unique file names and returns their HTML figures."""

    def __init__(self, folder: Path, root: Path) -> None:
        self.folder = folder
        self.root = root
        self.names: set[str] = set()

    def figure(self, image: Image.Image, name: str, caption: str) -> str:
        stem = slug(name)
        while stem in self.names:
            stem += "_"
        self.names.add(stem)
        path = self.folder / f"{stem}.png"
        image.save(path, format="PNG", optimize=True)
        src = html.escape(path.relative_to(self.root).as_posix())
        alt = html.escape(caption)
        return (
            f"<figure><img src='{src}' width='{image.width}' height='{image.height}' alt='{alt}'>"
            f"<figcaption>{alt}</figcaption></figure>"
        )


def _caption(m: Map) -> str:
    text = f"{m.method} · {'x'.join(str(d) for d in m.shape)}"
    if m.completeness_error is not None:  # Integrated Gradients: how far the map is from summing to the score gap
        text += f" · completeness error {m.completeness_error:.3g}"
    return text


def _entry_html(entry: Entry, page: _Page, style: _Style) -> str:
    result, g = entry.result, entry.result.geometry
    out = [f"<section><h2>{html.escape(entry.name)}</h2>"]
    if result.error is not None:
        e = result.error
        where = f" (field {e.field})" if e.field else ""
        try:  # the image may be what failed: show it only if it can be read
            shown = render.model_view(entry.image, None, size=style.size)
            out.append(f"<div class='row'>{page.figure(shown, 'original', 'original')}</div>")
        except CamserveError:
            pass
        out.append(f"<p class='error'>{html.escape(f'{type(e).__name__}: {e.message}{where}')}</p></section>")
        return "\n".join(out)
    original = load_rgb(entry.image)
    shown = render.model_view(original, None, size=style.size)
    if result.predictions:
        top = ", ".join(f"{html.escape(p.label or str(p.class_id))} {p.score:.3f}" for p in result.predictions[:3])
        out.append(f"<p class='preds'>top predictions: {top}</p>")
    row = []
    if g is None or g.crop.as_tuple() == (0, 0, g.original_size[1], g.original_size[0]):
        row.append(page.figure(shown, "original", "original"))
    else:
        crop = [g.crop.as_tuple()]
        outlined = render.draw_boxes(shown, crop, scale=shown.width / original.width, color=(255, 255, 255))
        row.append(page.figure(outlined, "original", "original, model's crop outlined"))
    vae = bool(entry.regions) or result.reconstruction is not None or not result.predictions
    view = render.model_view(entry.image, g, size=style.size)
    in_w = g.input_size[1] if g is not None and g.input_size[1] else view.width
    labels = [f"R{i}" for i in range(len(entry.regions))]
    if vae:
        boxed = (
            render.draw_boxes(view, entry.regions, scale=view.width / in_w, labels=labels) if entry.regions else view
        )
        row.append(page.figure(boxed, "input", "model input" + (", regions" if entry.regions else "")))
    if result.reconstruction is not None:
        rec_array = np.clip(result.reconstruction, 0.0, 1.0) * 255.0 + 0.5
        # the reconstruction has the model input's shape, like the view: the same longer side gives the same size
        rec = render.model_view(Image.fromarray(rec_array.astype(np.uint8)), None, size=max(view.size))
        if entry.regions:
            scale = rec.width / result.reconstruction.shape[1]
            rec = render.draw_boxes(rec, entry.regions, scale=scale, labels=labels)
        row.append(page.figure(rec, "reconstruction", "reconstruction"))
    out.append(f"<div class='row'>{''.join(row)}</div>")
    out.extend([_vae_table(entry, page, style)] if vae else _classifier_tables(entry, page, style))
    if result.feature_maps:
        out.append(_feature_maps_table(entry, page, style))
    if result.consistency:
        out.append(_consistency_table(entry, page, style))
    t = result.timing
    meta = f"model {result.model_name} · server explain {t.explain_ms:.0f} ms · round trip {t.round_trip_ms:.0f} ms"
    out.append(f"<p class='meta'>{html.escape(meta)}</p></section>")
    return "\n".join(out)


def _classifier_tables(entry: Entry, page: _Page, style: _Style) -> list[str]:
    result = entry.result
    labels = {p.class_id: p for p in result.predictions}
    out = []
    for target in result.targets:
        p = labels.get(target)
        name = f"{p.label or 'class'} ({target}), score {p.score:.3f}" if p else f"class {target}"
        out.append(f"<h3>explaining {html.escape(name)}</h3>")
        layers = result.layers
        head = "".join(f"<th>{html.escape(layer or 'input')}</th>" for layer in layers)
        rows = []
        for method in result.methods:
            by_layer = {k.layer: m for k, m in result.maps.items() if k.method == method and k.target == target}
            if not by_layer:
                continue
            cells = []
            for layer in layers:
                m = by_layer.get(layer)
                if m is None:
                    cells.append("<td></td>")
                    continue
                stem = f"{method}_{layer or 'input'}_t{target}"
                cells.append(f"<td>{page.figure(style.picture(entry, m), stem, _caption(m))}</td>")
            rows.append(f"<tr><th class='rowhead'>{html.escape(method)}</th>{''.join(cells)}</tr>")
        out.append(f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
    return out


def _vae_table(entry: Entry, page: _Page, style: _Style) -> str:
    result = entry.result
    regions = result.targets
    head = "".join(
        "<th>whole image</th>"
        if r < 0
        else f"<th>region R{r}{html.escape(f' {tuple(entry.regions[r])}' if r < len(entry.regions) else '')}</th>"
        for r in regions
    )
    rows = []
    # One row per (method, layer): area Grad-CAM may be asked for at several encoder layers.
    for method, layer in dict.fromkeys((k.method, k.layer) for k in result.maps):
        cells = []
        for r in regions:
            m = result.maps.get(MapKey(method, layer, r))
            if m is None:
                cells.append("<td></td>")
                continue
            boxes = [entry.regions[r]] if 0 <= r < len(entry.regions) else []
            picture = style.picture(entry, m, on_original=False, boxes=boxes)
            stem = f"{method}_{layer or 'input'}_" + (f"r{r}" if r >= 0 else "image")
            cells.append(f"<td>{page.figure(picture, stem, _caption(m))}</td>")
        title = f"{method} · {layer}" if layer else method
        rows.append(f"<tr><th class='rowhead'>{html.escape(title)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _feature_maps_table(entry: Entry, page: _Page, style: _Style) -> str:
    """One row per (layer, target): the channels as coloured grids, each scaled to its own range, blocky on purpose
    (the native resolution is what the layer has)."""
    rows: dict[tuple[str, int], list[str]] = {}
    thumb = max(48, style.size // 3)
    for f in entry.result.feature_maps:
        h, w = f.array.shape
        scale = max(1, thumb // max(h, w))
        picture = Image.fromarray(render.colorize(f.array, style.cmap)).resize(
            (w * scale, h * scale), Image.Resampling.NEAREST
        )
        caption = f"channel {f.channel} · {f.score:.3g}"
        stem = f"feature_{f.layer}_c{f.channel}_t{f.target}"
        rows.setdefault((f.layer, f.target), []).append(f"<td>{page.figure(picture, stem, caption)}</td>")
    ranked = "mean activation" if all(t < 0 for _, t in rows) else "Grad-CAM weight"
    body = []
    for (layer, target), cells in rows.items():
        head = html.escape(layer + (f" · class {target}" if target >= 0 else ""))
        body.append(f"<tr><th class='rowhead'>{head}</th>{''.join(cells)}</tr>")
    return f"<h3>feature maps (top channels by {ranked})</h3><table>{''.join(body)}</table>"


def _consistency_table(entry: Entry, page: _Page, style: _Style) -> str:
    """One row per map: the map on the model input, then each transformed copy's map mapped back, with Spearman's
    rho and the IoU of the top regions in the caption (numbers only when the call asked for no maps)."""
    result = entry.result
    view = render.model_view(entry.image, result.geometry, size=style.size)
    transforms = list(dict.fromkeys(a.transform for a in result.consistency))
    head = "".join(f"<th>{html.escape(t)}, mapped back</th>" for t in transforms)
    rows = []
    for key in dict.fromkeys(MapKey(a.method, a.layer, a.target) for a in result.consistency):
        original = result.maps.get(key)
        cells = ["<td></td>"]
        if original is not None:
            cells.clear()
            flat = original.reduce("abs_max").array if original.is_gradient else original.array
            stem = f"consistency_{key.method}_{key.layer or 'input'}_t{key.target}"
            picture = render.overlay(view, flat, cmap=style.cmap, alpha=style.alpha)
            cells.append(f"<td>{page.figure(picture, stem, 'original')}</td>")
        for transform in transforms:
            a = result.agreement(key.method, transform, layer=key.layer, target=key.target)
            caption = f"rho {a.spearman:.3f} · IoU {a.iou:.3f} · {a.coverage:.0%} compared"
            if a.mapped is None:
                cells.append(f"<td class='legend'>{html.escape(caption)}</td>")
                continue
            picture = render.overlay(view, a.mapped, cmap=style.cmap, alpha=style.alpha)
            stem = f"consistency_{key.method}_{key.layer or 'input'}_t{key.target}_{transform}"
            cells.append(f"<td>{page.figure(picture, stem, caption)}</td>")
        title = f"{key.method} · {key.layer or 'input'} · class {key.target}"
        rows.append(f"<tr><th class='rowhead'>{html.escape(title)}</th>{''.join(cells)}</tr>")
    return (
        "<h3>consistency: the same maps for transformed copies, mapped back onto this input</h3>"
        f"<table><tr><th></th><th>map</th>{head}</tr>{''.join(rows)}</table>"
    )
