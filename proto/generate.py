"""Regenerates the Python code for every .proto under proto/ into the client's private package camserve._gen.

Usage: python proto/generate.py [--out DIR]   (default: client/camserve/_gen)

Each proto is compiled as if it lived at camserve/_gen/<its path>, so generated modules import each other as
``camserve._gen....`` with no post-processing of generated imports. The wire format depends only on each file's
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
DEFAULT_OUT = PROTO_ROOT.parent / "client" / "camserve" / "_gen"
PREFIX = Path("camserve") / "_gen"


def generate(out: Path) -> list[Path]:
    """Compiles all protos into ``out`` (replaced wholesale) and returns the files written."""
    protos = sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))
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
