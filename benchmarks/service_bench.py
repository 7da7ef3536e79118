"""Service benchmark: camserve's served explanations side by side with plain TorchServe, in one run.

    python benchmarks/service_bench.py [--quick] [--models demo resnet50 vae] [--concurrency 1,8]
        [--requests 400] [--seconds 12] [--rounds 2] [--paths direct gateway] [--threads N] [--workers N]
        [--batch-size N] [--batch-delay MS] [--env KEY=VALUE ...] [--set key=value ...] [--device cpu|cuda]
        [--json FILE] [--markdown FILE]

Builds the archives into a temporary folder (benchmarks/_service_archives.py: camserve's handler and TorchServe's
stock ``ImageClassifier``, benchmarks/plain_handler.py, for the same model and weights), starts one TorchServe on
free loopback ports with camserve's gateway in front (deploy.serverctl, the committed deploy/config.properties) and
measures, per model and concurrency level:

  (a) plain TorchServe prediction: the stock handler over TorchServe's own gRPC ``Predictions``;
  (b) camserve prediction only (the forward-only ``cam`` method);  (c) prediction + Grad-CAM;
  (d) the full bundle: gradcam, gradcam++, saliency, guided_backprop;
  (e) TorchServe's built-in REST ``/explanations`` (Captum Integrated Gradients) on the stock handler;
  and for the VAE, area maps of 1 and 16 regions.

camserve's contestants run on both paths: ``direct`` (TorchServe's gRPC listener) and ``gateway`` (the gateway
that users call, deploy/gateway.py); (a) runs through the gateway too, which isolates the gateway's own cost.
Contestants of one model and level are interleaved in ``--rounds`` rounds (order reversed every other round), each
warmed up with ``concurrency`` calls first, so the ratios to (a) compare figures taken under the same machine load.
Every level is bounded by ``--requests`` and ``--seconds`` (split over the rounds). The output: the ratio table,
where served time goes (the handler's own decode/explain/encode per request, the batch it ran in, the rest), the
first call of each contestant, and the issue's targets checked. ``--device cuda`` serves on the GPUs TorchServe
assigns (``number_of_gpu``); the default ``cpu`` sets ``number_of_gpu=0`` so a GPU host measures its CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _service_archives import MODELS, BenchModel, build_archives  # beside this file
from _service_cpu import FAULTS, ROLES, CpuSampler
from _service_load import (
    Outcome,
    camserve_request,
    grpc_loop,
    plain_request,
    rest_loop,
    test_image,
    vae_request,
)
from _service_logs import MetricsTail
from _service_report import checks, machine_line, server_timing
from _service_stats import Level, breakdown_table, cpu_table, ratio_table, summarise

from deploy import serverctl
from deploy._tuning import server_env

SETTLE_S = 0.3
BUNDLE = ("gradcam", "gradcam++", "saliency", "guided_backprop")
NAMES = {
    "a": "(a) plain TorchServe",
    "b": "(b) camserve predict",
    "c": "(c) + gradcam",
    "d": "(d) full bundle",
    "e": "(e) TS /explanations",
    "vae-1": "VAE 1 region",
    "vae-16": "VAE 16 regions",
}


@dataclass(frozen=True)
class Contestant:
    """One row kind: how to send it (``send(concurrency, requests, seconds) -> Outcome``)."""

    key: str
    path: str
    send: Callable[[int, int, float], Outcome]


def _contestants(server: serverctl.Server, model: BenchModel, paths: Sequence[str]) -> list[Contestant]:
    keys = server.keys
    metadata = (("authorization", f"Bearer {keys.inference}"),) if keys else ()
    targets = {"direct": server.torchserve_grpc, "gateway": server.endpoints.grpc}
    image = test_image(model.image_size)

    def grpc(payload: bytes, path: str) -> Callable[[int, int, float], Outcome]:
        def send(concurrency: int, requests: int, seconds: float) -> Outcome:
            return grpc_loop(targets[path], payload, metadata, concurrency=concurrency, requests=requests,
                             seconds=seconds)  # fmt: skip

        return send

    out: list[Contestant] = []
    if model.kind == "vae":
        for regions in (1, 16):
            payload = vae_request(model.name, image, model.image_size, regions)
            out += [Contestant(f"vae-{regions}", p, grpc(payload, p)) for p in paths]
        return out
    assert model.plain is not None
    plain_paths = ["direct", *(p for p in paths if p != "direct")]  # (a) is TorchServe's own path first of all
    out += [Contestant("a", p, grpc(plain_request(model.plain, image), p)) for p in plain_paths]
    for key, methods in (("b", ("cam",)), ("c", ("gradcam",)), ("d", BUNDLE)):
        payload = camserve_request(model.name, image, methods)
        out += [Contestant(key, p, grpc(payload, p)) for p in paths]
    url = f"{server.endpoints.rest}/explanations/{model.plain}"
    headers = {"Content-Type": "application/octet-stream"}
    if keys:
        headers["Authorization"] = f"Bearer {keys.inference}"

    def rest(concurrency: int, requests: int, seconds: float) -> Outcome:
        return rest_loop(url, image, headers, concurrency=concurrency, requests=requests, seconds=seconds)

    out.append(Contestant("e", "rest", rest))
    return out


def _level(model: BenchModel, c: Contestant, concurrency: int, outcome: Outcome) -> Level:
    level = Level(model.key, c.key, c.path, concurrency, outcome.latencies_ms, [len(p) for p in outcome.payloads],
                  outcome.seconds, outcome.errors)  # fmt: skip
    if c.key not in ("a", "e"):
        level.server = [t for t in (server_timing(p) for p in outcome.payloads) if t is not None]
    return level


def measure_model(
    server: serverctl.Server, model: BenchModel, args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[list[Level], dict[str, float]]:
    """Every contestant of ``model`` at every level, interleaved in rounds; and each contestant's first call (ms)."""
    contestants = _contestants(server, model, args.paths)
    contestants = [c for c in contestants if args.contestants is None or c.key in args.contestants]
    tail = MetricsTail(server.log_dir)
    cpu = CpuSampler(server.pid, server.gateway_pid)
    first: dict[str, float] = {}
    for c in contestants:
        cold = c.send(1, 1, args.seconds)
        if cold.latencies_ms:
            first[f"{c.key}/{c.path}"] = cold.latencies_ms[0]
    levels: list[Level] = []
    per_round_requests = max(1, args.requests // args.rounds)
    per_round_seconds = args.seconds / args.rounds
    for concurrency in args.concurrency:
        merged: dict[tuple[str, str], Level] = {}
        for r in range(args.rounds):
            order = contestants if r % 2 == 0 else contestants[::-1]
            for c in order:
                c.send(concurrency, concurrency, args.seconds)  # warm-up at this level (not measured)
                time.sleep(SETTLE_S)
                tail.mark()
                before = cpu.sample()
                level = _level(model, c, concurrency, c.send(concurrency, per_round_requests, per_round_seconds))
                after = cpu.sample()
                level.cpu = {role: after[role] - before[role] for role in (*ROLES, FAULTS)}
                time.sleep(SETTLE_S)  # TorchServe's metrics logger writes the level's last lines
                level.torchserve = tail.read()
                key = (c.key, c.path)
                if key in merged:
                    merged[key].merge(level)
                else:
                    merged[key] = level
            log(f"  {model.key} c={concurrency} round {r + 1}/{args.rounds} done")
        levels += merged.values()
    return levels, first


def _server_settings(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """(config.properties overrides, server environment, model-config overrides) from the options."""
    props = {**serverctl.free_port_overrides("127.0.0.1"), **serverctl.parse_pairs(args.set, "--set")}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible to torch on this machine")
        props.setdefault("number_of_gpu", str(torch.cuda.device_count()))
    else:
        props["number_of_gpu"] = "0"
    env = serverctl.parse_pairs(args.env, "--env")
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    model_overrides = {
        k: v for k, v in (("batchSize", args.batch_size), ("maxBatchDelay", args.batch_delay),
                          ("minWorkers", args.workers)) if v is not None
    }  # fmt: skip
    return props, env, model_overrides


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="demo classifier only, c=1,8, 60 requests / 4 s per level")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--concurrency", default="1,8", help="comma-separated levels (default 1,8)")
    p.add_argument("--requests", type=int, default=400, help="measured requests per level, all rounds (400)")
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per level, all rounds (12)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per level (2)")
    p.add_argument(
        "--contestants",
        nargs="+",
        default=None,
        metavar="KEY",
        help="only these rows: a b c d e vae-1 vae-16 (default: all)",
    )
    p.add_argument("--paths", nargs="+", choices=("direct", "gateway"), default=["direct", "gateway"])
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the workers (default: deploy's, 1)")
    p.add_argument("--workers", type=int, default=None, help="workers per model (both handlers)")
    p.add_argument("--batch-size", type=int, default=None, help="batchSize of every archive")
    p.add_argument("--batch-delay", type=int, default=None, help="maxBatchDelay (ms) of every archive")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    p.add_argument("--set", action="append", default=[], metavar="key=value", help="config.properties key")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write every level's figures here")
    p.add_argument("--markdown", type=Path, default=None, help="append the tables here as Markdown")
    p.add_argument("--keep-logs", type=Path, default=None, help="copy the server's logs here at the end")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.models, args.requests, args.seconds = ["demo"], min(args.requests, 60), min(args.seconds, 4.0)
    try:
        args.concurrency = [int(v) for v in args.concurrency.split(",")]
    except ValueError:
        raise SystemExit(f"--concurrency must be comma-separated integers, got {args.concurrency!r}") from None
    if not all(1 <= c <= 256 for c in args.concurrency) or not 1 <= args.rounds <= 20 or args.requests < 1:
        raise SystemExit("--concurrency 1..256, --rounds 1..20 and --requests >= 1")
    props, env, model_overrides = _server_settings(args)
    models = [MODELS[k] for k in args.models]

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        log("building archives ...")
        names = build_archives(models, Path(tmp) / "archives", overrides=model_overrides)
        log(f"starting TorchServe with {', '.join(names)} ...")
        server = serverctl.Server.start(run_dir=Path(tmp) / "run", model_store=Path(tmp) / "archives", models=names,
                                        overrides=props, extra_env=env, timeout=600.0)  # fmt: skip
        with server:
            log(f"ready after {server.startup_seconds:.1f} s")
            levels: list[Level] = []
            first: dict[str, dict[str, float]] = {}
            for model in models:
                model_levels, first[model.key] = measure_model(server, model, args, log)
                levels += model_levels
            if args.keep_logs is not None:
                shutil.copytree(server.log_dir, args.keep_logs, dirs_exist_ok=True)
    load_after = os.getloadavg()
    summaries = [summarise(level) for level in levels]
    served = server_env(os.environ, env)  # what the workers ran with, the tuned defaults included
    other_env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "GLIBC_TUNABLES")}
    header = (
        f"service_bench {started}; {machine_line()}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; device {args.device}; threads per worker "
        f"{served.get('OMP_NUM_THREADS', 'torch default')}; GLIBC_TUNABLES {served.get('GLIBC_TUNABLES', 'unset')}; "
        f"model overrides {model_overrides or 'none'}; env {other_env or 'none'}"
    )
    tables = [
        ratio_table(summaries, NAMES),
        "where served time goes (medians; TorchServe's metrics and camserve's response timing):\n"
        + breakdown_table(summaries),
        "CPU per request by process (ms; the client is this benchmark):\n" + cpu_table(summaries, ROLES),
        "first call of each contestant (ms): "
        + "; ".join(f"{m} {k} {v:.0f}" for m, calls in first.items() for k, v in calls.items()),
        checks(summaries),
    ]
    print(header)
    print("\n\n".join(tables))
    if args.json is not None:
        payload = {"header": header, "platform": platform.platform(), "levels": summaries, "first_call_ms": first}
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    if args.markdown is not None:
        with args.markdown.open("a", encoding="utf-8") as md:
            md.write(f"\n{header}\n\n{ratio_table(summaries, NAMES, markdown=True)}\n\n{tables[1].splitlines()[0]}\n\n"
                     f"{breakdown_table(summaries, markdown=True)}\n\n{tables[2].splitlines()[0]}\n\n"
                     f"{cpu_table(summaries, ROLES, markdown=True)}\n\n"
                     f"{tables[3]}\n\n```\n{tables[4]}\n```\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
