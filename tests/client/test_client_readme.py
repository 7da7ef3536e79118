"""The README's "Use it from Python" example runs verbatim against the real server.

The section lives in client/README.md and is mirrored into the repository's README.md; both copies are run, and
they must not drift apart.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "Use it from Python"
MODEL = "imagenet-efficientnet-lite0"


def python_block(readme: Path) -> str | None:
    """The first ```python block of the section, or None when the file has no such section."""
    text = readme.read_text(encoding="utf-8")
    heading = re.search(rf"^(#+) {re.escape(SECTION)}\s*$", text, flags=re.MULTILINE)
    if heading is None:
        return None
    level = len(heading.group(1))
    rest = text[heading.end() :]
    following = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    section = rest[: following.start()] if following else rest
    block = re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise AssertionError(f"{readme}: section {SECTION!r} has no python code block")
    return block.group(1)


def test_the_two_copies_agree() -> None:
    ours = python_block(ROOT / "client" / "README.md")
    assert ours is not None, "client/README.md must have the section"
    mirrored = python_block(ROOT / "README.md")
    if mirrored is None:
        pytest.skip(f"README.md has no {SECTION!r} section yet (the lead mirrors it from client/README.md)")
    assert mirrored == ours, "README.md and client/README.md differ: copy client/README.md's section"


@pytest.mark.integration
@pytest.mark.parametrize("readme", ["client/README.md", "README.md"])
def test_example_runs_verbatim(
    readme: str, camserve_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = python_block(ROOT / readme)
    if code is None:
        pytest.skip(f"{readme} has no {SECTION!r} section yet (the lead mirrors it from client/README.md)")
    camserve_server.require(MODEL)
    # The example's own instructions: the environment variables, and the repository's root as working folder
    # (a copy of its sample photographs, so the pictures it saves land in a temporary folder).
    monkeypatch.setenv("CAMSERVE_ADDRESS", camserve_server.address)
    monkeypatch.setenv("CAMSERVE_TOKEN_FILE", str(camserve_server.key_file))
    shutil.copytree(ROOT / "model_store" / "samples", tmp_path / "model_store" / "samples")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{readme}:{SECTION}", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    assert printed.splitlines()[0] == "Healthy"
    assert "Egyptian cat" in printed
    assert "gradcam _bn1 (7, 7)" in printed and "(224, 224) 1.0" in printed
    assert "failed: " in printed and "not served: Model not found" in printed
    for picture in ("cat_gradcam.png", "cat_guided.png"):
        assert (tmp_path / picture).stat().st_size > 1000
