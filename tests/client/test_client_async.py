"""AsyncClient has the sync client's methods, arguments and behaviour (checked against the same fake)."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import camserve
import grpc
import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from conftest import LABELS, FakeServer, default_answer, free_port, start_fake

MODEL = "shapes-classifier"
PUBLIC = ["ping", "describe", "models", "explain", "explain_many", "close"]


@pytest.mark.parametrize("name", PUBLIC)
def test_same_methods_and_signatures(name: str) -> None:
    sync = inspect.signature(getattr(camserve.Client, name))
    aio = inspect.signature(getattr(camserve.AsyncClient, name))
    assert list(sync.parameters) == list(aio.parameters)
    for p in sync.parameters.values():
        assert aio.parameters[p.name].default == p.default and aio.parameters[p.name].kind == p.kind
    assert inspect.signature(camserve.Client.__init__).parameters.keys() == (
        inspect.signature(camserve.AsyncClient.__init__).parameters.keys()
    )
    if name != "explain_many":
        assert inspect.iscoroutinefunction(getattr(camserve.AsyncClient, name))


def test_explain_options_are_declared_once_and_documented() -> None:
    # both clients take the same typed options; the keys are the ones client/README.md and Client.explain document
    from camserve._options import ExplainManyArgs, ExplainOneArgs

    for name, options in (("explain", ExplainOneArgs), ("explain_many", ExplainManyArgs)):
        for cls in (camserve.Client, camserve.AsyncClient):
            parameter = inspect.signature(getattr(cls, name)).parameters["options"]
            assert parameter.kind is inspect.Parameter.VAR_KEYWORD
            assert parameter.annotation == f"Unpack[{options.__name__}]", (cls, name)
    readme = (Path(__file__).resolve().parents[2] / "client" / "README.md").read_text()
    signature = readme[readme.index("`explain(images, *, model, ") : readme.index("— one image gives")]
    documented = set(re.findall(r"(\w+)=", signature)) | {"timeout", "headers"}  # "each takes timeout= and headers="
    assert documented == set(ExplainOneArgs.__annotations__)
    docstring = camserve.Client.explain.__doc__ or ""
    assert all(f"``{key}``" in docstring for key in ExplainOneArgs.__annotations__)
    assert {"concurrency", "batch_size"} == set(ExplainManyArgs.__annotations__) - set(ExplainOneArgs.__annotations__)


CALLER = """\
import camserve

def use(client: camserve.Client, aio: camserve.AsyncClient) -> None:
    one: camserve.ExplainResult = client.explain("a.jpg", model="m", methods=["gradcam"], top_k=2)
    many: list[camserve.ExplainResult] = client.explain(["a.jpg"], model="m", request_id="r", timeout=5.0)
    client.explain("a.jpg", model="m", method="gradcam")
    client.explain("a.jpg", model="m", top_k="2")
    client.explain_many(["a.jpg"], model="m", request_id="r")
    aio.explain_many(["a.jpg"], model="m", concurrency=2, batch_size=2, strict=True)
    aio.explain(b"x", model="m", concurrency=2)
