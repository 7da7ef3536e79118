"""Request validation with precise field paths: methods, layers, targets, VAE regions, images and REST form fields
(``handlers/serving/_parse.py`` and ``_rest.request_from_rest``; no engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image
from serving_helpers import GOOD, PRE, classifier_caps, parse, png_bytes, request, vae_caps

from handlers.engine.errors import CamserveError, InvalidArgumentError
from handlers.serving import _parse
from handlers.serving._parse import parse_request
from handlers.serving._rest import request_from_rest
from handlers.serving._types import Capabilities, ImageFailure, ImageInput


def rejected(msg: explain_pb2.ExplainRequest, caps: Capabilities | None = None) -> CamserveError:
    with pytest.raises(CamserveError) as err:
        parse(msg, caps)
    return err.value


def image_error(msg: explain_pb2.ExplainRequest, index: int = 0, caps: Capabilities | None = None) -> CamserveError:
    item = parse(msg, caps).images[index]
    assert isinstance(item, ImageFailure), item
    return item.error


# ---- parsing


def test_defaults_are_resolved() -> None:
    parsed = parse(request([GOOD, GOOD], request_id="r-1"))
    assert parsed.request_id == "r-1" and not parsed.describe
    assert parsed.methods == ("gradcam",) and parsed.layers == ("layer4",)
    assert parsed.output.encoding == "FLOAT16" and parsed.output.resolution == "NATIVE"
    assert parsed.output.top_predictions == 3  # 5 by default, capped at the number of classes
    [a, b] = parsed.images
    assert isinstance(a, ImageInput) and isinstance(b, ImageInput)
    assert a.pixels.shape == (3, 8, 8) and a.target.top_k == 1 and a.target.class_ids is None


def test_methods_and_layers_are_deduplicated_and_layers_skipped_without_layer_methods() -> None:
    parsed = parse(request([GOOD], methods=["saliency", "gradcam", "saliency"], layers=["layer3", "layer3"]))
    assert parsed.methods == ("saliency", "gradcam") and parsed.layers == ("layer3",)
    assert parse(request([GOOD], methods=["saliency"], layers=["layer3"])).layers == ()


def test_class_names_become_ids_and_per_image_targets_override() -> None:
    msg = request([GOOD, GOOD])
    msg.target.class_names.extend(["car", "cat"])
    msg.images[1].target.top_k = 2
    a, b = parse(msg).valid_images
    assert a.target.class_ids == (2, 0) and a.target.count == 2
    assert b.target.top_k == 2 and b.target.class_ids is None


def test_describe_needs_no_images() -> None:
    parsed = parse(explain_pb2.ExplainRequest(describe=True))
    assert parsed.describe and parsed.images == ()


@pytest.mark.parametrize(
    ("build", "code", "field"),
    [
        (lambda m: m.methods.append("occlusion"), "INVALID_ARGUMENT", "methods[0]"),
        (lambda m: m.methods.extend(["gradcam", "area_saliency"]), "INVALID_ARGUMENT", "methods[1]"),
        (lambda m: m.layers.extend(["layer4", "fc"]), "NOT_FOUND", "layers[1]"),
        (lambda m: m.target.class_names.extend(["cat", "zebra"]), "NOT_FOUND", "target.class_names[1]"),
        (lambda m: m.target.class_ids.append(3), "INVALID_ARGUMENT", "target.class_ids[0]"),
        (lambda m: m.target.class_ids.append(-1), "INVALID_ARGUMENT", "target.class_ids[0]"),
        (lambda m: m.target.class_ids.extend([0, 1, 2]), "INVALID_ARGUMENT", "target.class_ids"),
        (lambda m: m.target.class_ids.extend([1, 1]), "INVALID_ARGUMENT", "target.class_ids"),
        (lambda m: setattr(m.target, "top_k", 3), "INVALID_ARGUMENT", "target.top_k"),
        (lambda m: (setattr(m.target, "top_k", 1), m.target.class_ids.append(0)), "INVALID_ARGUMENT", "target"),
        (lambda m: m.regions.add(box=explain_pb2.Box(x0=0, y0=0, x1=2, y1=2)), "INVALID_ARGUMENT", "regions"),
        (
            lambda m: setattr(m.output, "include_reconstruction", True),
            "INVALID_ARGUMENT",
            "output.include_reconstruction",
        ),
        (lambda m: setattr(m.output, "encoding", 9), "INVALID_ARGUMENT", "output.encoding"),
        (lambda m: setattr(m, "request_id", "x" * 300), "INVALID_ARGUMENT", "request_id"),
        (lambda m: m.images.extend([explain_pb2.Image(encoded=GOOD)] * 4), "RESOURCE_EXHAUSTED", "images"),
    ],
)
def test_request_level_errors_name_the_field(build: object, code: str, field: str) -> None:
    msg = request([GOOD])
    build(msg)  # type: ignore[operator]
    err = rejected(msg)
    assert (err.code, err.field) == (code, field), err.message


def test_no_images_and_malformed_bytes() -> None:
    assert rejected(explain_pb2.ExplainRequest()).field == "images"
    with pytest.raises(InvalidArgumentError) as err:
        parse_request(b"\x0a\xff\xff\xff\xff\x0f", classifier_caps(), PRE)
    assert err.value.field == "request"


def test_class_names_need_labels() -> None:
    msg = request([GOOD])
    msg.target.class_names.append("cat")
    assert "no labels" in rejected(msg, classifier_caps(labels=None)).message


def test_one_bad_image_does_not_fail_the_others() -> None:
    msg = request([GOOD, b"not an image", GOOD])
    msg.images.add(id="empty")  # neither encoded nor pixels
    msg.images[2].target.class_ids.append(7)  # per-image target out of range
    parsed = parse(msg)
    assert isinstance(parsed.images[0], ImageInput)
    assert image_error(msg, 1).field == "images[1].encoded"
    assert image_error(msg, 2).field == "images[2].target.class_ids[0]"
    err = image_error(msg, 3)
    assert err.field == "images[3]" and parsed.images[3].id == "empty"


def test_an_unexpected_error_in_one_image_is_internal_for_that_image_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _parse.decode_image

    def flaky(data: bytes, **kwargs: object) -> Image.Image:
        if data == b"boom":
            raise TypeError("bug details")
        return real(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_parse, "decode_image", flaky)
    parsed = parse(request([GOOD, b"boom"]))
    assert isinstance(parsed.images[0], ImageInput)
    err = image_error(request([GOOD, b"boom"]), 1)
    assert err.code == "INTERNAL" and "bug details" not in err.message


def test_image_caps_and_raw_pixels() -> None:
    big = request([png_bytes(101, 100)])
    assert image_error(big).code == "RESOURCE_EXHAUSTED"
    pixels = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    msg = explain_pb2.ExplainRequest()
    msg.images.add().pixels.CopyFrom(
        explain_pb2.Tensor(shape=[3, 8, 8], encoding=explain_pb2.FLOAT32, data=pixels.tobytes())
    )
    [item] = parse(msg).images
    assert isinstance(item, ImageInput) and torch.equal(item.pixels, torch.from_numpy(pixels))
    msg.images[0].pixels.encoding = explain_pb2.PNG
    assert image_error(msg).field == "images[0].pixels.encoding"
    msg.images[0].pixels.encoding = explain_pb2.FLOAT16
    assert image_error(msg).field == "images[0].pixels.data"


# ---- VAE regions


def vae_request(*regions: explain_pb2.Region) -> explain_pb2.ExplainRequest:
    msg = request([GOOD])
    msg.regions.extend(regions)
    return msg


def box(x0: int, y0: int, x1: int, y1: int) -> explain_pb2.Region:
    return explain_pb2.Region(box=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1))


def mask(height: int, width: int, data: bytes) -> explain_pb2.Region:
    return explain_pb2.Region(mask=explain_pb2.Mask(height=height, width=width, data=data))


def test_vae_regions_parse_and_default_to_the_whole_image() -> None:
    inside = np.zeros((8, 8), dtype=np.uint8)
    inside[2:4, 3] = 1
    [item] = parse(vae_request(box(0, 0, 8, 8), mask(8, 8, inside.tobytes())), vae_caps()).valid_images
    assert item.regions[0].box == (0, 0, 8, 8)
    assert item.regions[1].mask is not None and int(item.regions[1].mask.sum()) == 2
    [default] = parse(request([GOOD]), vae_caps()).valid_images
    assert [r.box for r in default.regions] == [(0, 0, 8, 8)]


@pytest.mark.parametrize(
    ("region", "field"),
    [
        (box(0, 0, 9, 8), "regions[0].box.x1"),  # out of bounds
        (box(4, 0, 2, 8), "regions[0].box.x1"),  # inverted
        (box(2, 2, 2, 5), "regions[0].box.x1"),  # empty
        (box(-1, 0, 2, 2), "regions[0].box.x0"),
        (mask(4, 4, b"\1" * 16), "regions[0].mask"),  # wrong shape
        (mask(8, 8, b"\1" * 10), "regions[0].mask.data"),
        (mask(8, 8, b"\0" * 64), "regions[0].mask"),  # selects nothing
        (explain_pb2.Region(), "regions[0]"),
    ],
)
def test_bad_vae_regions(region: explain_pb2.Region, field: str) -> None:
    err = rejected(vae_request(region), vae_caps())
    assert err.code == "INVALID_ARGUMENT" and err.field == field, err.message


def test_vae_region_limits_and_targets() -> None:
    assert rejected(vae_request(*[box(0, 0, 2, 2)] * 4), vae_caps()).code == "RESOURCE_EXHAUSTED"
    msg = request([GOOD])
    msg.target.top_k = 1
    assert rejected(msg, vae_caps()).field == "target"
    per_image = request([GOOD])
    per_image.images[0].regions.append(box(0, 0, 20, 2))
    assert image_error(per_image, 0, vae_caps()).field == "images[0].regions[0].box.x1"


# ---- REST parameters


def test_rest_request_from_image_and_form_fields() -> None:
    msg = request_from_rest(GOOD, {"methods": "gradcam, saliency", "layers": "layer3", "top_k": "2"})
    assert msg.images[0].encoded == GOOD
    assert list(msg.methods) == ["gradcam", "saliency"] and list(msg.layers) == ["layer3"] and msg.target.top_k == 2
    regions = request_from_rest(GOOD, {"regions": "0,0,4,4;2,2,6,6"}).regions
    assert [(r.box.x0, r.box.x1) for r in regions] == [(0, 4), (2, 6)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"top_k": "two"}, "top_k"),
        ({"top_k": "0"}, "top_k"),
        ({"regions": "1,2,3"}, "regions[0]"),
        ({"method": "gradcam"}, "method"),
    ],
)
def test_rest_parameter_errors(params: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        request_from_rest(GOOD, params)
    assert err.value.field == field
