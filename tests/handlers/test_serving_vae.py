"""The VAE handler end to end with a mock TorchServe context: loading, regions, batching, isolation, describe.

The model is a small ``model_store.models.ShapesVAE`` with random weights, shipped as an archive would ship it: a
weights file plus its ``manifest.json`` in the model directory, named by ``camserve.weights``, and built through
``model_store.zoo`` (the archive entry file's provider) with the checksum check. Nothing depends on the trained
weights. The model directory and the loaded handler are session fixtures (``conftest.py``); response sizes, REST and
request state are in ``test_serving_vae_rest.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import (
    MockContext,
    as_array,
    assert_maps_close,
    call,
    decoded_maps,
    grpc_row,
    png_bytes,
    request,
    response,
)
from vae_helpers import (
    ALL_METHODS,
    LATENT_CHANNELS,
    MAX_RESPONSE,
    WEIGHTS,
    box,
    config,
    disc,
    image,
    mask_region,
    pixels_image,
    several_requests,
)

from handlers.engine import LATENT_TOTAL, Box, Mask, VAEExplainer
from handlers.engine.errors import InvalidArgumentError
from handlers.serving import VAEHandler
from model_store.provider import zoo_model

# ---- load


def test_initialize_describes_the_vae(vae_handler: VAEHandler) -> None:
    caps = vae_handler.loaded.caps
    assert caps.kind == "vae" and caps.num_classes == 0 and caps.labels is None
    assert caps.methods == ALL_METHODS
    assert caps.default_methods == ("area_saliency", "area_gradcam") and caps.default_layers == ("encoder",)
    # Encoder layers only, and only those the reconstruction and mu depend on (not to_logvar).
    assert caps.layers == (*(f"encoder.{i}" for i in range(8)), "encoder", "to_mu")
    assert caps.layer_grids["encoder.0"] == (32, 32) and caps.layer_grids["encoder"] == (8, 8)
    assert caps.map_shape("area_saliency", "") == (3, 64, 64) and caps.map_shape("area_guided", "") == (3, 64, 64)
    assert caps.map_shape("area_gradcam", "encoder.2") == (16, 16)
    assert caps.layer_methods == frozenset({"area_gradcam", "area_layercam", "latent_gradcam", "anomaly_latent"})
    assert caps.method_shapes["latent_gradcam"].count == LATENT_CHANNELS + 1
    assert caps.method_shapes["anomaly_latent"].count == caps.method_shapes["anomaly_recon_error"].count == 1
    assert caps.map_shape("anomaly_recon_error", "") == (64, 64) and caps.map_shape("anomaly_latent", "to_mu") == (8, 8)
    assert caps.method_shapes["area_gradcam"].count == 0


def test_the_archive_config_loads(vae_model_dir: Path) -> None:
    """model_store/configs/shapes-vae.yaml as the archive ships it (weights pointed at the random test file)."""
    from model_store import archive

    shipped = archive.load_config("shapes-vae", overrides={"camserve": {"weights": WEIGHTS}})
    h = VAEHandler(zoo_model)
    h.handle(None, MockContext(shipped, model_dir=str(vae_model_dir)))
    caps = h.loaded.caps
    # area_gradcam is not a default: it does not localise on the shapes VAE (handlers/engine/_vae/README.md)
    assert caps.default_methods == ("area_saliency", "area_layercam") and caps.default_layers == ("encoder",)
    assert caps.limits.max_regions == 16 and caps.limits.max_response_bytes == 15_000_000


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "classifier"}, "camserve.kind"),
        ({"labels": ["a", "b"]}, "camserve.labels"),
        ({"default_methods": ["gradcam"]}, "camserve.default_methods"),
        ({"default_layers": ["to_logvar"]}, "camserve.default_layers"),
        ({"input_size": [60, 60], "resize": 60}, "camserve.input_size"),  # the reconstruction would be 56x56
    ],
)
def test_bad_config_fails_at_load(overrides: dict[str, Any], field: str, vae_model_dir: Path) -> None:
    h = VAEHandler(zoo_model)
    with pytest.raises(InvalidArgumentError) as err:
        h.handle(None, MockContext(config(**overrides), model_dir=str(vae_model_dir)))
    assert err.value.field == field
    assert not h.initialized


def test_entry_file_initialises_on_handle_none(
    monkeypatch: pytest.MonkeyPatch, vae_handler: VAEHandler, vae_model_dir: Path
) -> None:
    from model_store import entry_vae

    monkeypatch.setattr(entry_vae, "_handler", vae_handler)
    assert entry_vae.handle(None, MockContext(config(), model_dir=str(vae_model_dir))) is None
    vae_ctx = MockContext(config(), model_dir=str(vae_model_dir))
    vae_ctx.set_batch([None])
    [out] = entry_vae.handle([grpc_row(request([png_bytes()]))], vae_ctx)
    assert [(m.method, m.target) for m in response(out).results[0].maps] == [("area_saliency", 0), ("area_gradcam", 0)]


# ---- batches


def test_good_batch_with_several_regions_matches_each_request_alone(
    vae_handler: VAEHandler, vae_ctx: MockContext
) -> None:
    msgs = several_requests()
    together = [response(b) for b in call(vae_handler, vae_ctx, [grpc_row(m) for m in msgs])]
    for msg, got in zip(msgs, together, strict=True):
        [alone] = call(vae_handler, vae_ctx, [grpc_row(msg)])
        assert got.request_id == msg.request_id and not got.HasField("error")
        assert got.timing.batch_size == 3
        for a, b in zip(got.results, response(alone).results, strict=True):
            assert not a.HasField("error") and not a.predictions
            assert_maps_close(decoded_maps(a), decoded_maps(b))
    a0, a1 = together[0].results
    # Request regions apply to the image without its own; maps in request order: method, then region.
    assert [(m.method, m.layer, m.target) for m in a0.maps] == [
        *(("area_saliency", "", r) for r in range(3)),
        *(("area_gradcam", "encoder", r) for r in range(3)),
    ]
    assert [(m.method, m.target) for m in a1.maps] == [("area_saliency", 0), ("area_gradcam", 0)]
    assert a1.id == "own" and a0.maps[0].data.shape == [3, 64, 64] and a0.maps[3].data.shape == [8, 8]
    for result in (a0, a1):
        recon = as_array(result.reconstruction)
        assert recon.shape == (3, 64, 64) and recon.min() >= 0.0 and recon.max() <= 1.0
    # No regions anywhere: the whole reconstruction is region 0; no reconstruction unless asked for.
    [b0] = together[1].results
    assert [m.target for m in b0.maps] == [0, 0] and not b0.HasField("reconstruction")
    assert b0.geometry.crop.x0 == 8  # 80x64 -> centre 64x64 crop
    # A layer sweep of area_guided (input) and latent_gradcam (per latent channel, then their mean).
    [c0] = together[2].results
    keys = [(m.method, m.layer, m.target) for m in c0.maps]
    latent_targets = [*range(LATENT_CHANNELS), LATENT_TOTAL]
    assert keys == [
        ("area_guided", "", 0),
        ("area_guided", "", 1),
        *(("latent_gradcam", "encoder.2", t) for t in latent_targets),
        *(("latent_gradcam", "encoder", t) for t in latent_targets),
    ]
    assert c0.maps[2].data.shape == [16, 16]
    # Different regions give different maps.
    maps = decoded_maps(a0)
    assert not np.allclose(maps[("area_saliency", "", 0)], maps[("area_saliency", "", 1)])


def test_served_maps_equal_the_in_process_engine(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    rng = np.random.default_rng(5)
    pixels = [rng.random((3, 64, 64), dtype=np.float32) for _ in range(2)]
    selected = disc(20, 44, 9)
    msg = explain_pb2.ExplainRequest(
        methods=list(ALL_METHODS),
        layers=["encoder.2", "to_mu"],
        images=[
            pixels_image(pixels[0], box(4, 8, 30, 20), mask_region(selected)),
            pixels_image(pixels[1], box(32, 32, 64, 64)),
        ],
        output=explain_pb2.OutputOptions(include_reconstruction=True, encoding=explain_pb2.FLOAT32),
    )
    [body] = call(vae_handler, vae_ctx, [grpc_row(msg)])
    served = response(body).results
    reference = VAEExplainer(vae_handler.loaded.model, input_size=(64, 64)).explain(
        torch.from_numpy(np.stack(pixels)),
        methods=tuple(msg.methods),
        regions=[[Box(4, 8, 30, 20), Mask(torch.from_numpy(selected))], [Box(32, 32, 64, 64)]],
        layers=("encoder.2", "to_mu"),
    )
    for result, expected in zip(served, reference, strict=True):
        got = decoded_maps(result)
        # area_saliency, area_guided: one map per region; area_gradcam, area_layercam: per layer and region;
        # latent_gradcam: per layer, one per latent channel plus their mean; one reconstruction error, one latent
        # anomaly map per layer.
        assert len(got) == len(expected.maps) == 6 * len(expected.regions) + 2 * (LATENT_CHANNELS + 1) + 1 + 2
        for key, values in expected.maps.items():
            want = values.numpy()
            np.testing.assert_allclose(got[tuple(key)], want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
        np.testing.assert_allclose(as_array(result.reconstruction), expected.reconstruction.numpy(), atol=1e-6)
    # The default FLOAT16 encoding stays within float16 precision of the engine: 2^-11 relative, and 2^-25 absolute
    # below 2^-14, where float16 is subnormal (random weights give gradients of ~1e-5).
    msg.output.encoding = explain_pb2.FLOAT16
    [half] = call(vae_handler, vae_ctx, [grpc_row(msg)])
    for result, expected in zip(response(half).results, reference, strict=True):
        got = decoded_maps(result)
        for key, values in expected.maps.items():
            want = values.numpy()
            np.testing.assert_allclose(
                got[tuple(key)], want, rtol=2**-11, atol=2**-25 + 1e-6 * float(np.abs(want).max())
            )


def test_groups_share_one_engine_call_whatever_their_regions(
    vae_handler: VAEHandler, vae_ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = vae_handler.explain_group

    def spy(parsed: Any, images: Sequence[Any]) -> Any:
        calls.append(len(images))
        return original(parsed, images)

    monkeypatch.setattr(vae_handler, "explain_group", spy)
    one = request([png_bytes(seed=11)], methods=["area_saliency"], regions=[box(0, 0, 8, 8)])
    three = request(
        [png_bytes(seed=12), image(png_bytes(seed=13), mask_region(disc(10, 10, 4)))],
        methods=["area_saliency"],
        regions=[box(0, 0, 8, 8), box(8, 8, 16, 16), box(16, 16, 32, 32)],
    )
    other = request([png_bytes(seed=14)], methods=["area_gradcam"])
    out = [response(b) for b in call(vae_handler, vae_ctx, [grpc_row(m) for m in (one, three, other)])]
    assert sorted(calls) == [1, 3]  # ragged regions in one call; other methods apart
    assert [len(r.maps) for r in [*out[0].results, *out[1].results, *out[2].results]] == [1, 3, 1, 1]


def test_bad_items_fail_alone(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    good = request([png_bytes(seed=7)], regions=[box(0, 0, 32, 32), box(32, 32, 64, 64)])
    target = request([png_bytes()])
    target.target.top_k = 1
    rows = [
        grpc_row(good),
        {"request": b"\x0a\xff\xff"},  # malformed protobuf
        grpc_row(request([png_bytes()], methods=["gradcam"])),  # a classifier method
        grpc_row(request([png_bytes()], regions=[box(0, 0, 65, 8)])),  # request-level region out of bounds
        grpc_row(target),  # classes do not apply to a VAE
        grpc_row(
            request(
                [png_bytes(seed=8), b"GIF89a-truncated", image(png_bytes(seed=9), box(5, 5, 5, 9)), png_bytes(seed=10)]
            )
        ),
        grpc_row(good),
    ]
    out = [response(b) for b in call(vae_handler, vae_ctx, rows)]
    assert (out[1].error.code, out[1].error.field) == ("INVALID_ARGUMENT", "request")
    assert (out[2].error.code, out[2].error.field) == ("INVALID_ARGUMENT", "methods[0]")
    assert (out[3].error.code, out[3].error.field) == ("INVALID_ARGUMENT", "regions[0].box.x1")
    assert (out[4].error.code, out[4].error.field) == ("INVALID_ARGUMENT", "target")
    mixed = out[5]
    assert not mixed.HasField("error")
    assert mixed.results[1].error.field == "images[1].encoded" and not mixed.results[1].maps
    assert mixed.results[2].error.field == "images[2].regions[0].box.x1" and not mixed.results[2].maps
    assert mixed.results[0].maps and mixed.results[3].maps
    [alone] = call(vae_handler, vae_ctx, [grpc_row(good)])
    for result in (out[0].results[0], out[6].results[0]):
        assert_maps_close(decoded_maps(result), decoded_maps(response(alone).results[0]))
        assert [m.target for m in result.maps] == [0, 1, 0, 1]


short_mask = explain_pb2.Region(mask=explain_pb2.Mask(height=64, width=64, data=b"\1" * 100))


@pytest.mark.parametrize(
    ("region", "code", "field"),
    [
        (box(4, 4, 4, 10), "INVALID_ARGUMENT", "regions[0].box.x1"),  # empty (half-open: x1 == x0)
        (box(0, 0, 8, 70), "INVALID_ARGUMENT", "regions[0].box.y1"),  # out of bounds
        (box(-2, 0, 8, 8), "INVALID_ARGUMENT", "regions[0].box.x0"),  # negative
        (box(20, 4, 10, 8), "INVALID_ARGUMENT", "regions[0].box.x1"),  # inverted
        (mask_region(disc(4, 4, 2, size=32)), "INVALID_ARGUMENT", "regions[0].mask"),  # wrong shape
        (short_mask, "INVALID_ARGUMENT", "regions[0].mask.data"),  # 100 bytes for 64x64
        (mask_region(np.zeros((64, 64), bool)), "INVALID_ARGUMENT", "regions[0].mask"),  # selects nothing
        (explain_pb2.Region(), "INVALID_ARGUMENT", "regions[0]"),  # neither box nor mask
        ([box(0, 0, 8, 8)] * 5, "RESOURCE_EXHAUSTED", "regions"),  # over limits.max_regions (4)
    ],
)
def test_bad_regions_name_their_field(
    vae_handler: VAEHandler,
    vae_ctx: MockContext,
    monkeypatch: pytest.MonkeyPatch,
    region: explain_pb2.Region | list[explain_pb2.Region],
    code: str,
    field: str,
) -> None:
    engine_images: list[int] = []
    original = vae_handler.explain_group
    monkeypatch.setattr(
        vae_handler,
        "explain_group",
        lambda parsed, images: engine_images.append(len(images)) or original(parsed, images),
    )
    regions = region if isinstance(region, list) else [region]
    # Second in a list of regions: the index in the path is the region's own.
    second = [box(0, 0, 8, 8), *regions] if len(regions) == 1 else regions
    request_level = request([png_bytes(seed=1)], regions=second)
    per_image = request([png_bytes(seed=2), image(png_bytes(seed=3), *second)])
    whole, partial = (response(b) for b in call(vae_handler, vae_ctx, [grpc_row(request_level), grpc_row(per_image)]))
    index_field = field.replace("regions[0]", "regions[1]") if len(regions) == 1 else field
    assert (whole.error.code, whole.error.field) == (code, index_field) and not whole.results
    assert not partial.HasField("error")
    ok, bad = partial.results
    assert (bad.error.code, bad.error.field) == (code, f"images[1].{index_field}") and not bad.maps
    assert len(ok.maps) == 2 and not ok.HasField("error")
    assert engine_images == [1]  # only the good image reached the engine


def test_describe_over_grpc_and_management_api(vae_handler: VAEHandler, vae_ctx: MockContext) -> None:
    rows = [grpc_row(explain_pb2.ExplainRequest(describe=True, request_id="d")), {}]
    proto_body, json_body = call(vae_handler, vae_ctx, rows, headers=[None, {"describe": "True"}])
    got = response(proto_body)
    info = got.model_info
    assert got.request_id == "d" and not got.results
    assert info.kind == "vae" and tuple(info.methods) == ALL_METHODS
    assert list(info.default_methods) == ["area_saliency", "area_gradcam"] and list(info.default_layers) == ["encoder"]
    assert "to_logvar" not in info.layers and info.layers[-2:] == ["encoder", "to_mu"]
    assert not info.labels and (info.input_width, info.input_height) == (64, 64)
    assert (info.max_images, info.max_regions, info.max_response_bytes) == (8, 4, MAX_RESPONSE)
    doc = json.loads(json_body)
    assert doc["model"] == "test-model" and doc["kind"] == "vae" and doc["max_regions"] == 4
