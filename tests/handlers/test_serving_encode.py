"""Response sizing and encoding: the bound before the work, protobuf answers in request order, float16 round trips,
group errors, REST JSON (``_sizing``, ``_encode``, ``_rest``; the results are the engine's own :class:`Explanation`
objects, filled with random maps of the planned shapes)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image
from serving_helpers import GOOD, LIMITS, classifier_caps, parse, request

from handlers.engine import Explanation, MapKey, Prediction
from handlers.engine.errors import InternalError, ResourceExhaustedError
from handlers.serving._encode import encode_response, error_message
from handlers.serving._maps import Encoded, decode_array
from handlers.serving._rest import encode_json, request_from_rest
from handlers.serving._sizing import check_response_size, response_size_bound
from handlers.serving._types import Capabilities, ImageInput, ParsedRequest, Timing


def fake_outcome(parsed: ParsedRequest, image: ImageInput, caps: Capabilities, seed: int = 0) -> Explanation:
    """What the engine would return: random maps of the planned native shapes, targets as the request says."""
    gen = torch.Generator().manual_seed(seed)
    targets = image.target.class_ids or tuple(range(image.target.top_k or 1))
    keys = [
        MapKey(method, layer, t)
        for method in parsed.methods
        for layer in (parsed.layers if method in caps.layer_methods else ("",))
        for t in targets
    ]
    keys.reverse()  # the encoder orders maps by request order, whatever order they come in
    maps = {key: torch.rand(caps.map_shape(key.method, key.layer), generator=gen) for key in keys}
    preds = tuple(Prediction(i, 1 / 3, 0.5, label) for i, label in enumerate(caps.labels or ()))
    return Explanation(preds[: parsed.output.top_predictions], tuple(targets), maps, caps.input_size)


@pytest.mark.parametrize("encoding", [0, explain_pb2.FLOAT32, explain_pb2.UINT8, explain_pb2.PNG])
@pytest.mark.parametrize("resolution", [explain_pb2.NATIVE, explain_pb2.INPUT])
def test_encoded_response_fits_its_bound_and_keeps_request_order(encoding: int, resolution: int) -> None:
    caps = classifier_caps()
    msg = request([GOOD, GOOD, b"bad"], methods=["guided_gradcam", "saliency", "gradcam"], layers=["layer4", "layer3"])
    msg.target.top_k = 2
    msg.output.encoding = encoding  # type: ignore[assignment]
    msg.output.resolution = resolution  # type: ignore[assignment]
    parsed = parse(msg, caps)
    outcomes = {im.index: fake_outcome(parsed, im, caps, im.index) for im in parsed.valid_images}
    response = encode_response(
        parsed, outcomes, caps, model_name="m", model_version="1", versions={"torch": "x"}, timing=Timing(1, 2, 3, 4)
    )
    size = len(response.SerializeToString())
    assert size <= response_size_bound(parsed, caps)
    first = response.results[0]
    order = [(m.method, m.layer, m.target) for m in first.maps]
    assert order == [
        (method, layer, t)
        for method, layers in (
            ("guided_gradcam", ("layer4", "layer3")),
            ("saliency", ("",)),
            ("gradcam", ("layer4", "layer3")),
        )
        for layer in layers
        for t in (0, 1)
    ]
    gradcam = next(m for m in first.maps if m.method == "gradcam" and m.layer == "layer3")
    expected_shape = [8, 8] if resolution == explain_pb2.INPUT else [4, 4]
    assert list(gradcam.data.shape) == expected_shape
    assert response.results[2].error.field == "images[2].encoded" and not response.results[2].maps
    assert response.timing.batch_size == 4 and response.versions["torch"] == "x"
    assert first.geometry.input_width == 8 and first.geometry.crop.x1 == 8


def test_float16_maps_round_trip_through_the_response() -> None:
    caps = classifier_caps()
    parsed = parse(request([GOOD], methods=["gradcam", "saliency"]), caps)
    [image] = parsed.valid_images
    outcome = fake_outcome(parsed, image, caps)
    response = encode_response(
        parsed, {0: outcome}, caps, model_name="", model_version="", versions={}, timing=Timing()
    )
    for (_, sent), got in zip(
        sorted(outcome.maps.items(), key=lambda item: item[0].method),
        sorted(response.results[0].maps, key=lambda m: m.method),
        strict=True,
    ):
        tensor = got.data
        assert tensor.encoding == explain_pb2.FLOAT16
        back = decode_array(Encoded(tuple(tensor.shape), "FLOAT16", tensor.data))
        np.testing.assert_allclose(back, sent.numpy(), rtol=1e-3, atol=1e-4)


def test_group_error_reaches_only_its_images() -> None:
    caps = classifier_caps()
    parsed = parse(request([GOOD, GOOD]), caps)
    outcomes = {0: fake_outcome(parsed, parsed.valid_images[0], caps), 1: ResourceExhaustedError("out of memory")}
    response = encode_response(parsed, outcomes, caps, model_name="", model_version="", versions={}, timing=Timing())
    assert response.results[0].maps and not response.results[0].error.code
    assert response.results[1].error.code == "RESOURCE_EXHAUSTED" and not response.results[1].maps


def test_oversized_requests_are_refused_before_work() -> None:
    caps = classifier_caps()
    msg = request([GOOD] * 4, methods=["saliency", "guided_gradcam"], layers=["layer3", "layer4"])
    msg.target.top_k = 2
    parsed = parse(msg, caps)
    bound = response_size_bound(parsed, caps)
    check_response_size(parsed, caps)  # fits the default 6 MB
    tight = replace(caps, limits=replace(LIMITS, max_response_bytes=bound - 1))
    with pytest.raises(ResourceExhaustedError, match=str(bound)) as err:
        check_response_size(parse(msg, tight), tight)
    assert err.value.field == "output"
    uint8 = msg.__deepcopy__()
    uint8.output.encoding = explain_pb2.UINT8
    check_response_size(parse(uint8, tight), tight)  # a smaller encoding fits


def test_unknown_errors_become_generic_internal(caplog: pytest.LogCaptureFixture) -> None:
    err = error_message(KeyError("secret internal detail"))
    assert err.code == "INTERNAL" and "secret" not in err.message
    assert "secret internal detail" in caplog.text
    typed = error_message(InternalError("shown as is", field="x"))
    assert (typed.code, typed.message, typed.field) == ("INTERNAL", "shown as is", "x")


def test_rest_json_is_readable() -> None:
    caps = classifier_caps()
    parsed = parse(request_from_rest(GOOD, {"methods": "gradcam,saliency"}), caps)
    [image] = parsed.valid_images
    outcome = fake_outcome(parsed, image, caps)
    status, body = encode_json(parsed, {0: outcome}, model_name="m", model_version="1", timing=Timing(batch_size=2))
    assert status == 200
    assert len(body) <= response_size_bound(parsed, caps, as_json=True)
    doc = json.loads(body)
    assert doc["model"] == "m" and doc["predictions"][0] == {
        "class_id": 0,
        "label": "cat",
        "score": 0.3333,
        "logit": 0.5,
    }
    gradcam, saliency = doc["maps"]
    assert (gradcam["method"], gradcam["layer"], gradcam["shape"]) == ("gradcam", "layer4", [2, 2])
    expected = outcome.map("gradcam")
    np.testing.assert_allclose(np.array(gradcam["values"]), expected.numpy(), rtol=1e-3)
    assert saliency["shape"] == [3, 8, 8] and np.array(saliency["values"]).shape == (3, 8, 8)  # 192 values: listed
    with Image.open(io.BytesIO(base64.b64decode(saliency["png"]))) as png:
        assert png.size == (8, 8) and png.mode == "RGB"
    assert doc["geometry"] == {"original_size": [8, 8], "crop": [0, 0, 8, 8], "input_size": [8, 8]}
    assert doc["timing"]["batch_size"] == 2


def test_rest_json_errors_carry_http_status() -> None:
    caps = classifier_caps()
    parsed = parse(request_from_rest(b"junk", {}), caps)
    status, body = encode_json(parsed, {}, model_name="m", model_version="", timing=Timing())
    assert status == 400
    assert json.loads(body)["error"]["field"] == "body"
