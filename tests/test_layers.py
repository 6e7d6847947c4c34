"""Imports run one way: each layer imports only from layers below it, and no module imports itself in a circle.

The layer contract is ``[tool.importlinter]`` in pyproject.toml (docs/architecture.md explains the layers);
the cycle check walks grimp's import graph of every module, function-level and TYPE_CHECKING imports included.
The last two tests plant a wrong-way import and a circle in a copy of the package and see both caught.
"""

from __future__ import annotations

import graphlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the package and pyproject.toml under ``root`` (cwd first on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def find_cycle(package: str) -> list[str] | None:
    """One import circle among the modules of ``package`` (``[a, b, ..., a]``), or None when there is none."""
    graph = grimp.build_graph(package)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    try:
        tuple(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def find_cycle_in_copy(root: Path) -> str:
    """:func:`find_cycle` run in a child process on the ``streamproc`` package under ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run(
        [sys.executable, __file__], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return res.stdout.strip()


def copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "streamproc", tmp_path / "streamproc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_layer_contracts_are_kept() -> None:
    """Every contract in pyproject.toml holds for the package as it is."""
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 2 kept, 0 broken." in res.stdout


def test_no_module_imports_itself_in_a_circle() -> None:
    """No chain of imports among streamproc's modules leads back to where it started."""
    assert find_cycle("streamproc") is None


def test_a_wrong_way_import_breaks_the_layer_contract(tmp_path: Path) -> None:
    """The pure core importing the Redis side is reported, naming the offending import."""
    root = copy_of_package(tmp_path)
    with (root / "streamproc/core/fold.py").open("a") as f:
        f.write("\nfrom streamproc.redis import client as _client  # wrong way: core above redis\n")
    res = lint_imports(root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Layers import downwards only BROKEN" in res.stdout
    assert "streamproc.core.fold -> streamproc.redis.client" in res.stdout


def test_an_import_circle_is_found(tmp_path: Path) -> None:
    """wire importing rollup_decl (which imports wire) is a circle both checks report."""
    root = copy_of_package(tmp_path)
    with (root / "streamproc/core/wire.py").open("a") as f:
        f.write("\nfrom streamproc.core import rollup_decl as _decl  # a circle: rollup_decl imports wire\n")
    res = lint_imports(root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "No import cycles between sibling modules or packages, at any depth BROKEN" in res.stdout
    cycle = find_cycle_in_copy(root).split()
    assert set(cycle) == {"streamproc.core.wire", "streamproc.core.rollup_decl"}, cycle


if __name__ == "__main__":  # used by find_cycle_in_copy: print the circle found, if any
    print(" ".join(find_cycle("streamproc") or []))
