"""The seams between camserve's top-level packages, read from the source with ``ast`` (nothing is imported).

Dependencies point one way: ``model_store`` and ``deploy`` may use the server (``handlers``), the SDK (``camserve``)
and the contract (``camserve_proto``) use nothing of ours but the contract. A cycle between top-level packages fails,
and so does the server importing the model repository or the client SDK: the archive's entry file hands the handler
its model, and the server speaks only the public ``camserve_proto`` distribution. Function-level and
``TYPE_CHECKING`` imports count like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES: Mapping[str, Path] = {
    "handlers": ROOT / "handlers",
    "model_store": ROOT / "model_store",
    "camserve": ROOT / "client" / "camserve",
    "deploy": ROOT / "deploy",
    "camserve_proto": ROOT / "proto" / "camserve_proto",
}


def _module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(PACKAGES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> Iterator[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``module``)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield str(node.module)
                continue
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            yield ".".join([*base, node.module] if node.module else base)


def module_imports() -> dict[str, set[str]]:
    """Every module of our packages -> the modules it imports."""
    out: dict[str, set[str]] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            module = _module_name(package, path)
            out[module] = set(_imports(path, module))
    return out


def package_graph(imports: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages of ours it imports."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, names in imports.items():
        source = module.split(".")[0]
        graph[source] |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES} - {source}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None`` when it has none."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    return module_imports()


def test_the_walk_sees_the_known_edges(imports: dict[str, set[str]]) -> None:
    graph = package_graph(imports)
    assert graph["handlers"] == {"camserve_proto"} and graph["camserve"] == {"camserve_proto"}
    assert graph["model_store"] == {"handlers"} and {"model_store", "camserve"} <= graph["deploy"]
    assert "handlers.serving" in imports["model_store.provider"]
    assert "handlers.serving._parse" in imports["handlers.serving._routing"]


def test_relative_imports_resolve_to_absolute_names(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("from . import a\nfrom ..b import c\nimport d.e\n\ndef f():\n    from .g import h\n")
    assert set(_imports(module, "pkg.sub.mod")) == {"pkg.sub", "pkg.b", "d.e", "pkg.sub.g"}
    package = tmp_path / "__init__.py"
    package.write_text("from .a import b\n")
    assert set(_imports(package, "pkg.sub")) == {"pkg.sub.a"}


def test_no_cycle_between_top_level_packages(imports: dict[str, set[str]]) -> None:
    graph = package_graph(imports)
    assert find_cycle(graph) is None, f"import cycle between top-level packages: {find_cycle(graph)}"


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("forbidden", ["model_store", "camserve", "deploy"])
def test_the_server_imports_neither_the_model_repository_nor_the_client(
    imports: dict[str, set[str]], forbidden: str
) -> None:
    offenders = {
        module: sorted(n for n in names if n.split(".")[0] == forbidden)
        for module, names in imports.items()
        if module.split(".")[0] == "handlers"
    }
    assert not {m: names for m, names in offenders.items() if names}


def test_the_engine_and_the_preprocessing_leaf_stay_free_of_serving(imports: dict[str, set[str]]) -> None:
    serving = ("handlers.serving", "camserve_proto", "google.protobuf", "grpc", "ts")
    for module, names in imports.items():
        if module.startswith("handlers.engine") or module == "handlers.preprocess":
            bad = sorted(n for n in names if n.split(".")[0] in serving or n.startswith(serving))
            assert not bad, f"{module} imports {bad}"
    assert not {n for n in imports["handlers.preprocess"] if n.startswith("handlers")}