"""


def test_explain_options_are_typed_for_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # mypy --strict sees every keyword with its type (an IDE sees the same): misspelt, mistyped and misplaced
    # keywords are errors, the documented ones are not
    from mypy import api

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "caller.py").write_text(CALLER)
    monkeypatch.setenv("MYPYPATH", os.pathsep.join([str(root / "client"), str(root / "proto")]))
    args = ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), "--follow-imports", "silent"]
    report, _, _ = api.run([*args, "--ignore-missing-imports", "--python-version", "3.11", str(tmp_path / "caller.py")])
    errors = sorted({int(line.split(":")[1]) for line in report.splitlines() if ": error:" in line})
    assert errors == [6, 7, 8, 10], report
    assert 'did you mean "methods"' in report


@pytest.mark.asyncio
async def test_calls(fake: FakeServer, client_kwargs: dict[str, Any], png_file: Path) -> None:
    async with camserve.AsyncClient(fake.address, **client_kwargs) as client:
        assert await client.ping() == "Healthy"
        info = await client.describe(MODEL)
        assert info.labels == LABELS
        assert [m.name for m in await client.models()] == fake.models
        one = await client.explain(png_file, model=MODEL, methods=["gradcam", "saliency"], top_k=2)
        assert isinstance(one, camserve.ExplainResult) and one.targets == (0, 1)
        many = await client.explain([png_file, b"BAD"], model=MODEL)
        assert [r.ok for r in many] == [True, False]
        with pytest.raises(camserve.InvalidArgument):
            await client.explain(b"BAD", model=MODEL)
        with pytest.raises(camserve.NotFound):
            await client.explain(png_file, model="nope")


@pytest.mark.asyncio
async def test_explain_many_ordered_bounded_and_accepts_async_iterables(
    fake: FakeServer, client_kwargs: dict[str, Any], png_bytes: bytes
) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, context: object) -> explain_pb2.ExplainResponse:
        time.sleep(0.03 * (3 - int(request.images[0].id) % 4))
        return default_answer(request, model)

    fake.answer = answer

    async def images() -> AsyncIterator[np.ndarray]:
        for _ in range(13):
            yield np.zeros((8, 8, 3), np.uint8)

    async with camserve.AsyncClient(fake.address, **client_kwargs) as client:
        results = [r async for r in client.explain_many(images(), model=MODEL, concurrency=3, batch_size=2)]
        assert [r.index for r in results] == list(range(13))
        assert [float(r.map("gradcam").array.max()) for r in results] == [float(i + 1) for i in range(13)]
        assert 2 <= fake.max_in_flight <= 3
        sync_list = [r.index async for r in client.explain_many([np.zeros((4, 4, 3), np.uint8)] * 5, model=MODEL)]
        assert sync_list == [0, 1, 2, 3, 4]
        seen = []
        with pytest.raises(camserve.InvalidArgument) as info:
            async for r in client.explain_many([png_bytes, b"BAD"], model=MODEL, strict=True):
                seen.append(r.index)
        assert seen == [0] and info.value.field == "images[1].encoded"


@pytest.mark.asyncio
async def test_explain_many_early_exit_cancels_pending(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.delay = 0.05
    async with camserve.AsyncClient(fake.address, **client_kwargs) as client:
        stream = client.explain_many([np.zeros((4, 4, 3), np.uint8)] * 50, model=MODEL, concurrency=4)
        first = await anext(stream)
        assert first.index == 0
        await stream.aclose()
    assert fake.calls < 50


@pytest.mark.asyncio
async def test_retries_and_no_retries(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    async with camserve.AsyncClient(fake.address, retries=3, **client_kwargs) as client:
        fake.fail_unavailable = 2
        assert await client.ping() == "Healthy"
        assert fake.calls == 3
        fake.calls = 0
        fake.abort_code = grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(camserve.InvalidArgument):
            await client.explain(np.zeros((4, 4, 3), np.uint8), model=MODEL)
        assert fake.calls == 1


@pytest.mark.asyncio
async def test_deadline(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.delay = 1.0
    async with camserve.AsyncClient(fake.address, **client_kwargs) as client:
        started = time.monotonic()
        with pytest.raises(camserve.DeadlineExceeded):
            await client.explain(np.zeros((4, 4, 3), np.uint8), model=MODEL, timeout=0.2)
        assert time.monotonic() - started < 0.9
    assert fake.calls == 1


@pytest.mark.asyncio
async def test_server_started_late(client_kwargs: dict[str, Any]) -> None:
    port = free_port()
    started: list[FakeServer] = []
    timer = threading.Timer(0.3, lambda: started.append(start_fake(port)))
    timer.start()
    try:
        kwargs = {**client_kwargs, "backoff": 0.2, "management_address": f"127.0.0.1:{port}"}
        async with camserve.AsyncClient(f"127.0.0.1:{port}", retries=8, **kwargs) as client:
            assert await client.ping() == "Healthy"
    finally:
        timer.join()
        for s in started:
            s.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, camserve.Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, camserve.ResourceExhausted),
        (grpc.StatusCode.INTERNAL, camserve.Internal),
        (grpc.StatusCode.UNAVAILABLE, camserve.Unavailable),
    ],
)
async def test_error_mapping(
    fake: FakeServer, client_kwargs: dict[str, Any], status: grpc.StatusCode, cls: type[Exception]
) -> None:
    fake.abort_code = status
    async with camserve.AsyncClient(fake.address, retries=1, **client_kwargs) as client:
        with pytest.raises(cls):
            await client.explain(np.zeros((4, 4, 3), np.uint8), model=MODEL)


@pytest.mark.asyncio
async def test_token_metadata(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.token = "t0k"
    async with camserve.AsyncClient(fake.address, token="t0k", **client_kwargs) as client:
        assert await client.ping() == "Healthy"
    async with camserve.AsyncClient(fake.address, token="bad", **client_kwargs) as client:
        with pytest.raises(camserve.Unauthenticated):
            await client.ping()


@pytest.mark.asyncio
async def test_concurrent_explains_share_one_client(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    async with camserve.AsyncClient(fake.address, **client_kwargs) as client:
        images = [np.full((4, 4, 3), i, np.uint8) for i in range(6)]
        results = await asyncio.gather(*(client.explain(im, model=MODEL) for im in images))
    assert all(r.ok for r in results)
