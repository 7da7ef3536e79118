"""Regenerates the Python code for every .proto under proto/ into the client's private package camserve_proto.

Usage: python proto/generate.py [--out DIR]   (default: client/camserve/_gen)

Each proto is compiled as if it lived at camserve/_gen/<its path>, so generated modules import each other as
``camserve_proto....`` with no post-processing of generated imports. The wire format depends only on each file's
``package`` statement, which is untouched. tests/test_proto.py regenerates into a temporary folder and fails when
the committed code differs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = "camserve_proto"
DEFAULT_OUT = PROTO_ROOT / PACKAGE
PREFIX = Path(PACKAGE)


PACKAGE_DOC = '''"""Generated protobuf and gRPC modules of camserve's contract (proto/*.proto): run proto/generate.py.

``camserve_proto.camserve.v1.explain_pb2``: camserve's ExplainRequest / ExplainResponse.
``camserve_proto.org.pytorch.serve.grpc.inference`` / ``.management``: TorchServe 0.12's gRPC services.
"""
'''


def generate(out: Path) -> list[Path]:
    """Compiles all protos into ``out`` (replaced wholesale) and returns the files written."""
    protos = sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto") if PACKAGE not in p.parts)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        dst = Path(tmp) / "dst"
        for rel in protos:
            (src / PREFIX / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROTO_ROOT / rel, src / PREFIX / rel)
        dst.mkdir()
        include = resources.files("grpc_tools") / "_proto"
        args = [
            "protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={dst}",
            f"--pyi_out={dst}",
            f"--grpc_python_out={dst}",
            *(str(PREFIX / rel) for rel in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = dst / PREFIX
        for folder in [generated, *(p for p in generated.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
        (generated / "__init__.py").write_text(PACKAGE_DOC, encoding="utf-8")
        (generated / "py.typed").touch()
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(generated, out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    files = generate(args.out)
    print(f"wrote {len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
