"""The benchmarks' device options: ``--device cuda`` refuses clearly without CUDA, and timings synchronise the device.

The CUDA branch is checked with ``torch.cuda`` faked (this machine has no GPU); the numbers themselves come from
running the benchmarks, never from a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _device import add_device_arguments, device_options, synchronizer
from _timing import measure


def _parse(*argv: str) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="bench")
    add_device_arguments(parser)
    return parser, parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--device", "cuda"), "CUDA is not available"),
        (("--device", "cuda:1", "--amp"), "CUDA is not available"),
        (("--device", "mps"), "must be cpu or cuda"),
        (("--device", "cuda:x"), "--device cuda:x"),
    ],
)
def test_an_unusable_device_is_refused_with_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser, args = _parse(*argv)
    with pytest.raises(SystemExit) as exit_:
        device_options(parser, args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_cuda_index_beyond_the_visible_devices_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    parser, args = _parse("--device", "cuda:1")
    with pytest.raises(SystemExit):
        device_options(parser, args)
    assert "only 1 CUDA device" in capsys.readouterr().err


def test_cuda_options_select_the_device_and_synchronise_it(monkeypatch: pytest.MonkeyPatch) -> None:
    selected: list[torch.device] = []
    synced: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    parser, args = _parse("--device", "cuda:1", "--amp", "--channels-last")
    dev = device_options(parser, args)
    assert dev.device == torch.device("cuda", 1) and selected == [dev.device]
    assert dev.amp and dev.channels_last and dev.memory_format == torch.channels_last
    sync = synchronizer(dev.device)
    assert sync is not None
    sync()
    assert synced == [dev.device]


def test_cpu_needs_no_synchronisation_and_keeps_the_defaults() -> None:
    parser, args = _parse()
    dev = device_options(parser, args)
    assert dev.device == torch.device("cpu") and not dev.amp and not dev.channels_last
    assert synchronizer(dev.device) is None


def test_every_clock_is_bracketed_by_the_sync() -> None:
    events: list[str] = []
    _, ratios = measure(
        lambda: events.append("forward"),
        {"a": lambda: events.append("a")},
        rounds=2,
        warmup=0,
        sync=lambda: events.append("sync"),
    )
    first = ["sync", "forward", "sync", "sync", "a", "sync"]
    second = ["sync", "a", "sync", "sync", "forward", "sync"]  # the order reverses every round
    assert events == first + second
    assert set(ratios) == {"a"}
