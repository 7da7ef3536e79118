"""Security facts of a running camserve: gRPC over TLS, no model API, loopback only, archives only from the store.

TLS: a self-signed certificate for 127.0.0.1 is generated with the ``openssl`` command line, a separate small
server is started with ``enable_grpc_ssl=true`` and the certificate (the gateway terminates TLS; TorchServe's own
gRPC listens in plaintext on loopback behind it), and the SDK connects with the certificate (works), without TLS,
with the system roots and with another certificate (all refused, within their deadline).

The rest is checked on the session server as it runs: registering or deleting a model over the management API
(REST and gRPC) is refused, every listening socket is bound to 127.0.0.1 (from the kernel's socket table),
``allowed_urls`` admits only ``.mar`` files directly in the local model store, a model name is never a path, and
the Pillow that the worker process has loaded is one with the 2026 CVE fixes (>= 12.3).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import camserve
import grpc
import pytest
from camserve_proto.org.pytorch.serve.grpc.management import management_pb2, management_pb2_grpc
from conftest import CLASSIFIER
from reliability_helpers import png, rest_call, shapes, worker_pids

from deploy import serverctl
from deploy._config import GRPC_ADDRESS_KEYS, HTTP_KEYS

pytestmark = pytest.mark.integration

PILLOW_WITH_FIXES = (12, 3)
GOOD = png(shapes(1, start=1200)[0])


# ------------------------------------------------------------------------------------------------------------ TLS
def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its PKCS#8 key (PEM), valid for two days."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to generate a test certificate")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Tls:
    server: serverctl.Server
    certificate: Path
    other_certificate: Path

    def client(self, **kwargs: Any) -> camserve.Client:
        return camserve.Client(self.server.endpoints.grpc, token_file=self.server.key_file, retries=0, **kwargs)


@pytest.fixture(scope="module")
def tls(camserve_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    camserve_server.require(CLASSIFIER)
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder, "server")
    other, _ = self_signed(folder, "other")
    overrides = {
        **serverctl.free_port_overrides("127.0.0.1"),
        "enable_grpc_ssl": "true",
        "certificate_file": str(cert),
        "private_key_file": str(key),
    }
    server = serverctl.Server.start(
        run_dir=folder / "run", model_store=camserve_server.archive_dir, models=[CLASSIFIER], overrides=overrides
    )
    try:
        yield Tls(server, cert, other)
    finally:
        server.stop()


@pytest.mark.parametrize("roots", ["path", "bytes"])
def test_tls_with_the_certificate_serves(tls: Tls, roots: str) -> None:
    given: Any = tls.certificate if roots == "path" else tls.certificate.read_bytes()
    with tls.client(tls=given, timeout=60) as client:
        assert client.ping() == "Healthy"
        result = client.explain(GOOD, model=CLASSIFIER, methods=["gradcam"])
        assert result.ok and result.maps


@pytest.mark.parametrize("how", ["plaintext", "system-roots", "other-certificate"])
def test_tls_without_the_certificate_is_refused(tls: Tls, how: str) -> None:
    given: Any = {"plaintext": False, "system-roots": True, "other-certificate": tls.other_certificate}[how]
    with tls.client(tls=given, timeout=10) as client, pytest.raises(camserve.Unavailable):
        client.ping()


# ----------------------------------------------------------------------------------------------- the model API
def test_models_cannot_be_registered_or_deleted_over_rest(camserve_server: Any) -> None:
    token = camserve_server.management_token
    base = camserve_server.management_url
    register = rest_call(f"{base}/models?url=file:///etc/passwd", None, token=token, content_type=None)
    again = rest_call(f"{base}/models?url={CLASSIFIER}.mar&model_name=copy", None, token=token, content_type=None)
    delete = rest_call(f"{base}/models/{CLASSIFIER}/9.9", None, token=token, content_type=None, method="DELETE")
    for reply in (register, again, delete):
        assert reply.status == 405, (reply.status, reply.body)
        assert "not allowed" in reply.json()["message"]
    assert worker_pids(base, token, CLASSIFIER), "the model is still there"


def test_models_cannot_be_registered_over_grpc(camserve_server: Any) -> None:
    metadata = (("authorization", f"Bearer {camserve_server.management_token}"),)
    with grpc.insecure_channel(camserve_server.management_address) as channel:
        stub = management_pb2_grpc.ManagementAPIsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterModel(
                management_pb2.RegisterModelRequest(url=f"{CLASSIFIER}.mar", model_name="copy"),
                metadata=metadata,
                timeout=30,
            )
    assert refused.value.code() != grpc.StatusCode.OK
    described = rest_call(
        f"{camserve_server.management_url}/models/copy", None, token=camserve_server.management_token, method="GET"
    )
    assert described.status == 404  # nothing was registered


# --------------------------------------------------------------------------------------------------- listeners
def listening_hosts(port: int) -> set[str]:
    """The local addresses of the kernel's listening TCP sockets on ``port`` (IPv4 and IPv6 tables)."""
    hosts: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                hosts.add(address)
    return hosts


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_every_listener_is_bound_to_loopback(camserve_server: Any) -> None:
    props = serverctl.read_properties(camserve_server.run_dir / "config.properties")
    endpoints = serverctl.Endpoints.from_properties(props)
    urls = [endpoints.rest, endpoints.management, endpoints.metrics]
    ports = [urllib.parse.urlsplit(u).port for u in urls] + [
        int(a.rsplit(":", 1)[1]) for a in (endpoints.grpc, endpoints.grpc_management)
    ]
    for port in ports:
        assert port is not None
        hosts = listening_hosts(port)
        assert hosts and hosts <= LOOPBACK, (port, hosts)


