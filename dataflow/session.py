"""The process-wide runtime session: which backend runs pipelines.

``init()`` is optional: the first execution starts the default backend lazily
(``local``, or the one named by ``DATAFLOW_BACKEND``).

>>> import dataflow as df
>>> _ = df.init(backend="inline")  # in-process, synchronous: for debugging
>>> df.shutdown()
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from typing import Any

from dataflow import metrics
from runtime.backends import get_backend_class
from runtime.backends.base import Backend

_PRESTART_WAIT_S = 60.0  # give up waiting (workers still boot) on a very slow machine
_lock = threading.RLock()
_backend: Backend | None = None


def init(
    backend: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    object_store_memory: int | None = None,
    prestart_workers: bool = False,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    **backend_options: Any,
) -> Backend:
    """Start (or restart) the runtime with ``backend`` ("local", "inline" or "ray").

    ``num_gpus`` declares GPUs instead of detecting them; ``object_store_memory``
    caps the shared-memory store (default 30 % of RAM). ``prestart_workers=True``
    boots the local backend's CPU workers now and waits until they are ready, so
    that the first pipeline does not pay for them (as ``ray.init`` does); by
    default they start with the first plan that needs them. ``metrics_port``
    serves Prometheus metrics of every pipeline at ``http://127.0.0.1:PORT/metrics``
    from now on (``metrics_host`` to bind another interface; the ``metrics``
    extra; see ``dataflow.metrics``); it sets ``DataContext.metrics_port``. Extra
    keywords go to the backend (e.g. ``address=`` for ray).

    Under ``torchrun`` (``LOCAL_WORLD_SIZE`` ranks on this machine, each with
    its own session) the local backend's defaults are a rank's share of the
    machine: ``1 / LOCAL_WORLD_SIZE`` of the CPUs and of the store's memory.

    >>> init("local", num_cpus=2, prestart_workers=True)  # doctest: +SKIP
    """
    global _backend
    name = backend or os.environ.get("DATAFLOW_BACKEND", "local")
    if name == "local":
        num_cpus, object_store_memory = _rank_defaults(num_cpus, object_store_memory)
    if name == "ray" and "address" not in backend_options:
        address = ray_address_from_env(os.environ)
        if address is not None:
            backend_options["address"] = address
    if name == "local":
        from dataflow.context import DataContext

        spill_path = DataContext.get_current().spill_path
        if spill_path is not None:
            backend_options.setdefault("spill_dir", spill_path)
        # Every task a worker runs is a dataflow function and most pipelines
        # read or write Parquet: import them while booting, not in the first
        # task. Not pandas (0.43 CPU-s a worker): blocks cross to numpy and back
        # without it, so only a pandas UDF's worker pays for it, on first use.
        backend_options.setdefault("preload", ("dataflow.exec.transforms", "pyarrow.parquet"))
    cls = get_backend_class(name)
    if metrics_port is not None or metrics_host is not None:
        from dataflow.context import DataContext

        ctx = DataContext.get_current()
        ctx.metrics_port = metrics_port if metrics_port is not None else ctx.metrics_port
        ctx.metrics_host = metrics_host or ctx.metrics_host
        if ctx.metrics_port is not None:
            metrics.start_metrics_server(ctx.metrics_port, ctx.metrics_host)
    with _lock:
        if _backend is not None:
            _backend.shutdown()
            _backend = None
        _backend = cls(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            object_store_memory=object_store_memory,
            **backend_options,
        )
        if prestart_workers:
            _backend.prestart(wait=_PRESTART_WAIT_S)
        return _backend


def ray_address_from_env(environ: Mapping[str, str]) -> str | None:
    """The Ray cluster the ray backend joins when ``init`` names none:
    ``DATAFLOW_RAY_ADDRESS``, else ``RAY_ADDRESS`` (what Ray sets for a job's
    entrypoint, e.g. under KubeRay's ``RayJob`` or ``ray job submit``), else None:
    a private single-node Ray on 127.0.0.1.

    >>> ray_address_from_env({"RAY_ADDRESS": "10.0.0.1:6379"})
    '10.0.0.1:6379'
    >>> ray_address_from_env({"DATAFLOW_RAY_ADDRESS": "auto", "RAY_ADDRESS": "x:1"})
    'auto'
    """
    return environ.get("DATAFLOW_RAY_ADDRESS") or environ.get("RAY_ADDRESS") or None


def _rank_defaults(
    num_cpus: float | None, object_store_memory: int | None
) -> tuple[float | None, int | None]:
    """The local backend's sizes, split between the ``LOCAL_WORLD_SIZE`` ranks of
    a torchrun job on this machine (where not given)."""
    try:
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        return num_cpus, object_store_memory
    if ranks <= 1:
        return num_cpus, object_store_memory
    from runtime.resources import detect_num_cpus
    from runtime.store import default_capacity, default_shm_root

    if num_cpus is None:
        num_cpus = max(1, detect_num_cpus() // ranks)
    if object_store_memory is None:
        object_store_memory = default_capacity(default_shm_root()) // ranks
    return num_cpus, object_store_memory


def get_backend() -> Backend:
    """The running backend, starting the default one on first use."""
    with _lock:
        if _backend is None:
            return init()
        return _backend


def is_initialized() -> bool:
    return _backend is not None


def _forget_after_fork() -> None:
    """In a forked child (a DataLoader worker, a multiprocessing fork pool) the
    backend is the parent's: its threads did not survive the fork and its workers
    and shared memory belong to the parent. The child never uses or shuts it
    down (kept referenced so that no finalizer runs here); its first pipeline
    starts a backend of its own."""
    global _backend, _lock
    _lock = threading.RLock()  # another thread may have held it at the fork
    if _backend is not None:
        _inherited.append(_backend)
        _backend = None


_inherited: list[Backend] = []
os.register_at_fork(after_in_child=_forget_after_fork)


def running_backend() -> Backend | None:
    """The running backend, or None; never starts one (for observers such as
    the metrics server, which must not start a runtime by looking at it)."""
    return _backend


metrics.watch_backend(running_backend)


def shutdown() -> None:
    """Stop workers, free every object of this session and stop the metrics
    server (idempotent)."""
    global _backend
    metrics.stop_metrics_server()
    with _lock:
        if _backend is not None:
            try:
                _backend.shutdown()
            finally:
                _backend = None


atexit.register(shutdown)
