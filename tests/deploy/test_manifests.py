"""The container and cluster files agree with the server they run: ports, models, probes, secrets, requirements.

Every YAML file under deploy/k8s/ is parsed with PyYAML. The camserve container's environment is rendered the way
the image's entry point renders it (deploy.serverctl's env_overrides + render_config + the gateway plan), so the
checks compare the proxy's routes with the ports TorchServe and the gateway will really listen on. No cluster, no
image build, no server.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import serverctl
from deploy._server import gateway_plan
from deploy.gateway import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENVOY_CONFIG = K8S / "base" / "envoy.yaml"
INFERENCE_PREFIX = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _by_kind(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in _docs(path)}


BASE = _by_kind(K8S / "base" / "camserve.yaml")
DEPLOYMENT = BASE[("Deployment", "camserve")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in POD["containers"]}
ENVOY = yaml.safe_load(ENVOY_CONFIG.read_text(encoding="utf-8"))
(ISVC,) = _docs(K8S / "kserve-inferenceservice.yaml")
(KSERVE,) = ISVC["spec"]["predictor"]["containers"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", [])}


def _rendered(container: dict[str, Any], tmp_path: Path) -> tuple[dict[str, str], GatewayConfig]:
    """TorchServe's config and the gateway's, as the image's entry point (``--bind 0.0.0.0``) makes them."""
    assert re.search(r'ENTRYPOINT \[.*"--bind", "0\.0\.0\.0"\]', DOCKERFILE.read_text(encoding="utf-8"))
    overrides = serverctl.env_overrides(_env(container))
    props = serverctl.render_config(
        tmp_path / "c.properties", model_store=tmp_path, bind="0.0.0.0", overrides=overrides
    )
    gateway, behind = gateway_plan(props, tmp_path)
    props = serverctl.render_config(
        tmp_path / "c.properties", model_store=tmp_path, bind="0.0.0.0", overrides={**overrides, **behind}
    )
    return props, gateway


def _port(target: str) -> int:
    return int(target.rpartition(":")[2])


def _host(target: str) -> str:
    return target.rpartition(":")[0].removeprefix("http://").removeprefix("https://")


def _listeners() -> dict[str, dict[str, Any]]:
    return {listener["name"]: listener for listener in ENVOY["static_resources"]["listeners"]}


def _manager(listener: dict[str, Any]) -> dict[str, Any]:
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    assert manager["name"] == "envoy.filters.network.http_connection_manager"
    return dict(manager["typed_config"])


def _cluster_port(name: str) -> int:
    (cluster,) = [c for c in ENVOY["static_resources"]["clusters"] if c["name"] == name]
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address["address"] == "127.0.0.1", f"{name}: the proxy reaches camserve over loopback only"
    return int(address["port_value"])


def _routes(listener: str) -> list[dict[str, Any]]:
    (host,) = _manager(_listeners()[listener])["route_config"]["virtual_hosts"]
    return list(host["routes"])


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def test_every_manifest_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert {f.relative_to(K8S).as_posix() for f in files} >= {
        "base/kustomization.yaml", "base/camserve.yaml", "base/envoy.yaml", "gpu/kustomization.yaml", "gpu/gpu.yaml",
        "kserve-inferenceservice.yaml",
    }  # fmt: skip
    for path in files:
        for doc in _docs(path):
            assert ("kind" in doc and "apiVersion" in doc) or "static_resources" in doc, path
    kinds = {kind for kind, _ in BASE}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["resources"] == ["camserve.yaml"]
    (generated,) = kustomization["configMapGenerator"]
    assert generated["files"] == ["envoy.yaml"]
    config_volume = next(v for v in POD["volumes"] if v["name"] == "envoy-config")
    assert config_volume["configMap"]["name"] == generated["name"]
    assert _mounts(CONTAINERS["envoy"])["envoy-config"] + "/envoy.yaml" in CONTAINERS["envoy"]["args"]


