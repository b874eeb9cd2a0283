"""Getting onto a Ray cluster: the extra's one-line error, and joining or starting a cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from asisr.errors import UserError

RAY_EXTRA = "pip install 'asisr[ray]'"


def require_ray(what: str) -> None:
    """One line naming the extra, instead of an ImportError from deep inside Ray."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs Ray, which is not installed ({RAY_EXTRA})") from None


@contextmanager
def ray_cluster(address: str | None, what: str) -> Iterator[None]:
    """Ray for the duration of a run: reused if this process already joined one (tests, notebooks),
    else ``address`` joined, or a local cluster started on this machine (and stopped after)."""
    require_ray(what)
    import ray

    if ray.is_initialized():
        yield
        return
    starting = {} if address else {"include_dashboard": False}  # joining: the cluster's own settings stand
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **starting)
    except ConnectionError as e:
        raise UserError(f"cannot join the Ray cluster at {address}: {' '.join(str(e).split())}") from None
    try:
        yield
    finally:
        ray.shutdown()


def cluster_capacity() -> dict[str, float]:
    """CPUs and GPUs of the whole cluster, as Ray counts them."""
    import ray

    resources = ray.cluster_resources()
    return {"CPU": float(resources.get("CPU", 0)), "GPU": float(resources.get("GPU", 0))}
