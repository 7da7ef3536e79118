"""client.filters / AsyncClient.filters, `camserve filters` and gallery.write_filters against the in-process fake."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import camserve
import numpy as np
import pytest
from camserve import cli
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer, tensor

MODEL = "shapes-classifier"


def _answer(request: explain_pb2.FiltersRequest, model: str) -> explain_pb2.FiltersResponse:
    """conv1: 4 RGB kernels 3x3; block.conv: 8 kernels over 4 channels (values identify channel and position)."""
    reply = explain_pb2.FiltersResponse(model_name=model, model_version="1.0", request_id=request.request_id)
    reply.conv_layers.extend(["conv1", "block.conv"])
    for layer in request.layers or ["conv1"]:
        rgb = layer == "conv1"
        total = 4 if rgb else 8
        n = min(request.max_channels or total, total)
        shape = (n, 3, 3, 3) if rgb else (n, 3, 3)
        tiles = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        reply.filters.add(
            layer=layer,
            in_channels=3 if rgb else 4,
            out_channels=total,
            groups=1,
            kernel_height=3,
            kernel_width=3,
            rgb=rgb,
            tiles=tensor(tiles, explain_pb2.FLOAT32),
            norms=tensor(np.arange(1, n + 1, dtype=np.float32), explain_pb2.FLOAT32),
            connections=tensor(np.ones((n, 3 if rgb else 4), np.float32), explain_pb2.FLOAT32),
        )
    return reply


def test_filters_are_requested_and_decoded(client: camserve.Client, fake: FakeServer) -> None:
    fake.filters_answer = _answer
    result = client.filters(MODEL, layers=["conv1", "block.conv"], max_channels=3)
    [sent] = fake.filters_requests
    assert list(sent.layers) == ["conv1", "block.conv"] and sent.max_channels == 3 and sent.request_id
    assert result.model_name == MODEL and result.conv_layers == ("conv1", "block.conv")
    first, deeper = result.filters
    assert (first.rgb, first.kernel_size, first.out_channels, first.tiles.shape) == (True, (3, 3), 4, (3, 3, 3, 3))
    assert first.tile_images().shape == (3, 3, 3, 3) and first.tile_images().dtype == np.uint8
    assert deeper.tiles.shape == (3, 3, 3) and deeper.connections.shape == (3, 4)
    assert list(deeper.norms) == [1.0, 2.0, 3.0] and not deeper.norms.flags.writeable
    with pytest.raises(camserve.InvalidArgument):
        deeper.tile_images()
    client.filters(MODEL, layers="conv1")
    assert list(fake.filters_requests[-1].layers) == ["conv1"] and fake.filters_requests[-1].max_channels == 0


def test_async_filters(fake: FakeServer) -> None:
    fake.filters_answer = _answer

    async def go() -> camserve.Filters:
        async with camserve.AsyncClient(fake.address, timeout=10) as client:
            return await client.filters(MODEL)

    assert [f.layer for f in asyncio.run(go()).filters] == ["conv1"]


def test_the_servers_error_is_raised(client: camserve.Client, fake: FakeServer) -> None:
    with pytest.raises(camserve.InvalidArgument, match="no 2-D convolution"):
        client.filters(MODEL)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"layers": []}, "layers"),
        ({"layers": [""]}, "layers"),
        ({"layers": 3}, "layers"),
        ({"max_channels": 0}, "max_channels"),
        ({"max_channels": True}, "max_channels"),
    ],
)
def test_bad_arguments_are_refused_before_sending(
    client: camserve.Client, fake: FakeServer, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(camserve.InvalidArgument) as info:
        client.filters(MODEL, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field and not fake.filters_requests


def test_a_malformed_answer_is_the_servers_fault(client: camserve.Client, fake: FakeServer) -> None:
    def bad(request: explain_pb2.FiltersRequest, model: str) -> explain_pb2.FiltersResponse:
        reply = _answer(request, model)
        reply.filters[0].norms.CopyFrom(tensor(np.ones(9, np.float32), explain_pb2.FLOAT32))
        return reply

    fake.filters_answer = bad
    with pytest.raises(camserve.Internal, match="inconsistent shapes"):
        client.filters(MODEL)


def test_cli_filters_writes_arrays_and_a_page(fake: FakeServer, tmp_path: Path) -> None:
    fake.filters_answer = _answer
    out, err = io.StringIO(), io.StringIO()
    conn = ["--address", fake.address, "--management-address", fake.address, "--timeout", "10"]
    folder = tmp_path / "filters"
    args = ["filters", MODEL, "--layer", "conv1", "--layer", "block.conv", "--out", str(folder), *conn]
    assert cli.run(args, out=out, err=err) == cli.EXIT_OK
    assert "conv1: 4 kernels 3x3x3 (4 shown, RGB tiles)" in out.getvalue()
    assert "2 convolutions in shapes-classifier" in out.getvalue()
    assert np.load(folder / "block.conv_connections.npy").shape == (8, 4)
    page = (folder / "index.html").read_text()
    assert "kernels as RGB (grey = 0)" in page and "spatial profile per output channel" in page
    assert "connections: 8 output channels x 4 inputs" in page
    pictures = {p.name for p in (folder / "filters").iterdir()}
    assert {"conv1_c0.png", "block.conv_c7.png", "block.conv_connections.png"} <= pictures
    assert cli.run(["filters", MODEL, "--max-channels", "0", *conn], out=out, err=err) == cli.EXIT_USAGE
    fake.filters_answer = None
    assert cli.run(["filters", MODEL, "--out", str(folder), *conn], out=out, err=err) == cli.EXIT_REJECTED
