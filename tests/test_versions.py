"""One version: VERSION at the top is the source; every copy and pin of it in the repo must agree.

The server's pyproject reads VERSION itself (setuptools dynamic version). The client's and proto's pyprojects
cannot (setuptools reads no file outside a project's folder), so they, the ``camserve-proto`` pins, the SDK's
``__version__`` and the deploy manifests' image tags are copies this test holds to VERSION.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import camserve
import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = (ROOT / "VERSION").read_text().strip()


def _project(path: str) -> dict[str, object]:
    project = tomllib.loads((ROOT / path).read_text())["project"]
    assert isinstance(project, dict)
    return project


def test_version_file_holds_one_release_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), f"VERSION holds {VERSION!r}"


def test_the_server_reads_the_version_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"file": "VERSION"}


@pytest.mark.parametrize("path", ["client/pyproject.toml", "proto/pyproject.toml"])
def test_sub_project_versions_are_the_version_file(path: str) -> None:
    assert _project(path)["version"] == VERSION, f"{path} says {_project(path)['version']}, VERSION says {VERSION}"


@pytest.mark.parametrize("path", ["pyproject.toml", "client/pyproject.toml"])
def test_the_contract_pin_is_the_version_file(path: str) -> None:
    dependencies = _project(path)["dependencies"]
    assert isinstance(dependencies, list)
    pins = [d for d in dependencies if d.startswith("camserve-proto")]
    assert pins == [f"camserve-proto=={VERSION}"], f"{path}: {pins}"


def test_the_sdk_reports_the_version_file() -> None:
    assert camserve.__version__ == VERSION


def test_deploy_image_tags_are_the_version_file() -> None:
    manifests = sorted((ROOT / "deploy").rglob("*.yaml"))
    tags = {(m.name, t) for m in manifests for t in re.findall(r"\bcamserve:(\d[\w.]*)", m.read_text())}
    assert tags, "no camserve:<version> image tag found under deploy/"
    assert {t for _, t in tags} == {VERSION}, sorted(tags)


def test_the_changelog_has_no_release_beyond_the_version_file() -> None:
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    newest = max((tuple(int(p) for p in v.split(".")) for v in released), default=None)
    assert newest is None or newest <= tuple(int(p) for p in VERSION.split(".")), released
