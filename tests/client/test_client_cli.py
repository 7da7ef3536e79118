"""The camserve command against the in-process fake: outputs, messages and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import camserve
import grpc
import numpy as np
import pytest
from camserve import cli, render
from conftest import INPUT, FakeServer, free_port
from PIL import Image


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands without --out write to ./camserve-out: keep that out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def conn(fake: FakeServer) -> list[str]:
    return ["--address", fake.address, "--management-address", fake.address, "--timeout", "10"]


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, size in enumerate([(40, 30), (20, 20), (25, 50)]):
        p = tmp_path / "in" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", size, (40 * i, 100, 200)).save(p)
        paths.append(p)
    return paths


def test_ping_models_describe(conn: list[str], fake: FakeServer) -> None:
    assert run("ping", *conn)[:2] == (0, f"{fake.address}: Healthy\n")
    assert run("models", *conn)[:2] == (0, "shapes-classifier\nvae\n")
    code, out, _ = run("describe", "shapes-classifier", *conn)
    assert code == 0 and "classifier, input 32x32" in out and "gradcam" in out and "circle" in out
    code, out, _ = run("describe", "shapes-classifier", "--json", *conn)
    data = json.loads(out)
    assert code == 0 and data["kind"] == "classifier" and data["input_size"] == [INPUT, INPUT]


def test_ping_unhealthy_is_4(conn: list[str], fake: FakeServer) -> None:
    fake.health = '{"status": "Unhealthy"}'
    assert run("ping", *conn)[0] == cli.EXIT_UNAVAILABLE


def test_unreachable_is_4_with_hint() -> None:
    port = free_port()
    code, _, err = run("ping", "--address", f"127.0.0.1:{port}", "--retries", "1", "--timeout", "5")
    assert code == 4
    assert "Unavailable" in err and "after 2 attempts" in err and "is the server running" in err


def test_auth_failure_is_5_with_hint(conn: list[str], fake: FakeServer, tmp_path: Path) -> None:
    fake.token = "right"
    code, _, err = run("ping", *conn, "--token", "wrong")
    assert code == 5 and "Token Authorization failed" in err and "--token-file" in err
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"inference": {"key": "right"}, "management": {"key": "m"}}))
    assert run("ping", *conn, "--token-file", str(key_file))[0] == 0


def test_explain_writes_maps_summary_and_gallery(conn: list[str], images: list[Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(
        "explain",
        *map(str, images),
        "--model",
        "shapes-classifier",
        "--method",
        "gradcam",
        "--method",
        "saliency",
        "--layer",
        "layer1",
        "--layer",
        "layer2",
        "--top-k",
        "2",
        "--out",
        str(out_dir),
        "--no-progress",
        *conn,
    )
    assert code == 0, err
    assert "explained 3/3 images" in out and "img0.png: circle 0.900" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["complete"] and [r["image"] for r in summary["images"]] == [str(p) for p in images]
    first = summary["images"][0]
    assert first["predictions"][0]["label"] == "circle"
    assert first["geometry"]["original_size"] == [30, 40]
    assert len(first["files"]) == 2 * (2 + 1)  # 2 targets x (gradcam at 2 layers + saliency)
    for f in first["files"]:
        array = np.load(out_dir / f["npy"])
        assert array.dtype == np.float32
        with Image.open(out_dir / f["png"]) as im:
            assert im.format == "PNG"
    cam = np.load(out_dir / "maps" / "img0" / "gradcam_layer2_t1.npy")
    assert cam.shape == (4, 4) and cam.max() == 1.0  # image 0 -> value 1 in the fake
    index = (out_dir / "index.html").read_text()
    assert index.count("<section>") == 3 and "gallery/000_img0/gradcam_layer1_t0.png" in index


@pytest.mark.parametrize("gradients", ["heat", "gradient"])
def test_explain_draws_gradients_as_asked(conn: list[str], images: list[Path], tmp_path: Path, gradients: str) -> None:
    out_dir = tmp_path / gradients
    args = ["--method", "saliency", "--gradients", gradients, "--out", str(out_dir), "--no-progress", *conn]
    code, _, err = run("explain", str(images[1]), "--model", "shapes-classifier", *args)
    assert code == 0, err
    saliency = camserve.Map("saliency", "", 0, np.load(out_dir / "maps" / "img1" / "saliency_input_t0.npy"))
    expected = render.render_map(images[1], saliency, size=224, gradients=gradients)  # type: ignore[arg-type]
    with Image.open(out_dir / "maps" / "img1" / "saliency_input_t0.png") as im:
        np.testing.assert_array_equal(np.asarray(im), np.asarray(expected))


def test_explain_directory_regions_and_reconstruction(conn: list[str], images: list[Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "vae"
    code, _, err = run(
        "explain",
        str(images[0].parent),
        "--model",
        "vae",
        "--method",
        "area_saliency",
        "--region",
        "0,0,8,8",
        "--region",
        "4,4,16,16",
        "--reconstruction",
        "--out",
        str(out_dir),
        "--no-gallery",
        "--no-progress",
        *conn,
    )
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert len(summary["images"]) == 3
    files = {Path(f["npy"]).name for f in summary["images"][0]["files"]}
    assert files == {"area_saliency_input_r0.npy", "area_saliency_input_r1.npy"}
    assert np.load(out_dir / summary["images"][0]["reconstruction"]).shape == (INPUT, INPUT, 3)
    assert not (out_dir / "index.html").exists()


def test_explain_a_whole_image_map_draws_no_region(conn: list[str], images: list[Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "anomaly"
    method = ["--model", "vae", "--method", "anomaly_recon_error", "--region", "0,0,8,8", "--no-progress", *conn]
    code, _, err = run("explain", str(images[0]), *method, "--out", str(out_dir))
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    [record] = summary["images"][0]["files"]
    assert (record["target"], Path(record["npy"]).name) == (-1, "anomaly_recon_error_input_image.npy")
    m = camserve.Map("anomaly_recon_error", "", -1, np.load(out_dir / record["npy"]))
    with Image.open(out_dir / record["png"]) as im:
        drawn = np.asarray(im)
    with Image.open(images[0]) as original:
        w, h = original.size
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2  # the fake server's centre crop
    g = camserve.Geometry((h, w), camserve.Box(x0, y0, x0 + side, y0 + side), (INPUT, INPUT))
    plain = render.render_map(images[0], m, geometry=g, on_original=False, size=224)
    boxed = render.render_map(images[0], m, geometry=g, on_original=False, size=224, boxes=[(0, 0, 8, 8)])
    np.testing.assert_array_equal(drawn, np.asarray(plain))
    assert not np.array_equal(drawn, np.asarray(boxed))
    assert "whole image" in (out_dir / "index.html").read_text()


def test_failed_image_gives_exit_1(conn: list[str], images: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"BAD")
    code, out, _ = run(
        "explain", str(images[0]), str(bad), "--model", "shapes-classifier", "--out", str(tmp_path / "o"), *conn
    )
    assert code == cli.EXIT_PARTIAL
    assert "bad.png: error INVALID_ARGUMENT: cannot decode image" in out and "explained 1/2 images" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["images"][1]["error"]["field"] == "images[1].encoded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "/no/such.png", "--model", "m"], "no such image file"),
        (["explain", "IMG", "--model", "m", "--region", "1,2,3"], "--region must be"),
        (["explain", "IMG", "--model", "m", "--target", "1", "--target", "cat"], "not a mix"),
        (["explain", "IMG", "--model", "m", "--top-k", "0"], "--top-k"),
        (["explain", "IMG", "--model", "m", "--batch-size", "0"], "--batch-size"),
        (["explain", "EMPTYDIR", "--model", "m"], "no image files"),
        (["ping", "--address", ":1"], "address must be host:port"),
        (["ping", "--timeout", "0"], "timeout must be a positive"),
    ],
)
def test_usage_errors_are_2(args: list[str], message: str, images: list[Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = [str(images[0]) if a == "IMG" else str(tmp_path / "empty") if a == "EMPTYDIR" else a for a in args]
    code, _, err = run(*args, "--address", "127.0.0.1:1") if "--address" not in args else run(*args)
    assert code == cli.EXIT_USAGE
    assert message in err


def test_argparse_errors_are_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["explain", "x.png"]) == 2  # --model missing
    assert cli.run(["frobnicate"]) == 2
    assert "--model" in capsys.readouterr().err


def test_rejections_are_3(conn: list[str], images: list[Path], tmp_path: Path) -> None:
    code, _, err = run("explain", str(images[0]), "--model", "nope", "--out", str(tmp_path / "o"), *conn)
    assert code == 3 and "NotFound: Model not found: nope" in err and "camserve models" in err
    assert "ModelNotFoundException" not in err  # only the first line of the server's message
    code, _, err = run("explain", str(images[0]), "--model", "shapes-classifier", "--method", "bogus", *conn)
    assert code == 3 and "(field: methods[0])" in err


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 3),
        (grpc.StatusCode.INTERNAL, 6),
        (grpc.StatusCode.UNAVAILABLE, 4),
        (grpc.StatusCode.PERMISSION_DENIED, 5),
    ],
)
def test_status_exit_codes(
    conn: list[str], fake: FakeServer, images: list[Path], tmp_path: Path, status: grpc.StatusCode, expected: int
) -> None:
    fake.abort_code = status
    code, _, _ = run(
        "explain", str(images[0]), "--model", "shapes-classifier", "--out", str(tmp_path / "o"), "--retries", "0", *conn
    )
    assert code == expected
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["complete"] is False  # written even when the run stopped


def test_deadline_is_4(conn: list[str], fake: FakeServer, images: list[Path], tmp_path: Path) -> None:
    fake.delay = 1.0
    conn = [*conn[:-2], "--timeout", "0.2"]
    code, _, err = run("explain", str(images[0]), "--model", "shapes-classifier", "--out", str(tmp_path / "o"), *conn)
    assert code == 4 and "DeadlineExceeded" in err and "--timeout" in err


def test_exit_code_table() -> None:
    assert cli.exit_code(camserve.InvalidArgument("x")) == 3
    assert cli.exit_code(camserve.NotFound("x")) == 3
    assert cli.exit_code(camserve.ResourceExhausted("x")) == 3
    assert cli.exit_code(camserve.Unavailable("x")) == 4
    assert cli.exit_code(camserve.DeadlineExceeded("x")) == 4
    assert cli.exit_code(camserve.Unauthenticated("x")) == 5
    assert cli.exit_code(camserve.Internal("x")) == 6


def test_progress_line_on_stderr(conn: list[str], images: list[Path], tmp_path: Path) -> None:
    code, out, err = run(
        "explain", *map(str, images), "--model", "shapes-classifier", "--progress", "--out", str(tmp_path / "o"), *conn
    )
    assert code == 0
    assert "3/3 images" in err and "\r[" in err
    assert "img0.png:" not in out  # per-image lines give way to the progress line


def test_module_entry_point_exit_code(fake: FakeServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "camserve", "ping", "--address", fake.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "Healthy" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "camserve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "Exit codes" in done.stdout


def test_console_script_is_declared() -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "client" / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["camserve"] == "camserve.cli:main"
