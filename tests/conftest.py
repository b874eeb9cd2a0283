"""Shared test fixtures. ``../shared`` (beside the checkout) holds real data; tests needing it skip without it.

Importable without torch (fixtures that need it import it when they run), so the runtime-only
tests also run from the torch-free install.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shared_data import LIIF_CKPT, REAL_HOME, need
from tests.tiny_models import make_tiny_eqsr

# The subpackages live at the top of the checkout and are linked into asisr/: imported by their
# top-level names they would load a second copy of the code (a second model registry, say).
LINKED = ("bench", "calibration", "evaluation", "export", "models", "runtime", "training")


class _LinkedPackageGuard(importlib.abc.MetaPathFinder):
    """``import models`` (or any linked subpackage by its folder name) fails, saying which name to use.

    ``python -m pytest`` puts the working directory on ``sys.path``; without this guard a stray
    ``import models.registry`` would quietly succeed from the checkout."""

    def find_spec(self, fullname, path=None, target=None):
        if path is None and fullname in LINKED:
            raise ImportError(f"import asisr.{fullname}, not {fullname}: the top-level folder is the same code "
                              "linked into the asisr package, and a second copy would hold its own state")
        return None


sys.meta_path.insert(0, _LinkedPackageGuard())


def _pip_cache() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return str(Path(xdg) / "pip" if xdg else REAL_HOME / ".cache" / "pip")


# What the suite redirects: asisr's cache, and the home-based cache and config folders of the
# libraries it drives (matplotlib's font cache, torch's hub), so the user's home is never written.
ISOLATED = ("ASISR_CACHE", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TORCH_HOME")


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory) -> Iterator[Path]:
    """Every cache and config path of the suite, and of the processes it starts, under one temporary folder.

    ``tests/test_isolation.py`` checks that a CLI run leaves the real home untouched. pip, run by
    the deployment test, keeps the user's own pip cache (``PIP_CACHE_DIR``): installing is pip's business.
    """
    root = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ISOLATED + ("PIP_CACHE_DIR",)}
    os.environ.setdefault("PIP_CACHE_DIR", _pip_cache())
    for name in ISOLATED:
        (root / name.lower()).mkdir()
        os.environ[name] = str(root / name.lower())
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def liif_ckpt() -> Path:
    return need(LIIF_CKPT)


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(path)`` run once per test run, whatever the number of xdist workers: the first worker
    to claim ``name`` makes it in a folder all workers see (their base temps are siblings), the
    others wait for the claim and use it. For exports and checkpoints, which take seconds to a minute.

    ``ASISR_TEST_MADE_ONCE`` names a folder kept across pytest runs instead: ``.ci/run`` gives both
    tiers one, so the full tier does not export again what the fast tier exported. It is not keyed
    on the code: give it a new folder for every checkout."""
    from asisr.locks import claim_for

    base = tmp_path_factory.getbasetemp()
    kept = os.environ.get("ASISR_TEST_MADE_ONCE")
    shared = Path(kept) if kept else (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made_once"
    shared.mkdir(parents=True, exist_ok=True)
    target = shared / name
    with claim_for(target):
        done = target.with_name(target.name + ".done")
        if not done.exists():
            make(target)
            done.touch()
    return target


def exported_once(tmp_path_factory, name: str, checkpoint: Path) -> Path:
    """``checkpoint`` exported to ONNX once for the whole run (see ``made_once``)."""
    def make(path: Path) -> None:
        from asisr.export.onnx import export_onnx
        from asisr.models import load

        export_onnx(load(checkpoint), path)

    return made_once(tmp_path_factory, name, make)


@pytest.fixture(scope="session")
def official_liif_onnx(liif_ckpt, tmp_path_factory) -> Path:
    """The official LIIF checkpoint exported once for the whole run."""
    return exported_once(tmp_path_factory, "official_liif_onnx", liif_ckpt)


@pytest.fixture(scope="session")
def tiny_liif_ckpt(tmp_path_factory) -> Path:
    """A small LIIF with random weights, saved in asisr's checkpoint format."""
    def make(path: Path) -> None:
        import torch

        from asisr.models import create, save

        torch.manual_seed(0)
        save(create("liif", n_resblocks=2, n_feats=16, hidden=[32, 32]), path)

    return made_once(tmp_path_factory, "tiny_liif.pt", make)


@pytest.fixture(scope="session")
def tiny_liif_onnx(tiny_liif_ckpt, tmp_path_factory) -> Path:
    return exported_once(tmp_path_factory, "tiny_liif_onnx", tiny_liif_ckpt)


@pytest.fixture(scope="session")
def tiny_eqsr(tmp_path_factory):
    """``get("light" | "hat") -> (model, onnx_dir)``: each tiny EQSR built (seed 0) in each worker and
    exported once for the whole run."""
    cache: dict = {}

    def get(which: str):
        if which not in cache:
            import torch

            from asisr.export.onnx import export_onnx

            torch.manual_seed(0)
            model = make_tiny_eqsr(which)
            cache[which] = model, made_once(tmp_path_factory, f"tiny_eqsr_{which}",
                                            lambda path: export_onnx(model, path))
        return cache[which]

    return get


@pytest.fixture(scope="session")
def upstream_eqsr(tmp_path_factory):
    """``(checkpoint, onnx_dir)``: the upstream EQSR fixture checkpoint, exported once for the run."""
    from tests.shared_data import SHARED

    ckpt = need(SHARED / "fixtures" / "eqsr_upstream_small" / "eqsr_upstream_small.pth")
    return ckpt, exported_once(tmp_path_factory, "upstream_eqsr_onnx", ckpt)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray cluster (2 CPUs) for every test that needs one; its GCS address.

    Shut down at the end of the session, so no Ray thread outlives the suite into interpreter exit."""
    ray = pytest.importorskip("ray", reason="needs Ray, an optional extra (pip install 'asisr[ray]')")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def pytest_terminal_summary(terminalreporter) -> None:
    """Say the random order's seed (``-q`` hides pytest-randomly's header), and name the threads still
    running once every fixture is torn down: what interpreter exit has to stop while native
    libraries tear themselves down (a crash there has no test to blame)."""
    import threading

    seed = getattr(terminalreporter.config.option, "randomly_seed", None)
    if isinstance(seed, int) and terminalreporter.config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"random order seed {seed} (repeat it: -p randomly --randomly-seed={seed})")
    alive = sorted(f"{t.name}{' (daemon)' if t.daemon else ''}" for t in threading.enumerate()
                   if t is not threading.main_thread())
    if alive:
        terminalreporter.write_line(f"threads still running after the last fixture: {', '.join(alive)}")


# Files whose tests are spread over the xdist workers one by one (long, independent tests); every
# other file stays on one worker, so its module fixtures are made once. Tests that share the Ray
# cluster share a worker (exports are shared across workers by made_once).
SPREAD = ("test_acceptance_liif.py", "test_official_layouts.py")
SHARED_GROUPS = {"ray_cluster": "ray"}


def pytest_collection_modifyitems(config, items) -> None:
    """xdist groups for ``--dist loadgroup`` (harmless without xdist)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        group = next((g for f, g in SHARED_GROUPS.items() if f in names), None)
        if group is None and item.path.name not in SPREAD:
            group = item.path.name
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
