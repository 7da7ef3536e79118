"""Calls a running TorchServe through stubs generated from TorchServe's OWN inference.proto (not camserve's copy).

Run as a script by tests/integration/test_server_grpc.py::test_wire_compatible_with_torchserves_own_proto, in a
separate process: TorchServe's file and camserve's define the same message names in the same protobuf package, and
one process cannot register both in protobuf's default descriptor pool.

    python torchserve_proto_call.py WORK_DIR ADDRESS TOKEN MODEL REQUEST_FILE RESPONSE_FILE

1. Extracts ``proto/inference.proto`` and the ``google/rpc/status.proto`` it imports from the installed
   TorchServe's ``ts/frontend/model-server.jar`` into WORK_DIR/proto.
2. Compiles them with grpc_tools' protoc into WORK_DIR/gen.
3. Calls Ping and Predictions(model, input={"request": <REQUEST_FILE bytes>}) with the Bearer token and a deadline,
   writes the prediction bytes to RESPONSE_FILE and prints a JSON summary (health, the proto's package and whether
   camserve's generated code was ever imported here: it must not be).
"""

from __future__ import annotations

import json
import sys
import zipfile
from importlib import resources
from pathlib import Path


def extract_and_compile(work: Path) -> Path:
    """Extracts TorchServe's inference.proto (+ google/rpc/status.proto) and compiles them; returns the gen dir."""
    import ts
    from grpc_tools import protoc

    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    src, gen = work / "proto", work / "gen"
    (src / "google" / "rpc").mkdir(parents=True, exist_ok=True)
    gen.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(jar) as zf:
        (src / "inference.proto").write_bytes(zf.read("proto/inference.proto"))
        (src / "google" / "rpc" / "status.proto").write_bytes(zf.read("google/rpc/status.proto"))
    include = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{src}",
        f"-I{include}",
        f"--python_out={gen}",
        f"--grpc_python_out={gen}",
        "inference.proto",
        "google/rpc/status.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on TorchServe's inference.proto")
    return gen


def main(argv: list[str]) -> int:
    work, address, token, model, request_file, response_file = argv
    gen = extract_and_compile(Path(work))
    sys.path.insert(0, str(gen))
    import grpc
    import inference_pb2
    import inference_pb2_grpc
    from google.protobuf import empty_pb2

    metadata = (("authorization", f"Bearer {token}"),)
    options = [("grpc.max_receive_message_length", 32 * 1024 * 1024)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        health = stub.Ping(empty_pb2.Empty(), metadata=metadata, timeout=30)
        request = inference_pb2.PredictionsRequest(model_name=model, input={"request": Path(request_file).read_bytes()})
        response = stub.Predictions(request, metadata=metadata, timeout=120)
    Path(response_file).write_bytes(response.prediction)
    status_field = inference_pb2.PredictionResponse.DESCRIPTOR.fields_by_name["status"]
    print(
        json.dumps(
            {
                "health": json.loads(health.health),
                "package": inference_pb2.DESCRIPTOR.package,
                "proto_file": inference_pb2.__file__,
                "status_type": status_field.message_type.full_name,
                "camserve_imported": any(m == "camserve" or m.startswith("camserve.") for m in sys.modules),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
