"""The client distribution stays thin: no torch (or other server/test packages) imported or declared."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import camserve

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "torchvision", "captum", "pytorch_grad_cam", "matplotlib", "ts", "handlers", "model_store")


def test_importing_camserve_imports_no_server_packages() -> None:
    code = (
        "import sys, camserve, camserve.render, camserve.cli, camserve.errors\n"
        f"bad = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "", f"importing camserve pulled in: {done.stdout.strip()}"


def test_declared_dependencies_are_the_thin_set() -> None:
    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip().lower() for dep in project["dependencies"]}
    assert names == {"camserve-proto", "grpcio", "protobuf", "numpy", "pillow"}
    assert project["name"] == "camserve-client"


def test_public_api_is_exported() -> None:
    for name in camserve.__all__:
        assert hasattr(camserve, name), name
    for name in (
        "Client",
        "AsyncClient",
        "CamserveError",
        "InvalidArgument",
        "NotFound",
        "Unauthenticated",
        "ResourceExhausted",
        "DeadlineExceeded",
        "Unavailable",
        "Internal",
        "ExplainResult",
        "Map",
        "Input",
    ):
        assert name in camserve.__all__
    assert all(
        issubclass(getattr(camserve, n), camserve.CamserveError)
        for n in (
            "InvalidArgument",
            "NotFound",
            "Unauthenticated",
            "ResourceExhausted",
            "DeadlineExceeded",
            "Unavailable",
            "Internal",
        )
    )


def _build_wheel(source: Path, tmp_path: Path, pattern: str) -> set[str]:
    import zipfile

    build = tmp_path / source.name
    shutil.copytree(source, build, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    dist = tmp_path / f"dist-{source.name}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(build), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = dist.glob(pattern)
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_builds_offline_with_entry_point(tmp_path: Path) -> None:
    import zipfile

    names = _build_wheel(ROOT / "client", tmp_path, "camserve_client-*.whl")
    for required in ("camserve/__init__.py", "camserve/render.py", "camserve/cli.py", "camserve/py.typed"):
        assert required in names, required
    assert not any(n.startswith(("camserve/_gen", "camserve_proto")) for n in names), "generated code has one owner"
    (wheel,) = (tmp_path / "dist-client").glob("camserve_client-*.whl")
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "camserve = camserve.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires and not any("torch" in line.lower() for line in requires), requires
    assert any("camserve-proto" in line for line in requires), requires


def test_proto_wheel_carries_the_generated_code_and_stubs(tmp_path: Path) -> None:
    names = _build_wheel(ROOT / "proto", tmp_path, "camserve_proto-*.whl")
    for required in (
        "camserve_proto/__init__.py",
        "camserve_proto/py.typed",
        "camserve_proto/camserve/v1/explain_pb2.py",
        "camserve_proto/camserve/v1/explain_pb2.pyi",
        "camserve_proto/org/pytorch/serve/grpc/inference/inference_pb2_grpc.py",
        "camserve_proto/org/pytorch/serve/grpc/management/management_pb2_grpc.py",
    ):
        assert required in names, required
    assert not any(n.endswith(".proto") or n.startswith("generate") for n in names), sorted(names)
