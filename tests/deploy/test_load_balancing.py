"""The SDK against a replicated service: client-side round_robin over two camserve servers behind one gRPC target.

Two real servers (TorchServe + gateway each, started by deploy.serverctl's ``Server`` on free loopback ports, token
authorization off as behind the cluster's proxy) serve shapes-classifier; one client reaches both through the
static-list target ``ipv4:127.0.0.1:P1,127.0.0.1:P2`` (what a headless Service's ``dns:///`` target resolves to).
Which server answered a call is read from its own TorchServe access log (one ``InferenceAPIsService/Predictions``
line per upstream call). Without a server: the option's validation and the management targets it derives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import camserve
import numpy as np
import pytest
from camserve import cli
from camserve._transport import load_balancing_options, management_address_for

from deploy import serverctl
from tests.conftest import java_major

MODEL = "shapes-classifier"
PREDICTIONS = "InferenceAPIsService/Predictions"


def test_management_targets_follow_every_address() -> None:
    assert management_address_for("127.0.0.1:7070") == "127.0.0.1:7071"
    assert management_address_for("dns:///camserve-headless.ml.svc:7070") == "dns:///camserve-headless.ml.svc:7071"
    assert management_address_for("ipv4:10.0.0.1:7070,10.0.0.2:9000") == "ipv4:10.0.0.1:7071,10.0.0.2:9001"
    assert management_address_for("ipv6:[::1]:7070,[fe80::1]:7070") == "ipv6:[::1]:7071,[fe80::1]:7071"
    for bad in ("ipv4:10.0.0.1:7070,10.0.0.2", "ipv4:", "camserve", "dns:///camserve"):
        with pytest.raises(camserve.InvalidArgument, match="management_address=") as info:
            management_address_for(bad)
        assert info.value.field == "address"


def test_load_balancing_option_is_validated() -> None:
    assert load_balancing_options(None) == []
    ((key, value),) = load_balancing_options("round_robin")
    assert key == "grpc.service_config" and value == '{"loadBalancingConfig": [{"round_robin": {}}]}'
    for bad in ("roundrobin", "", "grpclb", "ROUND_ROBIN"):
        with pytest.raises(camserve.InvalidArgument, match="load_balancing must be one of pick_first, round_robin"):
            camserve.Client("127.0.0.1:1", load_balancing=bad)
    with camserve.Client("ipv4:127.0.0.1:1,127.0.0.1:3", load_balancing="round_robin") as client:
        assert client.management_address == "ipv4:127.0.0.1:2,127.0.0.1:4"
    args = cli._parser().parse_args(["ping", "--address", "dns:///camserve:7070", "--load-balancing", "round_robin"])
    with cli._client(args) as client:
        assert client.load_balancing == "round_robin" and client.management_address == "dns:///camserve:7071"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["ping", "--load-balancing", "random"])


def _predictions(server: serverctl.Server) -> int:
    """Upstream Predictions calls TorchServe has logged so far."""
    log = server.log_dir / "access_log.log"
    return log.read_text(encoding="utf-8").count(PREDICTIONS) if log.exists() else 0


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[serverctl.Server]]:
    major = java_major()
    if major is None or major < 17:
        pytest.skip(f"TorchServe needs Java 17+ (found {major or 'none'})")
    from model_store import archive

    store = tmp_path_factory.mktemp("archives")
    archive.build(MODEL, store)
    servers: dict[int, serverctl.Server] = {}
    errors: list[BaseException] = []

    def start(index: int, run_dir: Path) -> None:
        try:
            servers[index] = serverctl.Server.start(
                run_dir=run_dir, model_store=store, models=[MODEL], timeout=300,
                overrides={**serverctl.free_port_overrides(), "disable_token_authorization": "true"},
            )  # fmt: skip
        except BaseException as exc:  # reported below, after both starts ended
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i, tmp_path_factory.mktemp(f"server{i}"))) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if errors:
            raise errors[0]
        yield [servers[0], servers[1]]
    finally:
        for server in servers.values():
            server.stop()


def _explain(client: camserve.Client, n: int) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    for _ in range(n):
        result = client.explain(image, model=MODEL, methods=["gradcam"])
        assert result.ok and result.maps, result.error


def test_round_robin_spreads_calls_and_survives_a_stopped_server(two_servers: list[serverctl.Server]) -> None:
    first, second = two_servers
    target = f"ipv4:{first.endpoints.grpc},{second.endpoints.grpc}"

    # grpcio's default policy (pick_first) sends every call to one server: the option is what spreads them.
    before = [_predictions(s) for s in two_servers]
    with camserve.Client(target, timeout=60) as client:
        _explain(client, 6)
    picked = [_predictions(s) - b for s, b in zip(two_servers, before, strict=True)]
    assert sorted(picked) == [0, 6], f"pick_first split {picked}"

    with camserve.Client(target, timeout=60, load_balancing="round_robin") as client:
        assert client.ping() == "Healthy"
        before = [_predictions(s) for s in two_servers]
        _explain(client, 20)
        split = [_predictions(s) - b for s, b in zip(two_servers, before, strict=True)]
        print(f"\nround_robin split of 20 calls over two servers: {split}")
        assert sum(split) == 20 and min(split) >= 8, f"round_robin split {split}"

        second.stop()
        before_first = _predictions(first)
        _explain(client, 10)  # every call succeeds: the stopped server's address is left out
        answered = _predictions(first) - before_first
        print(f"after stopping the second server: 10 of 10 calls answered, {answered} by the first")
        assert answered == 10
