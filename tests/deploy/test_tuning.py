"""The server's tuned worker environment (deploy/_tuning.py): defaults fill gaps, the caller's values win."""

from __future__ import annotations

from deploy._tuning import WORKER_ENV, server_env


def test_defaults_fill_what_the_environment_leaves_unset() -> None:
    env = server_env({"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == "1"
    assert "glibc.malloc.mmap_threshold=33554432" in env["GLIBC_TUNABLES"].split(":")
    assert "glibc.malloc.trim_threshold=1073741824" in env["GLIBC_TUNABLES"].split(":")


def test_the_environment_and_extra_win_over_the_defaults() -> None:
    env = server_env({"OMP_NUM_THREADS": "4"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["OMP_NUM_THREADS"] == "4" and env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert server_env({"OMP_NUM_THREADS": "4"}, {"OMP_NUM_THREADS": "2"})["OMP_NUM_THREADS"] == "2"


def test_an_empty_value_restores_the_library_default() -> None:
    env = server_env({"OMP_NUM_THREADS": ""}, {"GLIBC_TUNABLES": ""})
    assert "OMP_NUM_THREADS" not in env and "GLIBC_TUNABLES" not in env
    assert server_env({"OTHER": ""})["OTHER"] == ""  # only the tuned variables are dropped when empty
    assert set(WORKER_ENV) == {"OMP_NUM_THREADS", "GLIBC_TUNABLES"}
