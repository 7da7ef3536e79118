"""explain_many against the in-process fake: input order, bounded concurrency, lazy input, errors in band."""

from __future__ import annotations

import threading
import time
from typing import Any

import camserve
import grpc
import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer, default_answer

MODEL = "shapes-classifier"


def test_explain_many_is_ordered_and_bounded(client: camserve.Client, fake: FakeServer) -> None:
    # later requests answer faster than earlier ones, so completion order differs from input order
    def answer(request: explain_pb2.ExplainRequest, model: str, context: object) -> explain_pb2.ExplainResponse:
        first = int(request.images[0].id)
        time.sleep(0.05 * (3 - first % 4))
        return default_answer(request, model)

    fake.answer = answer
    images = (np.zeros((8, 8, 3), np.uint8) for _ in range(23))  # a generator: read lazily
    results = list(client.explain_many(images, model=MODEL, concurrency=3, batch_size=2))
    assert [r.index for r in results] == list(range(23))
    assert [r.id for r in results] == [str(i) for i in range(23)]
    # each map carries its image index + 1 (see the fake): results belong to their own images
    assert [float(r.map("gradcam").array.max()) for r in results] == [float(i + 1) for i in range(23)]
    assert fake.max_in_flight <= 3 and fake.max_in_flight >= 2
    assert [len(r.images) for r in fake.requests].count(2) == 11


def test_explain_many_reads_input_lazily(client: camserve.Client) -> None:
    pulled: list[int] = []

    def images() -> Any:
        for i in range(100):
            pulled.append(i)
            yield np.zeros((8, 8, 3), np.uint8)

    stream = client.explain_many(images(), model=MODEL, concurrency=2)
    first = next(stream)
    assert first.index == 0
    assert len(pulled) <= 4  # bounded look-ahead, not the whole stream
    stream.close()


def test_explain_many_bad_images_in_band_and_strict(client: camserve.Client, png_bytes: bytes) -> None:
    items = [png_bytes, b"BAD", "/no/such/file.png", png_bytes]
    results = list(client.explain_many(items, model=MODEL, batch_size=3))
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].error is not None and results[1].error.field == "images[1].encoded"
    # server field paths are renumbered from the request's positions to the stream's
    later = list(client.explain_many([png_bytes, png_bytes, png_bytes, b"BAD"], model=MODEL, batch_size=2))
    assert later[3].error is not None and later[3].error.field == "images[3].encoded"
    stream = client.explain_many(items, model=MODEL, strict=True)
    assert next(stream).ok
    with pytest.raises(camserve.InvalidArgument):
        next(stream)


def test_explain_many_request_level_errors_raise(client: camserve.Client, fake: FakeServer) -> None:
    with pytest.raises(camserve.InvalidArgument, match="unknown method"):
        list(client.explain_many([np.zeros((8, 8, 3), np.uint8)] * 3, model=MODEL, methods=["bogus"]))
    fake.abort_code = grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(camserve.Unauthenticated):
        list(client.explain_many([np.zeros((8, 8, 3), np.uint8)] * 3, model=MODEL))


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"batch_size": 0}, {"concurrency": 1.5}, {"model": ""}])
def test_explain_many_validates_eagerly(client: camserve.Client, kwargs: dict[str, Any]) -> None:
    args = {"model": MODEL, **kwargs}
    with pytest.raises(camserve.InvalidArgument):
        client.explain_many([], **args)  # raises at the call, not at the first next()


def test_explain_many_empty_input(client: camserve.Client, fake: FakeServer) -> None:
    assert list(client.explain_many([], model=MODEL)) == []
    assert fake.calls == 0


def test_client_is_thread_safe(client: camserve.Client) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            r = client.explain(np.full((8, 8, 3), i, np.uint8), model=MODEL)
            assert r.ok
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
