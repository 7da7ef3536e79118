"""TorchServe alone vs behind camserve's gateway, side by side: the calls that wedge or restart a model.

    python benchmarks/cancellation.py [--race-seconds 30] [--threads 4]

Starts two servers for shapes-classifier from freshly built archives (one with ``gateway=False``, one as camserve
runs: with the gateway) and sends each, in order:

1. ``StreamPredictions`` and ``StreamPredictions2`` (with and without a sequence id), as other-language clients and
   TorchServe's own sample client call them;
2. the reliability issue's flood: 200 calls with 1 ms deadlines, then 200 with 50 ms, then one good call;
3. a cancellation race: ``--threads`` callers for ``--race-seconds`` with deadlines drawn around the measured
   latency, so that many expire just as TorchServe answers.

After each step it records the status codes, whether the next good call succeeded (and how long it took),
how many ``IllegalStateException`` lines TorchServe's frontend logged, and how often the worker process was
replaced. Loopback only, bounded in calls and time. deploy/README.md quotes its table.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from PIL import Image

from deploy import serverctl
from model_store import archive

MODEL = "shapes-classifier"


def request() -> inference_pb2.PredictionsRequest:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buf, format="PNG")
    explain = explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=buf.getvalue())])
    return inference_pb2.PredictionsRequest(model_name=MODEL, input={"request": explain.SerializeToString()})


class Probe:
    """One server under test: its stub, and what its frontend log and worker list say."""

    def __init__(self, server: serverctl.Server) -> None:
        self.server = server
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(grpc.insecure_channel(server.endpoints.grpc))
        self.md = (("authorization", f"Bearer {server.keys.inference}"),) if server.keys else ()
        self.pids_seen: set[int] = set()

    def frontend_errors(self) -> int:
        log = self.server.log_dir / "ts_log.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        return sum(1 for line in text.splitlines() if "IllegalStateException" in line)

    def note_worker(self) -> None:
        described = self.server._get_json(f"{self.server.endpoints.management}/models/{MODEL}")
        assert isinstance(described, list)
        self.pids_seen.update(int(w["pid"]) for w in described[0]["workers"] if int(w.get("pid", -1)) > 0)

    def good(self) -> str:
        started = time.monotonic()
        try:
            self.stub.Predictions(request(), metadata=self.md, timeout=30)
            outcome = f"OK in {time.monotonic() - started:.2f} s"
        except grpc.RpcError as exc:
            outcome = f"{exc.code().name} after {time.monotonic() - started:.2f} s"
        self.note_worker()
        return outcome


def _codes(calls: list[grpc.Future]) -> Counter[str]:
    out: Counter[str] = Counter()
    for call in calls:
        try:
            call.result()
            out["OK"] += 1
        except grpc.FutureCancelledError:
            out["CANCELLED"] += 1
        except grpc.RpcError as exc:
            out[exc.code().name] += 1
    return out


def streams(p: Probe) -> Counter[str]:
    out: Counter[str] = Counter()
    with_id = request()
    with_id.sequence_id = "seq-1"
    attempts: list[Callable[[], list[object]]] = [
        lambda: list(p.stub.StreamPredictions(request(), metadata=p.md, timeout=30)),
        lambda: list(p.stub.StreamPredictions2(iter([request()]), metadata=p.md, timeout=30)),
        lambda: list(p.stub.StreamPredictions2(iter([with_id]), metadata=p.md, timeout=30)),
    ]
    for name, attempt in zip(("stream", "stream2", "stream2+id"), attempts, strict=True):
        try:
            answers = attempt()
            bad = [a for a in answers if isinstance(a, inference_pb2.PredictionResponse) and a.HasField("status")]
            out[f"{name}:{'in-band error' if bad else 'OK'}"] += 1
        except grpc.RpcError as exc:
            out[f"{name}:{exc.code().name}"] += 1
        time.sleep(3)  # let a crashed worker's restart show in the worker list
        p.note_worker()
    return out


def flood(p: Probe) -> Counter[str]:
    out: Counter[str] = Counter()
    for deadline in (0.001, 0.05):
        out += _codes([p.stub.Predictions.future(request(), metadata=p.md, timeout=deadline) for _ in range(200)])
    return out


def latency(p: Probe, patience: float = 120.0) -> float:
    """One good call's latency, once the server answers again (TorchServe alone may still be draining a flood)."""
    give_up = time.monotonic() + patience
    while True:
        started = time.monotonic()
        try:
            p.stub.Predictions(request(), metadata=p.md, timeout=30)
            return max(time.monotonic() - started, 0.005)
        except grpc.RpcError:
            if time.monotonic() > give_up:
                raise
            time.sleep(1.0)


def race(p: Probe, seconds: float, threads: int) -> Counter[str]:
    typical = latency(p)
    out: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            call = p.stub.Predictions.future(
                request(), metadata=p.md, timeout=max(0.002, rng.gauss(typical, typical / 3))
            )
            codes = _codes([call])
            with lock:
                out.update(codes)

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=seconds + 120)
    return out


def run(server: serverctl.Server, seconds: float, threads: int) -> list[dict[str, object]]:
    p = Probe(server)
    p.good()
    rows = []
    steps: list[tuple[str, Callable[[], Counter[str]]]] = [
        ("streaming RPCs", lambda: streams(p)),
        ("flood 200x1ms + 200x50ms", lambda: flood(p)),
        (f"race {seconds:g} s x {threads}", lambda: race(p, seconds, threads)),
    ]
    for step, action in steps:
        codes = action()
        rows.append(
            {
                "step": step,
                "codes": dict(codes),
                "next good call": p.good(),
                "IllegalStateException lines (cumulative)": p.frontend_errors(),
                "worker processes seen (cumulative)": len(p.pids_seen),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--race-seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="camserve-cancellation-") as tmp:
        store = Path(tmp) / "archives"
        archive.build(MODEL, store)
        for label, gateway in (("TorchServe alone", False), ("behind camserve's gateway", True)):
            server = serverctl.Server.start(
                run_dir=Path(tmp) / label.split()[0], model_store=store, models=[MODEL],
                overrides=serverctl.free_port_overrides(), gateway=gateway,
            )  # fmt: skip
            try:
                results[label] = run(server, args.race_seconds, args.threads)
            finally:
                server.stop()
    for label, rows in results.items():
        print(f"\n== {label}")
        for row in rows:
            print(f"  {row['step']}")
            for key, value in row.items():
                if key != "step":
                    print(f"    {key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
