"""The ``camserve`` command: explain images from a shell, check a server, list and describe its models.

::

    camserve ping
    camserve models
    camserve describe imagenet-efficientnet-lite0
    camserve explain photos/*.jpg --model imagenet-efficientnet-lite0 --method gradcam --method guided_backprop \\
        --top-k 2 --out out/
    camserve perf --model shapes-classifier --method gradcam --concurrency 1,4,16 --duration 30s --compare-predict

Connection options (every command): ``--address`` (default ``$CAMSERVE_ADDRESS`` or 127.0.0.1:7070),
``--token`` / ``--token-file`` (default ``$CAMSERVE_TOKEN`` / ``$CAMSERVE_TOKEN_FILE``; TorchServe writes
``key_file.json`` into its working directory), ``--timeout`` (seconds per request), ``--retries``,
``--load-balancing round_robin`` (several servers behind one address).

``explain`` writes into ``--out`` (default ``camserve-out``): ``summary.json`` (predictions, map list, timing and
errors per image), ``maps/<image>/`` with each map as ``.npy`` (float32, as served) and ``.png`` (the picture the
gallery shows), and ``index.html`` with ``gallery/``, the gallery (skip it with ``--no-gallery``). Directories
given as IMAGES are searched for image files (not recursively).

``perf`` load-tests a model (see :mod:`camserve.perf` and the client README): a table per concurrency level.

Exit codes:
    0  success
    1  explain finished, but some images failed (see the messages and summary.json); perf: every request failed
    2  usage error: bad arguments, an image file that does not exist
    3  the server rejected the request: invalid input, unknown model/method/layer, over a limit
    4  the server could not be reached, is restarting or unhealthy, or did not answer in time
    5  authentication: the token is missing, wrong or expired
    6  the server failed internally
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from camserve import gallery, perf, render
from camserve._client import Client
from camserve._files import IMAGE_SUFFIXES, slug
from camserve._request import Input
from camserve._results import ExplainResult, ModelInfo
from camserve._transport import LOAD_BALANCING_POLICIES
from camserve.errors import (
    CamserveError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_UNAVAILABLE = 4
EXIT_AUTH = 5
EXIT_INTERNAL = 6
EXIT_INTERRUPTED = 130


def exit_code(error: CamserveError) -> int:
    """The process exit code for an error (see the module docstring)."""
    if isinstance(error, Unauthenticated):
        return EXIT_AUTH
    if isinstance(error, Unavailable | DeadlineExceeded):
        return EXIT_UNAVAILABLE
    if isinstance(error, InvalidArgument | NotFound | ResourceExhausted):
        return EXIT_REJECTED
    return EXIT_INTERNAL


def _hint(error: CamserveError, address: str) -> str:
    if isinstance(error, Unauthenticated):
        return (
            "pass --token-file PATH/key_file.json (TorchServe writes it into its working directory) or --token, "
            "or set CAMSERVE_TOKEN_FILE / CAMSERVE_TOKEN"
        )
    if isinstance(error, Unavailable):
        return f"is the server running at {address}? start it with deploy/start.sh, or pass --address HOST:PORT"
    if isinstance(error, DeadlineExceeded):
        return "the server may be busy; pass a larger --timeout"
    if isinstance(error, NotFound):
        return "`camserve models` lists the served models; `camserve describe MODEL` its methods and layers"
    return ""


def _report(error: CamserveError, address: str, stream: TextIO) -> int:
    """Prints an error for a shell user and returns its exit code."""
    first_line = error.message.splitlines()[0] if error.message else error.code
    where = f" (field: {error.field})" if error.field else ""
    print(f"camserve: {type(error).__name__}: {first_line}{where}", file=stream)
    hint = _hint(error, address)
    if hint:
        print(f"camserve: hint: {hint}", file=stream)
    return exit_code(error)


class _UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("connection")
    conn.add_argument(
        "--address", help="gRPC inference address host:port (default $CAMSERVE_ADDRESS or 127.0.0.1:7070)"
    )
    conn.add_argument("--management-address", help="gRPC management address (default: inference port + 1)")
    conn.add_argument("--token", help="inference key (default $CAMSERVE_TOKEN)")
    conn.add_argument("--token-file", help="TorchServe key_file.json (default $CAMSERVE_TOKEN_FILE)")
    conn.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    conn.add_argument("--retries", type=int, default=3, help="retries after transport failures (default 3)")
    conn.add_argument(
        "--load-balancing",
        choices=LOAD_BALANCING_POLICIES,
        help="spread calls over every server the address names, e.g. dns:///camserve-headless:7070 (round_robin)",
    )

    parser = argparse.ArgumentParser(
        prog="camserve",
        description="Predictions with their explanation maps from a camserve server.",
        epilog="Exit codes: 0 ok, 1 some images failed, 2 usage, 3 rejected by the server, 4 unreachable/timeout, "
        "5 authentication, 6 server error, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("ping", parents=[common], help="check that the server answers and is healthy")
    sub.add_parser("models", parents=[common], help="list the served models (uses the management key)")
    describe = sub.add_parser("describe", parents=[common], help="what a model offers: methods, layers, labels")
    describe.add_argument("model")
    describe.add_argument("--json", action="store_true", help="print JSON")

    ex = sub.add_parser("explain", parents=[common], help="explain images; write maps, overlays and a gallery")
    ex.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    ex.add_argument("--model", required=True)
    ex.add_argument("--method", dest="methods", action="append", help="a method (repeat; default: the model's)")
    ex.add_argument("--layer", dest="layers", action="append", help="a layer (repeat; default: the model's)")
    tg = ex.add_mutually_exclusive_group()
    tg.add_argument("--target", dest="targets", action="append", help="class id or label to explain (repeat)")
    tg.add_argument("--top-k", type=int, help="explain the k best classes of each image")
    ex.add_argument("--region", dest="regions", action="append", metavar="X0,Y0,X1,Y1", help="VAE region box (repeat)")
    ex.add_argument("--encoding", choices=["float16", "float32", "uint8", "png"])
    ex.add_argument("--resolution", choices=["native", "input"])
    ex.add_argument("--reconstruction", action="store_true", help="VAE: also fetch the reconstruction")
    ex.add_argument("--out", type=Path, default=Path("camserve-out"), help="output folder (default camserve-out)")
    ex.add_argument("--no-gallery", dest="gallery", action="store_false", help="do not write index.html")
    ex.add_argument("--size", type=int, default=224, help="longer side of pictures in pixels (default 224)")
    ex.add_argument("--cmap", choices=render.COLORMAPS, default="inferno")
    ex.add_argument(
        "--gradients",
        choices=["heat", "gradient"],
        default="heat",
        help="how 3-channel input-gradient maps are drawn: heat of |g| (default) or a signed RGB gradient image",
    )
    ex.add_argument("--batch-size", type=int, default=1, help="images per request (default 1)")
    ex.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    progress = ex.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="progress line")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    perf.add_parser(sub, common)
    return parser


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """The client arguments the connection options give (the same for the sync and the async client)."""
    return {
        "address": args.address,
        "token": args.token,
        "token_file": args.token_file,
        "management_address": args.management_address,
        "timeout": args.timeout,
        "retries": args.retries,
        "load_balancing": args.load_balancing,
    }


def _client(args: argparse.Namespace) -> Client:
    return Client(**_connection(args))


def _images(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise _UsageError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in directory {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise _UsageError(f"no such image file: {p}")
    return out


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise _UsageError(f"--region must be X0,Y0,X1,Y1 (four integers), got {text!r}") from None
    return (x0, y0, x1, y1)


def _target(values: Sequence[str] | None) -> list[int] | list[str] | None:
    if not values:
        return None
    if all(v.lstrip("-").isdigit() for v in values):
        return [int(v) for v in values]
    if any(v.lstrip("-").isdigit() for v in values):
        raise _UsageError("--target values must be all class ids or all labels, not a mix")
    return list(values)


class _Progress:
    """A one-line progress indicator on stderr: drawn only on a terminal unless forced (no dependency)."""

    def __init__(self, total: int, enabled: bool | None, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() and total > 1 if enabled is None else enabled
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        failed = f", {self.failed} failed" if self.failed else ""
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} images{failed}, {rate:.1f}/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()


def _explain(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.top_k is not None and args.top_k < 1:
        raise _UsageError("--top-k must be at least 1")
    if args.batch_size < 1 or args.concurrency < 1:
        raise _UsageError("--batch-size and --concurrency must be at least 1")
    paths = _images(args.images)
    regions = [_region(r) for r in args.regions or []]
    target = _target(args.targets)
    folder: Path = args.out
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    progress = _Progress(len(paths), args.progress, err)
    names = _unique_names(paths)

    results = client.explain_many(
        [Input(p) for p in paths],
        model=args.model,
        methods=args.methods,
        layers=args.layers,
        target=target,
        top_k=args.top_k,
        regions=regions or None,
        encoding=args.encoding,
        resolution=args.resolution,
        reconstruction=args.reconstruction,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
    )

    def entries() -> Iterator[gallery.Entry]:
        for path, name, result in zip(paths, names, results, strict=True):
            records.append(_write_result(folder / "maps" / name, path, result, regions, args))
            progress.update(result.ok)
            if not progress.enabled:  # the progress line replaces per-image lines on a terminal
                print(_line(path, result), file=out)
            yield gallery.Entry(path.name, path, result, regions)

    index: Path | None = None
    complete = False
    try:
        if args.gallery:
            title = f"camserve · {args.model}"
            index = gallery.write(
                entries(), folder, title=title, cmap=args.cmap, size=args.size, gradients=args.gradients
            )
        else:
            for _ in entries():
                pass
        complete = True
    finally:
        progress.close()
        # Written even when the run stops early, so what was explained is not lost.
        summary = {"model": args.model, "complete": complete, "images": records}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    failed = [r for r in records if "error" in r]
    if progress.enabled:
        for path, record in zip(paths, records, strict=True):
            if "error" in record:
                print(f"{path}: error {record['error']['code']}: {record['error']['message']}", file=out)
    wrote = [str(folder / "summary.json")] + ([str(index)] if index else [])
    print(f"explained {len(records) - len(failed)}/{len(records)} images; wrote {', '.join(wrote)}", file=out)
    return EXIT_PARTIAL if failed else EXIT_OK


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """One output folder name per image: its stem, numbered when stems repeat."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = slug(p.stem)
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def _line(path: Path, result: ExplainResult) -> str:
    if result.error is not None:
        return f"{path}: error {result.error.code}: {result.error.message}"
    top = result.top
    best = f"{top.label or top.class_id} {top.score:.3f}" if top else "explained"
    return f"{path}: {best} ({len(result.maps)} maps, {result.timing.round_trip_ms:.0f} ms)"


