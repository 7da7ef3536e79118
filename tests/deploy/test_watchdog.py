"""The gateway's watchdog without a server: worker counts, stall detection and restoring, on a fake clock."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from deploy._watchdog import Watchdog, Workers, parse_description

MODEL = "m"


def description(statuses: list[str], min_workers: int = 1, max_workers: int = 1) -> str:
    workers = [{"id": str(9000 + i), "status": s} for i, s in enumerate(statuses)]
    return json.dumps([{"modelName": MODEL, "minWorkers": min_workers, "maxWorkers": max_workers, "workers": workers}])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watchdog(clock: Clock, stall_after: float = 30.0) -> Watchdog:
    dog = Watchdog(management=None, key_file=None, interval=1.0, stall_after=stall_after, clock=clock)  # type: ignore[arg-type]
    dog.wanted[MODEL] = Workers(listed=1, ready=1, min_workers=1, max_workers=2)
    return dog


def test_parse_description_counts_ready_workers() -> None:
    assert parse_description(description(["READY", "UNLOADING", "READY"], 2, 4)) == Workers(3, 2, 2, 4)
    assert parse_description(description([], 0, 0)) == Workers(0, 0, 0, 0)


def test_a_model_without_ready_workers_is_a_problem() -> None:
    dog = watchdog(Clock())
    assert dog.problems() == {}
    dog._seen[MODEL] = Workers(listed=1, ready=0, min_workers=1, max_workers=2)
    assert dog.problems() == {MODEL: "0 of 1 workers ready"}


def test_calls_in_progress_without_any_answer_for_too_long_are_a_stall() -> None:
    clock = Clock()
    dog = watchdog(clock, stall_after=30)
    dog.sent(MODEL)
    clock.now += 29
    dog.sent(MODEL)  # a second call does not restart the stall clock
    assert dog.problems() == {}
    clock.now += 2
    assert dog.problems() == {MODEL: "no answer for 31 s with 2 calls in progress"}
    dog.answered(MODEL)  # any answer is progress
    assert dog.problems() == {}
    clock.now += 31
    assert MODEL in dog.problems()  # one call still in progress, none answered since
    dog.answered(MODEL)
    clock.now += 1000
    assert dog.problems() == {}, "an idle model never stalls"


def test_check_restores_a_model_whose_workers_are_gone_and_leaves_restarts_alone() -> None:
    dog = watchdog(Clock())
    answers = {"DescribeModel": description([], 0, 0)}
    scaled: list[bytes] = []

    async def call(method: str, request: bytes) -> str:
        if method == "ScaleWorker":
            scaled.append(request)
            return '{"status": "scaled"}'
        return answers[method]

    dog._call = call  # type: ignore[method-assign]
    asyncio.run(dog.check_once())
    assert len(scaled) == 1 and dog.restores == 1
    from camserve_proto.org.pytorch.serve.grpc.management import management_pb2

    request = management_pb2.ScaleWorkerRequest.FromString(scaled[0])
    assert (request.model_name, request.min_worker, request.max_worker) == (MODEL, 1, 2)
    assert dog.problems() == {MODEL: "0 of 1 workers ready"}
    answers["DescribeModel"] = description(["UNLOADING"])  # TorchServe restarting its worker: not ours to touch
    asyncio.run(dog.check_once())
    assert len(scaled) == 1 and dog.problems() == {MODEL: "0 of 1 workers ready"}
    answers["DescribeModel"] = description(["READY"])
    asyncio.run(dog.check_once())
    assert dog.problems() == {}


def test_a_failed_describe_keeps_the_last_known_state(caplog: pytest.LogCaptureFixture) -> None:
    dog = watchdog(Clock())

    async def call(method: str, request: bytes) -> Any:
        raise OSError("connection refused")

    dog._call = call  # type: ignore[method-assign]
    asyncio.run(dog.check_once())
    assert "cannot describe m" in caplog.text and dog.problems() == {}
