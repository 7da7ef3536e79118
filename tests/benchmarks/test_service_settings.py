"""The service benchmark's server settings from its options: ``--device``, threads, model overrides, pairs.

``--device cuda`` must refuse clearly on a machine without CUDA (this one) and, with CUDA (faked here), hand every
visible GPU to TorchServe; ``cpu`` pins ``number_of_gpu=0`` so a GPU host measures its CPU. No server starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from service_bench import _parser, _server_settings


def _settings(*argv: str) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    return _server_settings(_parser().parse_args(list(argv)))


def test_cuda_is_refused_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cuda: no CUDA device"):
        _settings("--device", "cuda")


def test_cuda_hands_every_gpu_to_torchserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    props, _, _ = _settings("--device", "cuda")
    assert props["number_of_gpu"] == "4"
    props, _, _ = _settings("--device", "cuda", "--set", "number_of_gpu=1")  # an explicit count wins
    assert props["number_of_gpu"] == "1"


def test_cpu_pins_no_gpu_and_options_map_to_settings() -> None:
    props, env, overrides = _settings("--threads", "2", "--workers", "2", "--batch-delay", "5",
                                      "--env", "GLIBC_TUNABLES=", "--set", "job_queue_size=10")  # fmt: skip
    assert props["number_of_gpu"] == "0" and props["job_queue_size"] == "10"
    assert env == {"GLIBC_TUNABLES": "", "OMP_NUM_THREADS": "2"}
    assert overrides == {"maxBatchDelay": 5, "minWorkers": 2}


@pytest.mark.parametrize("bad", ["novalue", "=x"])
def test_bad_pairs_are_refused(bad: str) -> None:
    with pytest.raises(SystemExit, match="--env expects key=value"):
        _settings("--env", bad)
