"""client.visualize / visualize_rounds / AsyncClient.visualize against the in-process fake: sent, decoded, refused."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import camserve
import numpy as np
import pytest
from camserve import cli
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer

MODEL = "shapes-classifier"


def test_every_option_is_sent_and_the_answer_decoded(client: camserve.Client, fake: FakeServer) -> None:
    v = client.visualize(
        MODEL,
        target="square",
        steps=50,
        lr=0.1,
        l2=0.0,
        jitter=0,
        blur_every=0,
        blur_sigma=1.0,
        seed=3,
        deadline_ms=500,
    )
    [sent] = fake.visualize_requests
    assert sent.class_name == "square" and sent.steps == 50 and sent.learning_rate == pytest.approx(0.1)
    assert sent.HasField("l2_decay") and sent.l2_decay == 0.0  # an explicit 0 travels as set
    assert sent.HasField("jitter") and sent.jitter == 0 and sent.HasField("blur_every") and sent.blur_every == 0
    assert (sent.blur_sigma, sent.seed, sent.deadline_ms) == (1.0, 3, 500) and sent.request_id
    assert v.image.shape == (32, 32, 3) and not v.image.flags.writeable
    assert np.allclose(v.image, 0.6) and v.scores == pytest.approx((0.5, 0.6))
    assert (v.steps, v.stopped, v.elapsed_ms, v.model_name) == (50, "steps", 12.5, MODEL)
    assert v.predictions[0].label == "square"
    client.visualize(MODEL, layer="layer2", channel=4)
    last = fake.visualize_requests[-1]
    assert (last.channel.layer, last.channel.channel) == ("layer2", 4)
    assert not last.HasField("l2_decay") and not last.HasField("jitter")  # unset: the server's defaults


def test_rounds_continue_from_the_previous_image(client: camserve.Client, fake: FakeServer) -> None:
    rounds = list(client.visualize_rounds(MODEL, rounds=3, target=1, steps=10))
    assert [round(float(r.image.mean()), 3) for r in rounds] == [0.6, 0.7, 0.8]
    assert not fake.visualize_requests[0].HasField("init") and fake.visualize_requests[2].HasField("init")
    with pytest.raises(camserve.InvalidArgument) as info:
        next(client.visualize_rounds(MODEL, rounds=0, target=1))
    assert info.value.field == "rounds"


def test_async_visualize(fake: FakeServer) -> None:
    async def go() -> camserve.Visualization:
        async with camserve.AsyncClient(fake.address, timeout=10) as client:
            return await client.visualize(MODEL, target=2)

    assert asyncio.run(go()).stopped == "steps" and fake.visualize_requests[-1].class_id == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "target"),
        ({"target": 1, "layer": "l", "channel": 0}, "target"),
        ({"target": -1}, "target"),
        ({"layer": "layer2"}, "channel"),
        ({"target": 1, "steps": 0}, "steps"),
        ({"target": 1, "lr": float("nan")}, "lr"),
        ({"target": 1, "jitter": -2}, "jitter"),
        ({"target": 1, "seed": -1}, "seed"),
        ({"target": 1, "deadline_ms": 0}, "deadline_ms"),
        ({"target": 1, "init": np.zeros((4, 4))}, "init"),
    ],
)
def test_bad_arguments_are_refused_before_sending(
    client: camserve.Client, fake: FakeServer, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(camserve.InvalidArgument) as info:
        client.visualize(MODEL, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field and not fake.visualize_requests


def test_an_unknown_keyword_is_a_type_error(client: camserve.Client, fake: FakeServer) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'step'"):
        client.visualize(MODEL, target=1, step=5)  # type: ignore[call-arg]
    assert not fake.visualize_requests


def test_the_servers_refusal_is_raised(client: camserve.Client, fake: FakeServer) -> None:
    def refuse(request: explain_pb2.VisualizeRequest, model: str) -> explain_pb2.VisualizeResponse:
        reply = explain_pb2.VisualizeResponse()
        reply.error.code, reply.error.message, reply.error.field = "RESOURCE_EXHAUSTED", "too many", "steps"
        return reply

    fake.visualize_answer = refuse
    with pytest.raises(camserve.ResourceExhausted) as info:
        client.visualize(MODEL, target=1, steps=10_000)
    assert info.value.field == "steps"


def test_cli_visualize_rounds_and_page(fake: FakeServer, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    conn = ["--address", fake.address, "--management-address", fake.address, "--timeout", "10"]
    folder = tmp_path / "vis"
    args = ["visualize", MODEL, "--target", "ring", "--channel", "layer2:3", "--rounds", "2", "--out", str(folder)]
    assert cli.run([*args, *conn], out=out, err=err) == cli.EXIT_OK, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("class ring round 1: score 0.5 -> 0.6") and "layer2 channel 3 round 2" in lines[3]
    assert [r.HasField("channel") for r in fake.visualize_requests] == [False, False, True, True]
    page = (folder / "index.html").read_text()
    assert "class ring: score 0.6 → 0.7 in 100 steps (steps); model: square 0.900" in page
    assert len(list((folder / "visualize").glob("*.png"))) == 2
    assert cli.run(["visualize", MODEL, *conn], out=out, err=err) == cli.EXIT_USAGE
    assert cli.run(["visualize", MODEL, "--channel", "layer2", *conn], out=out, err=err) == cli.EXIT_USAGE
