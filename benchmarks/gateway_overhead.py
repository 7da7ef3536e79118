"""The gateway's own cost per call: camserve's gateway in front of an upstream that answers at once.

    python benchmarks/gateway_overhead.py [--requests 4000] [--concurrency 8] [--rounds 4] [--profile FILE]

Starts a stand-in for TorchServe's gRPC (this file with ``--upstream PORT``: a ``grpc.aio`` server answering every
``Predictions`` with the same 800-byte answer, and ``DescribeModel`` for the watchdog) and deploy/gateway.py in
front of it, each in its own process, then sends the same requests (a 64x64 demo image as an ExplainRequest) to
the stand-in directly and through the gateway, interleaved in rounds, and prints calls per second and the CPU
milliseconds per call of each process (from /proc). With no model work at all, the difference between the two
paths is the gateway: its own CPU per call, and the latency its extra hop adds. ``--profile FILE`` runs the gateway
under cProfile and writes its statistics there (they are written when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
from _service_load import camserve_request, grpc_loop, test_image  # noqa: E402  (beside this file)
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2  # noqa: E402
from camserve_proto.org.pytorch.serve.grpc.management import management_pb2  # noqa: E402

from deploy._config import free_port  # noqa: E402
from deploy.gateway import INFERENCE_SERVICE, MANAGEMENT_SERVICE, GatewayConfig  # noqa: E402

ANSWER = inference_pb2.PredictionResponse(prediction=b"x" * 800).SerializeToString()
DESCRIBE = json.dumps(
    [{"modelName": "m", "minWorkers": 1, "maxWorkers": 1, "workers": [{"status": "READY", "pid": 1}]}]
)
LISTED = json.dumps({"models": [{"modelName": "m"}]})


async def _upstream(port: int) -> None:
    async def predictions(request: bytes, context: Any) -> bytes:
        return ANSWER

    def management(msg: str) -> Any:
        async def answer(request: bytes, context: Any) -> bytes:
            return bytes(management_pb2.ManagementResponse(msg=msg).SerializeToString())

        return grpc.unary_unary_rpc_method_handler(answer)

    handlers = {
        f"/{INFERENCE_SERVICE}/Predictions": grpc.unary_unary_rpc_method_handler(predictions),
        f"/{MANAGEMENT_SERVICE}/DescribeModel": management(DESCRIBE),
        f"/{MANAGEMENT_SERVICE}/ListModels": management(LISTED),
    }

    class Routes(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return handlers.get(details.method)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([Routes()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=1)
            return
        except grpc.FutureTimeoutError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--requests", type=int, default=4000, help="calls per path, all rounds (4000)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--profile", type=Path, default=None, help="cProfile the gateway; statistics to this file")
    args = p.parse_args(argv)
    if args.upstream is not None:
        asyncio.run(_upstream(args.upstream))
        return 0
    up, gw, gw_management = (free_port() for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-") as tmp:
        config = GatewayConfig(
            inference=f"127.0.0.1:{gw}", management=f"127.0.0.1:{gw_management}",
            upstream_inference=f"127.0.0.1:{up}", upstream_management=f"127.0.0.1:{up}",
            watch_interval=3600.0,
        )  # fmt: skip
        config.save(Path(tmp) / "gateway.json")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(up)], env=env)
        _wait_port(up)
        profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
        gateway = subprocess.Popen(
            [sys.executable, *profile, "-m", "deploy.gateway", str(Path(tmp) / "gateway.json")], cwd=ROOT, env=env
        )
        try:
            _wait_port(gw)
            payload = camserve_request("m", test_image(64), ["gradcam"])
            per_round = max(1, args.requests // args.rounds)
            totals = {
                path: {"calls": 0, "seconds": 0.0, "gateway": 0.0, "upstream": 0.0} for path in ("direct", "gateway")
            }
            for r in range(args.rounds):
                for path in ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct"):
                    target = f"127.0.0.1:{up if path == 'direct' else gw}"
                    grpc_loop(target, payload, (), concurrency=args.concurrency, requests=args.concurrency, seconds=10)
                    before = (_cpu_seconds(gateway.pid), _cpu_seconds(upstream.pid))
                    outcome = grpc_loop(target, payload, (), concurrency=args.concurrency, requests=per_round,
                                        seconds=120)  # fmt: skip
                    after = (_cpu_seconds(gateway.pid), _cpu_seconds(upstream.pid))
                    t = totals[path]
                    t["calls"] += len(outcome.latencies_ms)
                    t["seconds"] += outcome.seconds
                    t["gateway"] += after[0] - before[0]
                    t["upstream"] += after[1] - before[1]
        finally:
            for process in (gateway, upstream):
                process.send_signal(signal.SIGTERM)
            for process in (gateway, upstream):
                process.wait(timeout=30)
    print(
        f"gateway overhead: {args.concurrency} in flight, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'path':<8}  {'calls':>6}  {'calls/s':>8}  {'gateway CPU ms/call':>19}  {'upstream CPU ms/call':>20}")
    for path, t in totals.items():
        calls = max(1, int(t["calls"]))
        print(f"{path:<8}  {calls:>6}  {calls / t['seconds']:>8.0f}  {t['gateway'] * 1000 / calls:>19.3f}  "
              f"{t['upstream'] * 1000 / calls:>20.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
