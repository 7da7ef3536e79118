"""The VAE handler's answers beyond gRPC explain calls: the response bound, REST raw images with form regions, and no
request state kept between batches (same random-weight VAE archive as ``test_serving_vae.py``, via ``conftest.py``).
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image
from serving_helpers import (
    MockContext,
    call,
    encode,
    gradient_rgb,
    grpc_row,
    png_bytes,
    request,
    response,
)
from vae_helpers import LATENT_CHANNELS, MAX_RESPONSE, box, image, several_requests

from handlers.serving import VAEHandler
from handlers.serving._parse import parse_message
from handlers.serving._sizing import response_size_bound

# ---- response size


def test_response_size_is_refused_before_the_engine_runs(
    vae_handler: VAEHandler, vae_ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(vae_handler, "explain_group", lambda parsed, images: calls.append(len(images)))
    # 4 images x 4 regions x 2 input-gradient methods x [3, 64, 64] FLOAT32 = 1.57 MB > 1 MB.
    regions = [box(0, 0, 8, 8), box(8, 8, 16, 16), box(16, 16, 32, 32), box(0, 32, 64, 64)]
    big = request([png_bytes(seed=s) for s in range(4)], methods=["area_saliency", "area_guided"], regions=regions)
    big.output.encoding = explain_pb2.FLOAT32
    # Layer maps count too: regions x layers, and every latent channel for latent_gradcam, at INPUT resolution.
    sweep = request(
        [png_bytes(seed=5)], methods=["area_gradcam", "latent_gradcam"], layers=list(vae_handler.loaded.caps.layers)
    )
    sweep.output.resolution = explain_pb2.INPUT
    sweep.output.encoding = explain_pb2.FLOAT32
    out = [response(b) for b in call(vae_handler, vae_ctx, [grpc_row(big), grpc_row(sweep)])]
    for got in out:
        assert (got.error.code, got.error.field) == ("RESOURCE_EXHAUSTED", "output")
        assert str(MAX_RESPONSE) in got.error.message and not got.results
    assert calls == []


def test_size_bound_covers_the_encoded_response(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    caps = vae_handler.loaded.caps
    msg = request(
        [image(png_bytes(seed=s), *[box(0, 0, 8 * (k + 1), 8) for k in range(4)]) for s in range(2)],
        methods=["area_gradcam", "latent_gradcam", "area_saliency"],
        layers=["encoder.0", "encoder"],
        output=explain_pb2.OutputOptions(include_reconstruction=True, resolution=explain_pb2.INPUT),
    )
    [body] = call(vae_handler, vae_ctx, [grpc_row(msg)])
    got = response(body)
    assert not got.HasField("error") and all(not r.HasField("error") for r in got.results)
    assert len(got.results[0].maps) == 2 * 4 + 2 * (LATENT_CHANNELS + 1) + 4
    bound = response_size_bound(parse_message(msg, caps, vae_handler.loaded.preprocessor), caps)
    assert len(body) <= bound < 2 * len(body)


# ---- REST


def test_rest_raw_image_gets_default_area_maps_and_the_reconstruction(
    vae_handler: VAEHandler, vae_ctx: MockContext
) -> None:
    picture = encode(gradient_rgb(96, 64, seed=3), "JPEG")
    [body] = call(
        vae_handler, vae_ctx, [{"body": bytearray(picture)}], headers=[{"body": {"content-type": "image/jpeg"}}]
    )
    doc = json.loads(body)
    assert vae_ctx.request_processor[0].status[0] == 200
    assert vae_ctx.request_processor[0].response_headers["content-type"] == "application/json"
    assert doc["predictions"] == []
    maps = doc["maps"]
    assert [(m["method"], m["layer"], m["target"]) for m in maps] == [
        ("area_saliency", "", 0),  # the default region: the whole reconstruction
        ("area_gradcam", "encoder", 0),
    ]
    assert maps[0]["shape"] == [3, 64, 64] and "values" not in maps[0]
    assert np.array(maps[1]["values"]).shape == (8, 8)
    with Image.open(io.BytesIO(base64.b64decode(maps[0]["png"]))) as png:
        assert (png.size, png.mode) == ((64, 64), "RGB")
    with Image.open(io.BytesIO(base64.b64decode(doc["reconstruction_png"]))) as recon:
        assert (recon.size, recon.mode) == ((64, 64), "RGB")
    assert doc["geometry"] == {"original_size": [96, 64], "crop": [16, 0, 80, 64], "input_size": [64, 64]}


def test_rest_form_regions_and_their_errors(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    rows = [
        {"data": png_bytes(seed=6), "regions": "0,0,16,16; 8,8,40,40", "methods": "area_guided"},
        {"data": png_bytes(seed=6), "regions": "0,0,16,80"},
        {"data": png_bytes(seed=6), "regions": ";".join(["0,0,4,4"] * 5)},
        {"data": png_bytes(seed=6), "layers": "to_logvar"},
    ]
    out = [json.loads(b) for b in call(vae_handler, vae_ctx, rows)]
    assert [(m["method"], m["target"]) for m in out[0]["maps"]] == [("area_guided", 0), ("area_guided", 1)]
    assert (out[1]["error"]["code"], out[1]["error"]["field"]) == ("INVALID_ARGUMENT", "regions[0].box.y1")
    assert (out[2]["error"]["code"], out[2]["error"]["field"]) == ("RESOURCE_EXHAUSTED", "regions")
    assert (out[3]["error"]["code"], out[3]["error"]["field"]) == ("NOT_FOUND", "layers[0]")
    assert [p.status[0] for p in vae_ctx.request_processor] == [200, 400, 413, 404]


# ---- state


def test_no_request_state_survives_a_batch(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    probe = request([png_bytes(seed=31)], regions=[box(0, 0, 32, 32)], request_id="probe")
    before = {k: id(v) for k, v in vars(vae_handler).items()}
    [first] = call(vae_handler, vae_ctx, [grpc_row(probe)])
    noisy = several_requests()
    noisy[0].output.encoding = explain_pb2.PNG
    noisy[1].output.resolution = explain_pb2.INPUT
    call(vae_handler, vae_ctx, [grpc_row(m) for m in noisy] + [{"body": png_bytes(), "regions": "1,1,2,2"}])
    [again] = call(vae_handler, vae_ctx, [grpc_row(probe)])
    assert {k: id(v) for k, v in vars(vae_handler).items()} == before
    a, b = response(first), response(again)
    assert a.results[0].maps[0].data.encoding == explain_pb2.FLOAT16 and not a.results[0].HasField("reconstruction")
    assert a.results[0].SerializeToString() == b.results[0].SerializeToString()
