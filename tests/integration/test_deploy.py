"""The deployment files say what we decided: loopback, auth on, model API off, limits that fit each other.

No server here: these read deploy/config.properties, the model configs and the rendered runtime config (the
container and Kubernetes files: tests/deploy/test_manifests.py).
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


CONFIG = ROOT / "deploy" / "config.properties"
MODEL_CONFIGS = sorted((ROOT / "model_store" / "configs").glob("*.yaml"))


def java_unescape(value: str) -> str:
    """What Java's Properties.load makes of a value (only the escapes our files use)."""
    return re.sub(r"\\(.)", r"\1", value)


@pytest.fixture(scope="module")
def props(serverctl_module: ModuleType) -> dict[str, str]:
    return serverctl_module.read_properties(CONFIG)


def test_every_listener_is_loopback_by_default(props: dict[str, str]) -> None:
    for key in ("inference_address", "management_address", "metrics_address"):
        assert urllib.parse.urlsplit(props[key]).hostname == "127.0.0.1", key
    assert props["grpc_inference_address"] == "127.0.0.1"
    assert props["grpc_management_address"] == "127.0.0.1"
    assert (props["grpc_inference_port"], props["grpc_management_port"]) == ("7070", "7071")


def test_security_switches(props: dict[str, str]) -> None:
    assert props.get("disable_token_authorization", "false") == "false"  # token auth on
    assert props["enable_model_api"] == "false"
    assert props["install_py_dep_per_model"] == "false"
    assert props["disable_system_metrics"] == "true"
    assert int(props["default_workers_per_model"]) == 1
    # TLS is documented, not enabled, on loopback.
    text = CONFIG.read_text()
    for option in ("enable_grpc_ssl", "certificate_file", "private_key_file"):
        assert re.search(rf"^# {option}=", text, re.M), option
        assert option not in props


def test_size_limits_fit_the_handler_limits(props: dict[str, str]) -> None:
    """The handler refuses oversize answers in band only if its cap is below TorchServe's (which kills)."""
    max_request, max_response = int(props["max_request_size"]), int(props["max_response_size"])
    assert max_request == max_response == 16 * 1024 * 1024
    assert MODEL_CONFIGS, "no model configs"
    for path in MODEL_CONFIGS:
        limits = yaml.safe_load(path.read_text())["camserve"]["limits"]
        assert limits["max_response_bytes"] < max_response, path.name
        assert max_response - limits["max_response_bytes"] >= 1_000_000, f"{path.name}: margin for framing"
        assert limits["max_image_bytes"] < max_request, f"{path.name}: one maximal image must fit a request"


def test_allowed_urls_only_admit_archives_in_the_store(tmp_path: Path, serverctl_module: ModuleType) -> None:
    store = tmp_path / "store (1)+x"  # regex metacharacters in the path must be literal
    store.mkdir()
    props = serverctl_module.render_config(tmp_path / "config.properties", model_store=store)
    pattern = re.compile(java_unescape(props["allowed_urls"]))
    assert pattern.fullmatch(f"file://{store}/shapes-classifier.mar")
    for url in (
        f"file://{store}/sub/x.mar",
        f"file://{store}/x.mar.zip",
        f"file://{tmp_path}/store (1)+xx/x.mar",
        "https://example.com/x.mar",
        "file:///etc/x.mar",
    ):
        assert not pattern.fullmatch(url), url
    assert props["model_store"] == str(store)


def test_render_with_bind_and_overrides(tmp_path: Path, serverctl_module: ModuleType) -> None:
    ctl = serverctl_module
    props = ctl.render_config(
        tmp_path / "c.properties", model_store=tmp_path, bind="0.0.0.0", overrides={"grpc_inference_port": 9000}
    )
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["grpc_management_address"] == "0.0.0.0"
    assert props["grpc_inference_port"] == "9000"
    assert props["max_response_size"] == "16777216"  # the template's decisions survive
    again = ctl.read_properties(tmp_path / "c.properties")
    assert again == props
    ep = ctl.Endpoints.from_properties(props)
    assert (ep.grpc, ep.rest, ep.grpc_management) == ("127.0.0.1:9000", "http://127.0.0.1:8080", "127.0.0.1:7071")


def test_free_port_overrides_follow_the_grpc_port_convention(serverctl_module: ModuleType) -> None:
    over = serverctl_module.free_port_overrides()
    assert int(over["grpc_management_port"]) == int(over["grpc_inference_port"]) + 1
    ports = {
        urllib.parse.urlsplit(over[k]).port for k in ("inference_address", "management_address", "metrics_address")
    }
    ports |= {int(over["grpc_inference_port"]), int(over["grpc_management_port"])}
    assert len(ports) == 5


def test_busy_port_is_named(serverctl_module: ModuleType) -> None:
    ctl = serverctl_module
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ctl.ServerError, match=rf"127\.0\.0\.1:{port} \(grpc_inference_port\)"):
            ctl.check_ports_free({"grpc_inference_port": str(port), "grpc_inference_address": "127.0.0.1"})


def test_read_properties_rejects_garbage(tmp_path: Path, serverctl_module: ModuleType) -> None:
    bad = tmp_path / "bad.properties"
    bad.write_text("# fine\nkey=value\nno equals sign here\n")
    with pytest.raises(serverctl_module.ServerError, match="not a key=value line"):
        serverctl_module.read_properties(bad)


def test_serverctl_cli_without_a_server(tmp_path: Path, serverctl_module: ModuleType) -> None:
    """stop/status on a run dir with no server, and start refusals that need no TorchServe, exit clearly."""
    ctl = serverctl_module
    run_dir = tmp_path / "run"
    assert ctl.main(["stop", "--run-dir", str(run_dir)]) == 0
    assert ctl.main(["status", "--run-dir", str(run_dir)]) == 1
    # A stale pid file (a process that is not this run dir's TorchServe) is not a running server.
    run_dir.mkdir()
    (run_dir / "torchserve.pid").write_text(f"{os.getpid()}\n")
    assert ctl.read_pid(run_dir) is None
    with pytest.raises(ctl.ServerError, match="does not exist: build archives first"):
        ctl.Server.start(run_dir=run_dir, model_store=tmp_path / "missing")
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(ctl.ServerError, match=r"no \.mar archives"):
        ctl.Server.start(run_dir=run_dir, model_store=store)
    (store / "a.mar").write_bytes(b"")
    with pytest.raises(ctl.ServerError, match=r"no archive for b in .* \(available: a\)"):
        ctl.Server.start(run_dir=run_dir, model_store=store, models=["b"])
