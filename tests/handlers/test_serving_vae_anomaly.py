"""The VAE anomaly maps over gRPC and REST (same random-weight VAE archive as ``test_serving_vae.py``): one map per
image at ``target = IMAGE_TARGET`` whatever the image's regions, equal to the in-process engine, and bad layers and
resolutions fail with the field at fault."""

from __future__ import annotations

import json

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import MockContext, as_array, call, decoded_maps, grpc_row, png_bytes, request, response
from vae_helpers import box, image, pixels_image

from handlers.engine import IMAGE_TARGET, VAEExplainer
from handlers.serving import VAEHandler

ANOMALY = ["anomaly_recon_error", "anomaly_latent"]


def test_grpc_anomaly_maps_are_one_per_image_and_equal_the_engine(
    vae_handler: VAEHandler, vae_ctx: MockContext
) -> None:
    rng = np.random.default_rng(11)
    pixels = [rng.random((3, 64, 64), dtype=np.float32) for _ in range(2)]
    msg = explain_pb2.ExplainRequest(
        methods=[*ANOMALY, "area_gradcam"],
        layers=["encoder.1", "encoder"],
        images=[pixels_image(pixels[0], box(0, 0, 16, 16), box(8, 8, 40, 40)), pixels_image(pixels[1])],
        output=explain_pb2.OutputOptions(include_reconstruction=True, encoding=explain_pb2.FLOAT32),
    )
    [body] = call(vae_handler, vae_ctx, [grpc_row(msg)])
    served = response(body).results
    reference = VAEExplainer(vae_handler.loaded.model, input_size=(64, 64)).explain(
        torch.from_numpy(np.stack(pixels)), methods=tuple(ANOMALY), layers=("encoder.1", "encoder")
    )
    for result, expected, regions in zip(served, reference, (2, 1), strict=True):
        assert not result.HasField("error")
        keys = [(m.method, m.layer, m.target) for m in result.maps]
        assert keys == [
            ("anomaly_recon_error", "", IMAGE_TARGET),
            ("anomaly_latent", "encoder.1", IMAGE_TARGET),
            ("anomaly_latent", "encoder", IMAGE_TARGET),
            *(("area_gradcam", layer, r) for layer in ("encoder.1", "encoder") for r in range(regions)),
        ]
        got = decoded_maps(result)
        assert got[("anomaly_recon_error", "", IMAGE_TARGET)].shape == (64, 64)
        assert got[("anomaly_latent", "encoder.1", IMAGE_TARGET)].shape == (32, 32)
        for key, values in expected.maps.items():
            want = values.numpy()
            np.testing.assert_allclose(
                got[(key.method, key.layer, key.target)], want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max())
            )
    for result, px in zip(served, pixels, strict=True):  # the error of the served reconstruction
        recon = as_array(result.reconstruction)
        np.testing.assert_allclose(
            decoded_maps(result)[("anomaly_recon_error", "", IMAGE_TARGET)],
            ((recon - px) ** 2).sum(axis=0),
            rtol=1e-4,
            atol=1e-6,
        )


def test_grpc_anomaly_at_input_resolution_and_bad_layers(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    upsampled = request([png_bytes(seed=3)], methods=["anomaly_latent"], layers=["encoder"])
    upsampled.output.resolution = explain_pb2.INPUT
    unknown = request([png_bytes(seed=3)], methods=["anomaly_latent"], layers=["encoder.99"])
    off_path = request([png_bytes(seed=3)], methods=["anomaly_latent"], layers=["to_logvar"])
    regions = request([image(png_bytes(seed=4), box(0, 0, 8, 8), box(0, 0, 70, 8))], methods=["anomaly_recon_error"])
    out = [response(b) for b in call(vae_handler, vae_ctx, [grpc_row(m) for m in (upsampled, unknown, off_path)])]
    [m] = out[0].results[0].maps
    assert (m.method, m.layer, m.target) == ("anomaly_latent", "encoder", IMAGE_TARGET)
    assert list(m.data.shape) == [64, 64]
    assert (out[1].error.code, out[1].error.field) == ("NOT_FOUND", "layers[0]")
    assert (out[2].error.code, out[2].error.field) == ("NOT_FOUND", "layers[0]")
    # Regions are still validated (one rule for every method), though the anomaly maps do not use them.
    [bad] = (response(b) for b in call(vae_handler, vae_ctx, [grpc_row(regions)]))
    assert bad.results[0].error.field == "images[0].regions[1].box.x1" and not bad.results[0].maps


def test_rest_anomaly_maps(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    rows = [
        {"data": png_bytes(seed=6), "methods": "anomaly_recon_error,anomaly_latent", "regions": "0,0,16,16; 8,8,40,40"},
        {"data": png_bytes(seed=6), "methods": "anomaly_latent", "layers": "encoder.3"},
        {"data": png_bytes(seed=6), "methods": "anomaly_latent", "layers": "nope"},
    ]
    out = [json.loads(b) for b in call(vae_handler, vae_ctx, rows)]
    assert [(m["method"], m["layer"], m["target"]) for m in out[0]["maps"]] == [
        ("anomaly_recon_error", "", IMAGE_TARGET),
        ("anomaly_latent", "encoder", IMAGE_TARGET),
    ]
    assert out[0]["maps"][0]["shape"] == [64, 64] and np.array(out[0]["maps"][1]["values"]).shape == (8, 8)
    assert [(m["layer"], np.array(m["values"]).shape) for m in out[1]["maps"]] == [("encoder.3", (16, 16))]
    assert (out[2]["error"]["code"], out[2]["error"]["field"]) == ("NOT_FOUND", "layers[0]")
    assert [p.status[0] for p in vae_ctx.request_processor] == [200, 200, 404]