def _write_result(
    folder: Path, path: Path, result: ExplainResult, regions: Sequence[tuple[int, int, int, int]], args: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {"image": str(path), **result.summary()}
    if result.error is not None:
        return record
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    vae = bool(regions) or result.reconstruction is not None or not result.predictions
    for m in result:
        stem = slug(f"{m.method}_{m.layer or 'input'}_{'r' if vae else 't'}{m.target}")
        np.save(folder / f"{stem}.npy", m.array)
        boxes = [regions[m.target]] if vae and m.target < len(regions) else []
        picture = render.render_map(
            path,
            m,
            geometry=result.geometry,
            on_original=not vae,
            cmap=args.cmap,
            size=args.size,
            boxes=boxes,
            gradients=args.gradients,
        )
        picture.save(folder / f"{stem}.png")
        rel = f"maps/{folder.name}/{stem}"
        files.append(
            {"method": m.method, "layer": m.layer, "target": m.target, "npy": f"{rel}.npy", "png": f"{rel}.png"}
        )
    if result.reconstruction is not None:
        np.save(folder / "reconstruction.npy", result.reconstruction)
        record["reconstruction"] = f"maps/{folder.name}/reconstruction.npy"
    record["files"] = files
    return record


def _describe_text(info: ModelInfo) -> str:
    lines = [
        f"{info.name} (version {info.version or '-'}): {info.kind}, input {info.input_size[0]}x{info.input_size[1]}",
        f"  methods:         {', '.join(info.methods)}",
        f"  default methods: {', '.join(info.default_methods)}",
        f"  default layers:  {', '.join(info.default_layers)}",
        f"  layers ({len(info.layers)}):    {', '.join(info.layers[:12])}{' ...' if len(info.layers) > 12 else ''}",
    ]
    if info.labels:
        shown = ", ".join(info.labels[:10]) + (" ..." if len(info.labels) > 10 else "")
        lines.append(f"  labels ({len(info.labels)}):  {shown}")
    lines.append(f"  limits: {info.max_images} images/request, top-k <= {info.max_top_k}, {info.max_regions} regions")
    return "\n".join(lines)


def _describe_json(info: ModelInfo) -> str:
    data = {k: (dict(v) if k == "versions" else v) for k, v in vars(info).items()}
    return json.dumps(data, indent=2)


def run(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Runs the command line and returns its exit code (what :func:`main` exits with); for tests and embedding."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        client = _client(args)
    except CamserveError as exc:  # a malformed setting (address, timeout, ...): the user's command line
        print(f"camserve: error: {exc.message}", file=err)
        return EXIT_USAGE
    address = client.management_address if args.command == "models" else client.address
    try:
        with client:
            if args.command == "ping":
                status = client.ping()
                print(f"{client.address}: {status}", file=out)
                return EXIT_OK if status == "Healthy" else EXIT_UNAVAILABLE
            if args.command == "models":
                for entry in client.models():
                    print(entry.name, file=out)
                return EXIT_OK
            if args.command == "describe":
                info = client.describe(args.model)
                print(_describe_json(info) if args.json else _describe_text(info), file=out)
                return EXIT_OK
            if args.command == "perf":
                return perf.run(args, _connection(args), out, err)
            return _explain(client, args, out, err)
    except (_UsageError, perf.OptionError) as exc:
        print(f"camserve: error: {exc}", file=err)
        return EXIT_USAGE
    except CamserveError as exc:
        return _report(exc, address, err)
    except KeyboardInterrupt:
        print("camserve: interrupted", file=err)
        return EXIT_INTERRUPTED


def main() -> None:
    """Entry point of the ``camserve`` console script."""
    sys.exit(run())


__all__ = [
    "EXIT_AUTH",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_REJECTED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "exit_code",
    "main",
    "run",
]