def test_the_template_binds_loopback_and_keeps_the_model_api_off(tmp_path: Path) -> None:
    props = serverctl.render_config(tmp_path / "config.properties", model_store=tmp_path)
    for key in HTTP_KEYS:
        assert urllib.parse.urlsplit(props[key]).hostname == "127.0.0.1", key
    for key in GRPC_ADDRESS_KEYS:
        assert props[key] == "127.0.0.1", key
    assert props["enable_model_api"] == "false"
    assert props.get("disable_token_authorization", "false") == "false"
    assert props["install_py_dep_per_model"] == "false"


# ------------------------------------------------------------------------------------------------ allowed_urls
def test_allowed_urls_admit_only_archives_directly_in_the_local_store(camserve_server: Any) -> None:
    props = serverctl.read_properties(camserve_server.run_dir / "config.properties")
    pattern = re.compile(props["allowed_urls"].replace("\\\\", "\\"))  # .properties escapes, then Java's regex
    store = Path(props["model_store"])
    assert store == camserve_server.archive_dir.resolve()
    assert pattern.fullmatch(f"file://{store}/{CLASSIFIER}.mar")
    for url in (
        "https://example.com/evil.mar",
        "file:///etc/passwd",
        f"file://{store}/sub/{CLASSIFIER}.mar",
        f"file://{store}/{CLASSIFIER}.mar.sh",
        f"file://{store}x/{CLASSIFIER}.mar",
        f"file://{store.parent}/{CLASSIFIER}.mar",
    ):
        assert not pattern.fullmatch(url), url


@pytest.mark.parametrize(
    "name", ["../../../../etc/passwd", "%2e%2e%2fetc%2fpasswd", "/etc/passwd", "shapes-classifier/../x"]
)
def test_a_model_name_is_never_a_path(sdk: camserve.Client, name: str) -> None:
    with pytest.raises(camserve.NotFound) as missing:
        sdk.explain(GOOD, model=name)
    assert "Model not found" in missing.value.message


# ------------------------------------------------------------------------------------------------------ Pillow
def loaded_pillow_version(pid: int) -> tuple[int, ...]:
    """The version of the Pillow whose ``_imaging`` extension process ``pid`` has mapped (what it really runs)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    imaging = next((line.split()[-1] for line in maps if "/PIL/_imaging." in line), None)
    assert imaging is not None, f"worker {pid} has not loaded Pillow"
    site = Path(imaging).parents[1]
    (metadata,) = site.glob("[pP]illow-*.dist-info/METADATA")
    version = next(ln.split(":", 1)[1].strip() for ln in metadata.read_text().splitlines() if ln.startswith("Version:"))
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def test_the_worker_runs_a_pillow_with_the_2026_fixes(camserve_server: Any) -> None:
    with camserve.Client(camserve_server.address, token_file=camserve_server.key_file, timeout=60) as client:
        assert client.explain(GOOD, model=CLASSIFIER, methods=["gradcam"]).ok  # the worker has decoded an image
    for pid in worker_pids(camserve_server.management_url, camserve_server.management_token, CLASSIFIER):
        assert loaded_pillow_version(pid)[:2] >= PILLOW_WITH_FIXES, pid
