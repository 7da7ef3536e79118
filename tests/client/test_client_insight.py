"""feature_maps= and consistency= against the in-process fake: what is sent, what is read back, bad arguments."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import camserve
import grpc
import numpy as np
import pytest
from camserve import cli
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer, default_answer, tensor
from PIL import Image

MODEL = "shapes-classifier"


def _answer_with_insight(request: explain_pb2.ExplainRequest, model: str, _ctx: grpc.ServicerContext) -> Any:
    """The default answer plus feature maps and agreements that identify what was asked for."""
    response = default_answer(request, model)
    for result in response.results:
        if request.HasField("feature_maps"):
            for c in range(request.feature_maps.top_n or 8):
                result.feature_maps.add(
                    layer="layer2", channel=c, score=10.0 - c, target=-1, data=tensor(np.full((4, 4), float(c)))
                )
        if request.HasField("consistency"):
            for t in request.consistency.transforms or [1, 2, 3]:
                entry = result.consistency.add(
                    method="gradcam", layer="layer2", target=0, transform=t, spearman=0.5 * t, iou=float("nan")
                )
                entry.coverage = 1.0
                if not request.consistency.omit_maps:
                    entry.mapped.CopyFrom(tensor(np.full((32, 32), float(t))))
    return response


def test_feature_maps_and_consistency_are_sent_and_read_back(client: camserve.Client, fake: FakeServer) -> None:
    fake.answer = _answer_with_insight
    result = client.explain(
        np.zeros((8, 8, 3), np.uint8),
        model=MODEL,
        feature_maps=camserve.FeatureMaps(top_n=3, layers=("layer1", "layer2"), rank="gradcam"),
        consistency=camserve.Consistency(transforms=("hflip", "rotate"), shift=0.25, angle=-20, top_fraction=0.2),
    )
    sent = fake.requests[-1]
    assert sent.feature_maps == explain_pb2.FeatureMapOptions(
        layers=["layer1", "layer2"], top_n=3, ranking=explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT
    )
    assert list(sent.consistency.transforms) == [explain_pb2.TRANSFORM_HFLIP, explain_pb2.TRANSFORM_ROTATE]
    assert (sent.consistency.shift, sent.consistency.angle_degrees) == (0.25, -20.0)
    assert sent.consistency.top_fraction == pytest.approx(0.2) and not sent.consistency.omit_maps
    assert [(f.layer, f.channel, f.score, f.target) for f in result.feature_maps] == [
        ("layer2", c, 10.0 - c, -1) for c in range(3)
    ]
    assert result.feature_maps[2].array.shape == (4, 4) and float(result.feature_maps[2].array[0, 0]) == 2.0
    assert not result.feature_maps[0].array.flags.writeable
    flip = result.agreement("gradcam", "hflip")
    assert (flip.spearman, flip.coverage) == (0.5, 1.0) and math.isnan(flip.iou) and not flip.ok
    assert flip.mapped is not None and flip.mapped.shape == (32, 32)
    assert result.agreement("gradcam", "rotate", layer="layer2", target=0).spearman == 1.5
    summary = result.summary()
    assert summary["consistency"][0]["iou"] is None  # type: ignore[index]
    assert summary["feature_maps"][0]["shape"] == [4, 4]  # type: ignore[index]
    with pytest.raises(camserve.NotFound, match="no agreement"):
        result.agreement("gradcam", "shift")


def test_shorthands_and_numbers_only(client: camserve.Client, fake: FakeServer) -> None:
    fake.answer = _answer_with_insight
    result = client.explain(
        np.zeros((8, 8, 3), np.uint8), model=MODEL, feature_maps=2, consistency=camserve.Consistency(maps=False)
    )
    sent = fake.requests[-1]
    assert sent.feature_maps == explain_pb2.FeatureMapOptions(
        top_n=2, ranking=explain_pb2.CHANNEL_RANKING_MEAN_ACTIVATION
    )
    assert sent.consistency == explain_pb2.ConsistencyOptions(omit_maps=True)
    assert [a.transform for a in result.consistency] == ["hflip", "shift", "rotate"]
    assert all(a.mapped is None for a in result.consistency)
    client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL, consistency=True)
    assert fake.requests[-1].HasField("consistency") and not fake.requests[-1].HasField("feature_maps")
    plain = client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL)
    assert not fake.requests[-1].HasField("consistency") and plain.feature_maps == () and plain.consistency == ()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"feature_maps": 0}, "feature_maps.top_n"),
        ({"feature_maps": "8"}, "feature_maps"),
        ({"feature_maps": camserve.FeatureMaps(rank="max")}, "feature_maps.rank"),  # type: ignore[arg-type]
        ({"feature_maps": camserve.FeatureMaps(layers=())}, "feature_maps.layers"),
        ({"consistency": "yes"}, "consistency"),
        ({"consistency": camserve.Consistency(transforms=())}, "consistency.transforms"),
        ({"consistency": camserve.Consistency(transforms=("zoom",))}, "consistency.transforms[0]"),  # type: ignore[arg-type]
        ({"consistency": camserve.Consistency(transforms=("hflip", "hflip"))}, "consistency.transforms"),
        ({"consistency": camserve.Consistency(shift=0.9)}, "consistency.shift"),
        ({"consistency": camserve.Consistency(shift=0.0)}, "consistency.shift"),
        ({"consistency": camserve.Consistency(angle=0)}, "consistency.angle"),
        ({"consistency": camserve.Consistency(angle=float("inf"))}, "consistency.angle"),
        ({"consistency": camserve.Consistency(top_fraction=1.0)}, "consistency.top_fraction"),
    ],
)
def test_bad_arguments_are_refused_before_sending(
    client: camserve.Client, fake: FakeServer, options: dict[str, Any], field: str
) -> None:
    before = len(fake.requests)
    with pytest.raises(camserve.InvalidArgument) as info:
        client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL, **options)
    assert info.value.field == field
    assert len(fake.requests) == before


def test_a_malformed_feature_map_is_the_servers_fault(client: camserve.Client, fake: FakeServer) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, ctx: grpc.ServicerContext) -> Any:
        response = default_answer(request, model)
        response.results[0].feature_maps.add(layer="l", channel=0, data=tensor(np.zeros((2, 2, 2))))
        return response

    fake.answer = answer
    with pytest.raises(camserve.Internal, match="feature map"):
        client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL, feature_maps=1)


# ---- the command line and the gallery


def test_cli_writes_feature_maps_and_consistency(fake: FakeServer, tmp_path: Path) -> None:
    fake.answer = _answer_with_insight
    image = tmp_path / "one.png"
    Image.new("RGB", (32, 32), (90, 120, 200)).save(image)
    out_dir = tmp_path / "out"
    conn = ["--address", fake.address, "--management-address", fake.address, "--timeout", "10"]
    args = ["explain", str(image), "--model", MODEL, "--out", str(out_dir), "--feature-maps", "2", *conn]
    code = cli.run(
        [*args, "--feature-rank", "gradcam", "--transform", "hflip", "--transform", "shift"],
        out=io.StringIO(),
        err=io.StringIO(),
    )
    assert code == cli.EXIT_OK
    sent = fake.requests[-1]
    assert sent.feature_maps.top_n == 2
    assert sent.feature_maps.ranking == explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT
    assert list(sent.consistency.transforms) == [explain_pb2.TRANSFORM_HFLIP, explain_pb2.TRANSFORM_SHIFT]
    [record] = json.loads((out_dir / "summary.json").read_text())["images"]
    assert [f["channel"] for f in record["feature_maps"]] == [0, 1]
    assert [c["transform"] for c in record["consistency"]] == ["hflip", "shift"]
    saved = {Path(f["npy"]).name for f in record["files"]}
    assert {"feature_layer2_c0_t-1.npy", "consistency_gradcam_layer2_t0_hflip.npy"} <= saved
    assert np.load(out_dir / "maps" / "one" / "feature_layer2_c1_t-1.npy").shape == (4, 4)
    page = (out_dir / "index.html").read_text()
    assert "feature maps (top channels by mean activation)" in page
    assert "consistency: the same maps" in page and "rho 0.500" in page and "IoU nan" in page
    pictures = sorted(p.name for p in (out_dir / "gallery").rglob("*.png"))
    assert any(n.startswith("feature_layer2_c1") for n in pictures)
    assert any(n.startswith("consistency_gradcam_layer2_t0_shift") for n in pictures)
    assert cli.run([*args[:-6], "--feature-maps", "0", *conn], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_USAGE