def test_only_the_proxy_listens_beyond_loopback(tmp_path: Path) -> None:
    """Every TorchServe and gateway listener of the pod is on 127.0.0.1; Envoy holds the two public ports."""
    props, gateway = _rendered(CONTAINERS["camserve"], tmp_path)
    for key in ("inference_address", "management_address", "metrics_address"):
        assert _host(props[key]) == "127.0.0.1", key
    for key in ("grpc_inference_address", "grpc_management_address"):
        assert props[key] == "127.0.0.1", key
    for target in (gateway.inference, gateway.management, gateway.upstream_inference, gateway.upstream_management):
        assert _host(target) == "127.0.0.1", target
    public = {listener["address"]["socket_address"]["port_value"] for listener in _listeners().values()}
    inside = {_port(props[k]) for k in ("inference_address", "management_address", "metrics_address")}
    assert not public & (inside | {_port(gateway.inference), _port(gateway.management)}), "a port is bound twice"
    assert ENVOY["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_the_proxy_routes_grpc_to_the_gateway_and_rest_to_torchserve(tmp_path: Path) -> None:
    props, gateway = _rendered(CONTAINERS["camserve"], tmp_path)
    assert _cluster_port("gateway") == _port(gateway.inference)
    assert _cluster_port("torchserve_rest") == _port(props["inference_address"])
    grpc_routes = _routes("grpc")
    assert [r["match"]["prefix"] for r in grpc_routes] == [INFERENCE_PREFIX]  # management is not routed
    assert {r["route"]["cluster"] for r in grpc_routes} == {"gateway"}
    assert grpc_routes[0]["route"]["timeout"] == "0s"  # the caller's deadline bounds a call, not a route timeout
    rest = {r["match"].get("prefix") or r["match"]["path"]: r["route"]["cluster"] for r in _routes("rest")}
    assert rest == {"/predictions/": "torchserve_rest", "/ping": "torchserve_rest"}
    clusters = {c["name"] for c in ENVOY["static_resources"]["clusters"]}
    assert clusters == {"gateway", "torchserve_rest"}  # no way to the management or metrics ports


def test_services_expose_grpc_and_rest_only() -> None:
    envoy_ports = {p["name"]: p["containerPort"] for p in CONTAINERS["envoy"]["ports"]}
    assert envoy_ports == {"grpc": 7070, "http": 8080}
    assert "ports" not in CONTAINERS["camserve"], "the camserve container must not publish a port"
    listener_ports = {n: lst["address"]["socket_address"]["port_value"] for n, lst in _listeners().items()}
    assert listener_ports == {"grpc": envoy_ports["grpc"], "rest": envoy_ports["http"]}
    labels = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert DEPLOYMENT["spec"]["template"]["metadata"]["labels"] == labels
    service = BASE[("Service", "camserve")]["spec"]
    assert service["selector"] == labels
    assert {(p["port"], p["targetPort"]) for p in service["ports"]} == {(7070, "grpc"), (8080, "http")}
    headless = BASE[("Service", "camserve-headless")]["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == labels
    assert [(p["port"], p["targetPort"]) for p in headless["ports"]] == [(7070, "grpc")]
    policy = BASE[("NetworkPolicy", "camserve")]["spec"]
    assert policy["podSelector"]["matchLabels"] == labels
    (rule,) = policy["ingress"]
    assert {p["port"] for p in rule["ports"]} == set(envoy_ports.values())
    # config.properties' gRPC inference port is the one clients know (7070) on the Service and in KServe.
    props = serverctl.read_properties(ROOT / "deploy" / "config.properties")
    assert int(props["grpc_inference_port"]) == envoy_ports["grpc"] == KSERVE["ports"][0]["containerPort"]
    assert _port(props["inference_address"]) == envoy_ports["http"]


def test_autoscaler_and_disruption_budget_follow_the_deployment() -> None:
    labels = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    hpa = BASE[("HorizontalPodAutoscaler", "camserve")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "camserve"}
    assert 2 <= hpa["minReplicas"] <= DEPLOYMENT["spec"]["replicas"] <= hpa["maxReplicas"]
    pdb = BASE[("PodDisruptionBudget", "camserve")]["spec"]
    assert pdb["selector"]["matchLabels"] == labels
    assert pdb["maxUnavailable"] < hpa["minReplicas"], "a drain must leave a pod serving"


def _status_probe(probe: dict[str, Any]) -> list[str]:
    command = list(probe["exec"]["command"])
    assert command[:4] == ["python", "-m", "deploy.serverctl", "status"], command
    return command


def test_probes_ask_serverctl_status_in_the_images_run_dir() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    run_dir = re.search(r'"--run-dir", "([^"]+)"', dockerfile)
    assert run_dir, "the entry point names its run dir"
    for container in (CONTAINERS["camserve"], KSERVE):
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind not in container:
                assert container is KSERVE and kind == "startupProbe", kind
                continue
            command = _status_probe(container[kind])
            assert command[command.index("--run-dir") + 1] == run_dir.group(1), kind
    assert f'"status", "--run-dir", "{run_dir.group(1)}"' in dockerfile  # the image's HEALTHCHECK
    for kind in ("readinessProbe", "livenessProbe"):
        assert CONTAINERS["envoy"][kind]["tcpSocket"]["port"] == "grpc"


def test_secrets_are_mounted_where_the_proxy_reads_them() -> None:
    volumes = {v["name"]: v for v in POD["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "camserve-tls"
    assert volumes["token"]["secret"]["secretName"] == "camserve-token"
    mounts = _mounts(CONTAINERS["envoy"])
    assert "tls" not in _mounts(CONTAINERS["camserve"]) and "token" not in _mounts(CONTAINERS["camserve"])
    for listener in _listeners().values():
        (chain,) = listener["filter_chains"]
        context = chain["transport_socket"]["typed_config"]["common_tls_context"]
        (certificate,) = context["tls_certificates"]
        assert certificate["certificate_chain"]["filename"] == f"{mounts['tls']}/tls.crt"
        assert certificate["private_key"]["filename"] == f"{mounts['tls']}/tls.key"
        assert certificate["watched_directory"]["path"] == mounts["tls"]
        lua = _manager(listener)["http_filters"][0]
        assert lua["name"] == "envoy.filters.http.lua"
        code = lua["typed_config"]["default_source_code"]["inline_string"]
        assert f'KEY_FILE = "{mounts["token"]}/key_file.json"' in code
        assert '["grpc-status"] = "7"' in code  # PERMISSION_DENIED, what TorchServe answers a wrong key
    # The image's documented TLS paths are the Secret's (config.properties' commented options, the Dockerfile).
    text = (ROOT / "deploy" / "config.properties").read_text(encoding="utf-8")
    assert (
        "# certificate_file=/etc/camserve/tls/tls.crt" in text
        and "# private_key_file=/etc/camserve/tls/tls.key" in text
    )
    assert "/etc/camserve/tls" in DOCKERFILE.read_text(encoding="utf-8")
    # TorchServe's own keys differ per pod: its token authorization is off behind the proxy's check.
    for container in (CONTAINERS["camserve"], KSERVE):
        assert serverctl.env_overrides(_env(container))["disable_token_authorization"] == "true"


def test_http2_limits_and_overload_protection_at_the_proxy() -> None:
    job_queue = int(serverctl.read_properties(ROOT / "deploy" / "config.properties")["job_queue_size"])
    for listener in _listeners().values():
        limits = _manager(listener)["http2_protocol_options"]
        assert 0 < limits["max_concurrent_streams"] <= job_queue
        assert limits["max_consecutive_inbound_frames_with_empty_payload"] == 1
        assert "max_outbound_control_frames" in limits
    (layer,) = ENVOY["layered_runtime"]["layers"]
    overload = layer["static_layer"]["overload"]
    assert (
        overload["premature_reset_total_stream_count"] > 0
        and overload["premature_reset_min_stream_lifetime_seconds"] > 0
    )
    assert 0 < layer["static_layer"]["http"]["max_requests_per_io_cycle"] <= 100
    actions = {a["name"] for a in ENVOY["overload_manager"]["actions"]}
    assert {
        "envoy.overload_actions.reset_high_memory_stream",
        "envoy.overload_actions.stop_accepting_requests",
    } <= actions
    heap = ENVOY["overload_manager"]["resource_monitors"][0]["typed_config"]["max_heap_size_bytes"]
    limit = CONTAINERS["envoy"]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and heap < int(limit[:-2]) * 2**20, "the overload manager acts below the memory limit"


def test_models_are_the_archives() -> None:
    from model_store import archive

    configs = {p.stem for p in (ROOT / "model_store" / "configs").glob("*.yaml")}
    assert set(archive.available()) <= configs
    for container in (CONTAINERS["camserve"], KSERVE):
        models = serverctl.env_models(_env(container))
        assert models is not None and set(models) == configs, models
        for name in models:
            config = archive.load_config(name)
            assert config["minWorkers"] == config["maxWorkers"] == 1, f"{name}: one worker per pod (per GPU)"


def test_gpu_overlay_asks_one_gpu_per_pod() -> None:
    kustomization = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["resources"] == ["../base"]
    (image,) = kustomization["images"]
    assert image["name"] == CONTAINERS["camserve"]["image"].partition(":")[0]
    assert f"-t {image['name']}:{image['newTag']}" in DOCKERFILE.read_text(encoding="utf-8")
    (patch,) = kustomization["patches"]
    (deployment,) = _docs(K8S / "gpu" / patch["path"])
    assert (deployment["kind"], deployment["metadata"]["name"]) == ("Deployment", DEPLOYMENT["metadata"]["name"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] in CONTAINERS
    assert (
        container["resources"]["limits"]["nvidia.com/gpu"] == container["resources"]["requests"]["nvidia.com/gpu"] == 1
    )
    assert serverctl.env_overrides(_env(container)) == {"number_of_gpu": "1"}
    assert serverctl.env_overrides(_env(CONTAINERS["camserve"]))["number_of_gpu"] == "0"  # the CPU base
    assert "nvidia.com/gpu" not in str(CONTAINERS["camserve"]["resources"])
    assert KSERVE["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert KSERVE["image"] == f"{image['name']}:{image['newTag']}"


def test_kserve_serves_the_gateway_and_keeps_the_rest_on_loopback(tmp_path: Path) -> None:
    assert ISVC["apiVersion"] == "serving.kserve.io/v1beta1" and ISVC["kind"] == "InferenceService"
    assert KSERVE["ports"] == [{"name": "h2c", "containerPort": 7070, "protocol": "TCP"}]
    props, gateway = _rendered(KSERVE, tmp_path)
    assert gateway.inference == "0.0.0.0:7070"  # the gateway, never TorchServe's own gRPC, faces the ingress
    assert _host(gateway.upstream_inference) == "127.0.0.1" and props["grpc_inference_address"] == "127.0.0.1"
    for key in ("inference_address", "management_address", "metrics_address"):
        assert _host(props[key]) == "127.0.0.1", key
    assert _host(gateway.management) == "127.0.0.1"


def _pip_installs(dockerfile: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the Dockerfile's RUN lines (continuations joined)."""
    text = dockerfile.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.startswith("RUN "):
            for command in re.split(r"&&|;", line[4:]):
                words = shlex.split(command)
                if "pip" in words and "install" in words:
                    out.append(words[words.index("install") + 1 :])
    return out


def test_the_image_installs_exactly_the_pinned_requirements() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert "COPY requirements.txt ./" in dockerfile
    installs = _pip_installs(dockerfile)
    third_party = [args for args in installs if "--no-deps" not in args]
    assert third_party == [["--no-cache-dir", "-r", "requirements.txt"]], installs
    for args in installs:
        if "--no-deps" in args:  # camserve's own packages, from the build context, nothing else
            paths = [a for a in args if not a.startswith("-")]
            assert paths and all((ROOT / p).is_dir() for p in paths), args
            assert args.count("-e") == len(paths), args
    pins = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    pins = [p for p in pins if p]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][^=\s]*", p) for p in pins), pins
    assert "--no-build-isolation" in installs[-1]  # no build-time downloads of setuptools & co


def test_image_variants_user_and_entry_point() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and base.group(1).startswith("debian:"), "the CPU base by default"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert re.search(r"--build-arg BASE_IMAGE=nvidia/cuda:\S+", dockerfile), "the CUDA variant is documented"
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), users
    for container in CONTAINERS.values():
        assert container["securityContext"]["runAsUser"] != 0
    assert POD["securityContext"]["runAsNonRoot"] is True


def test_configuration_from_the_environment() -> None:
    env = {"CAMSERVE_SET_JOB_QUEUE_SIZE": " 200 ", "CAMSERVE_MODELS": "a, b  c", "OTHER": "x"}
    assert serverctl.env_overrides(env) == {"job_queue_size": "200"}
    assert serverctl.env_models(env) == ["a", "b", "c"]
    assert serverctl.env_models({}) is None and serverctl.env_models({"CAMSERVE_MODELS": " , "}) is None
    with pytest.raises(SystemExit, match="CAMSERVE_SET_: the variable must name a config key"):
        serverctl.env_overrides({"CAMSERVE_SET_": "1"})
