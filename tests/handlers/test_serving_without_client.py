"""The server runs with the client SDK absent: ``camserve`` (every module of it) is blocked from importing.

A fresh interpreter installs a meta-path finder that refuses ``camserve`` and ``camserve.*`` (the generated contract,
``camserve_proto``, stays importable: it is the server's declared dependency), imports the archives' entry files and
answers one gRPC-style request per model kind through a mock TorchServe context, with the committed shapes models.
Serving never loads the training or evaluation scripts either.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys


    class BlockClient(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "camserve" or name.startswith("camserve."):
                raise ModuleNotFoundError(f"blocked by the test: {name}", name=name)
            return None


    sys.meta_path.insert(0, BlockClient())
    try:
        import camserve  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the client package was not blocked")

    from camserve_proto.camserve.v1 import explain_pb2
    from serving_helpers import MockContext, png_bytes, request

    from model_store import archive, entry_classifier, entry_vae

    for name, entry in (("shapes-classifier", entry_classifier), ("shapes-vae", entry_vae)):
        ctx = MockContext(archive.load_config(name), model_name=name)
        assert entry.handle(None, ctx) is None
        ctx.set_batch([None])
        [body] = entry.handle([{"request": request([png_bytes()]).SerializeToString()}], ctx)
        response = explain_pb2.ExplainResponse.FromString(body)
        assert not response.error.code, response.error
        [result] = response.results
        assert not result.error.code and result.maps, result.error
        print(name, len(result.maps), "maps")
    training = sorted(m for m in ("model_store.train", "model_store.evaluate") if m in sys.modules)
    print("training modules:", training)
    loaded = sorted(m for m in sys.modules if m == "camserve" or m.startswith("camserve."))
    print("client modules:", loaded)
    """
)


def test_both_entry_files_serve_a_request_with_the_client_blocked() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["training modules: []", "client modules: []"]
    assert [line.split()[0] for line in lines[:-2]] == ["shapes-classifier", "shapes-vae"]
