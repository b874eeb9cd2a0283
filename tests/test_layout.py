"""The shape of the code: layers that point one way, and imports that static analysis resolves.

The contracts are in ``pyproject.toml`` (``[tool.importlinter]``, ``[tool.pyright]``). The
forbidden-import contract is also shown to fail: a copy of the package with ``import torch``
added to the runtime core must be refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("asisr", "models", "export", "runtime", "calibration", "evaluation", "training", "bench")


def _tool(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed (pip install '.[test]')")
        path = Path(found)
    return path


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_hold():
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_a_torch_import_in_the_runtime_core_breaks_the_contract(tmp_path):
    """The contract can fail: the same check on a copy whose pipeline imports torch."""
    for name in PACKAGE_DIRS:
        shutil.copytree(ROOT / name, tmp_path / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.onnx"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    pipeline = tmp_path / "runtime" / "pipeline.py"
    pipeline.write_text(pipeline.read_text().replace("import numpy as np\n", "import numpy as np\nimport torch\n", 1))
    run = _lint_imports(tmp_path)
    assert run.returncode != 0
    assert "asisr.runtime.pipeline is not allowed to import torch" in run.stdout, run.stdout[-4000:]


@pytest.mark.slow
def test_static_analysis_resolves_every_import():
    run = subprocess.run([_tool("pyright")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 errors" in run.stdout


def test_a_linked_subpackage_is_not_importable_by_its_folder_name():
    """``models/`` is ``asisr.models``: importing it as ``models`` would load a second copy (a second
    registry); the suite's guard (tests/conftest.py) turns that into an error that names the right import."""
    import importlib

    with pytest.raises(ImportError, match="import asisr.models, not models"):
        importlib.import_module("models.registry")
    assert importlib.import_module("asisr.models.registry").__name__ == "asisr.models.registry"
