"""Ray Data's calling conventions, in one place: what each Ray-only argument
means here (or why it is refused), compute strategies, renamed keywords, and
the ``ray`` namespace that runs a Ray Data script with only its import changed.

Every ``Dataset`` method and reader takes Ray Data 2.60's parameters with
Ray's names, order and defaults (``docs/ray_compat.md`` lists each one).
A parameter that only makes sense on a Ray cluster is never ignored: it is
either given the meaning it can have here (``ray_remote_args={"num_cpus": 2}``
reserves two CPUs per task) or refused with a ``PlanError`` that names it and
says why:

>>> check_ray_only("map_batches(f)", runtime_env={"pip": ["torch"]})
Traceback (most recent call last):
...
dataflow.errors.PlanError: map_batches(f): runtime_env={'pip': ['torch']} sets up a Ray worker's environment (packages, variables, working directory); dataflow's workers inherit this process's environment: install the packages and set the variables before the run, and drop runtime_env

A Ray Data script runs after one import line changes:

>>> from dataflow.compat import ray            # was: import ray
>>> ray.data.range(3).take_all()               # doctest: +SKIP
[{'id': 0}, {'id': 1}, {'id': 2}]
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from dataflow.errors import PlanError

# -- Ray-only parameters -----------------------------------------------------------------

_RAY_ONLY: dict[str, str] = {
    "label_selector": (
        "selects Ray nodes by label; dataflow places a stage by the resources it asks "
        "for (num_cpus, num_gpus, memory, resources): drop label_selector, or ask for a "
        "custom resource that only the right workers have"
    ),
    "fallback_strategy": (
        "is Ray's fallback for label_selector, which dataflow does not have: drop it"
    ),
    "max_calls": (
        "restarts a Ray task worker after that many calls; dataflow's workers serve the "
        "whole run: drop max_calls (a UDF that leaks memory must release it itself)"
    ),
    "accelerator_type": (
        "asks Ray for a GPU model; dataflow hands out this machine's GPUs by count: "
        "drop accelerator_type and keep num_gpus"
    ),
    "runtime_env": (
        "sets up a Ray worker's environment (packages, variables, working directory); "
        "dataflow's workers inherit this process's environment: install the packages and "
        "set the variables before the run, and drop runtime_env"
    ),
    "ray_remote_args_fn": (
        "computes Ray remote() arguments per task; dataflow fixes a stage's resources "
        "when it is planned: pass num_cpus / num_gpus / memory / resources instead"
    ),
    "scheduling_strategy": (
        "places Ray tasks on nodes (SPREAD, node affinity, placement groups); dataflow "
        "schedules by resources only: drop it"
    ),
    "aggregator_ray_remote_args": (
        "configures the Ray actors of Ray Data's hash shuffle; dataflow's exchanges run "
        "as tasks of one CPU: drop it"
    ),
    "partition_size_hint": (
        "sizes the memory of Ray Data's hash-shuffle aggregator actors; dataflow's "
        "exchange sizes its partitions from the blocks' metadata: drop it"
    ),
    "catalog": (
        "is a Ray Data Catalog (Unity Catalog, Glue...) resolving a table name to files; "
        "dataflow reads paths: pass the table's path (and filesystem=) instead"
    ),
    "locality_hints": (
        "pins splits to Ray nodes; dataflow's splits are served to any consumer: drop it"
    ),
    "meta_provider": (
        "is Ray's file metadata provider; dataflow reads file sizes and footers itself: drop it"
    ),
}
"""Ray-only parameters dataflow refuses, each with the reason it gives."""

_RETRY_KEYS = ("max_retries", "retry_exceptions", "max_task_retries", "max_restarts")
_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources")


def check_ray_only(where: str, **values: Any) -> None:
    """Raise a ``PlanError`` for the first Ray-only parameter given a value
    (``None``, ``{}`` and ``[]`` mean "not given").

    >>> check_ray_only("map(f)", label_selector=None, max_calls=None)  # nothing given: fine
    """
    for name, value in values.items():
        if value is None or (isinstance(value, (dict, list, tuple)) and not value):
            continue
        reason = _RAY_ONLY.get(name)
        if reason is None:
            raise AssertionError(f"check_ray_only: no reason written for {name!r}")
        raise PlanError(f"{where}: {name}={value!r} {reason}")


def merge_remote_args(
    where: str,
    ray_remote_args: Mapping[str, Any] | None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    resources: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """``num_cpus``/``num_gpus``/``memory``/``resources`` with the ones given in
    Ray's ``ray_remote_args`` (a dict, or ``**ray_remote_args``) folded in: those
    are the only Ray ``remote()`` options that mean something here (what a task
    reserves). Any other key raises a ``PlanError`` naming it.

    >>> merge_remote_args("map(f)", {"num_cpus": 2}, num_gpus=1)
    {'num_cpus': 2, 'num_gpus': 1, 'memory': None, 'resources': None}
    """
    out: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "memory": memory,
        "resources": resources,
    }
    if ray_remote_args is None:
        return out
    if not isinstance(ray_remote_args, Mapping):
        raise PlanError(
            f"{where}: ray_remote_args must be a dict, got {type(ray_remote_args).__name__}"
        )
    nested = ray_remote_args.get("ray_remote_args")
    if isinstance(nested, Mapping):  # ray_remote_args={...} given to a **ray_remote_args
        ray_remote_args = {
            **nested,
            **{k: v for k, v in ray_remote_args.items() if k != "ray_remote_args"},
        }
    for key, value in ray_remote_args.items():
        if key in _RESOURCE_KEYS:
            if out[key] is not None and out[key] != value:
                raise PlanError(
                    f"{where}: {key} is given twice ({out[key]!r} and ray_remote_args "
                    f"{key}={value!r}); give it once"
                )
            out[key] = value
        elif key in _RAY_ONLY:
            check_ray_only(where, **{key: value})
        elif key in _RETRY_KEYS:
            raise PlanError(
                f"{where}: ray_remote_args {key}={value!r}: dataflow retries every task whose "
                "worker died DataContext.max_task_retries times and never retries user-code "
                "errors (use on_error= or DataContext.max_errored_blocks): drop it"
            )
        else:
            raise PlanError(
                f"{where}: ray_remote_args {key}={value!r} is a Ray remote() option with no "
                f"meaning in dataflow; the ones it takes are {', '.join(_RESOURCE_KEYS)}"
            )
    return out


def parallelism_arg(where: str, parallelism: int, override_num_blocks: int | None) -> int | None:
    """Ray's deprecated ``parallelism`` (-1: automatic) as ``override_num_blocks``.

    >>> parallelism_arg("read_csv", 8, None)
    8
    """
    if parallelism == -1 or parallelism is None:
        return override_num_blocks
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise PlanError(
            f"{where}: parallelism must be -1 (automatic) or a positive int, got {parallelism!r}"
        )
    if override_num_blocks is not None and override_num_blocks != parallelism:
        raise PlanError(
            f"{where}: parallelism={parallelism} and override_num_blocks={override_num_blocks} "
            "disagree; parallelism is Ray's old name of override_num_blocks: give only that"
        )
    return parallelism


# -- compute strategies -------------------------------------------------------------------


class TaskPoolStrategy:
    """Ray Data's ``compute=TaskPoolStrategy(size=n)``: a function UDF runs as
    tasks, at most ``size`` at once (None: as many as the resources allow).
    Same as ``concurrency=n``.

    >>> ds.map_batches(fn, compute=TaskPoolStrategy(size=4))  # doctest: +SKIP
    """

    def __init__(self, size: int | None = None) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"TaskPoolStrategy: size must be a positive int, got {size!r}")
        self.size = size

    def __repr__(self) -> str:
        return f"TaskPoolStrategy(size={self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskPoolStrategy) and other.size == self.size

    def __hash__(self) -> int:
        return hash(("tasks", self.size))


class ActorPoolStrategy:
    """Ray Data's ``compute=ActorPoolStrategy(...)``: a callable class runs on a
    pool of long-lived workers, ``size`` of them, or autoscaling between
    ``min_size`` and ``max_size`` (starting at ``initial_size``). Same as
    ``concurrency=n`` / ``(min, max)`` / ``(min, max, initial)``.
    ``max_tasks_in_flight_per_actor`` is ``DataContext.actor_max_tasks_in_flight``
    for this pool.

    >>> ds.map_batches(Model, compute=ActorPoolStrategy(min_size=1, max_size=4))  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        size: int | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        initial_size: int | None = None,
        max_tasks_in_flight_per_actor: int | None = None,
        max_concurrent_calls_per_actor: int | None = None,
        enable_true_multi_threading: bool | None = None,
    ) -> None:
        def whole(name: str, v: Any, least: int) -> None:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
                raise ValueError(f"ActorPoolStrategy: {name} must be an int >= {least}, got {v!r}")

        whole("size", size, 1)
        whole("min_size", min_size, 1)
        whole("max_size", max_size, 1)
        whole("initial_size", initial_size, 1)
        whole("max_tasks_in_flight_per_actor", max_tasks_in_flight_per_actor, 1)
        if size is not None and (min_size is not None or max_size is not None):
            raise ValueError("ActorPoolStrategy: give size, or min_size/max_size, not both")
        if min_size is not None and max_size is not None and min_size > max_size:
            raise ValueError(
                f"ActorPoolStrategy: min_size ({min_size}) must be <= max_size ({max_size})"
            )
        if max_concurrent_calls_per_actor not in (None, 1):
            raise PlanError(
                "ActorPoolStrategy: max_concurrent_calls_per_actor runs several calls of one "
                "actor at once (threaded actors); dataflow's actors run one batch at a time: "
                "drop it and raise max_size instead"
            )
        if enable_true_multi_threading:
            raise PlanError(
                "ActorPoolStrategy: enable_true_multi_threading runs an actor's calls on "
                "threads; dataflow's actors run one batch at a time: drop it"
            )
        self.min_size = size if size is not None else (min_size or 1)
        self.max_size = size if size is not None else max_size
        self.initial_size = initial_size
        self.max_tasks_in_flight_per_actor = max_tasks_in_flight_per_actor
        if initial_size is not None and (
            initial_size < self.min_size or (self.max_size and initial_size > self.max_size)
        ):
            raise ValueError(
                f"ActorPoolStrategy: initial_size ({initial_size}) must be within "
                f"[min_size, max_size] = [{self.min_size}, {self.max_size}]"
            )

    def __repr__(self) -> str:
        return f"ActorPoolStrategy(min_size={self.min_size}, max_size={self.max_size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorPoolStrategy) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash(("actors", self.min_size, self.max_size, self.initial_size))


def compute_as_concurrency(where: str, compute: Any, concurrency: Any, is_class: bool) -> Any:
    """Ray's ``compute=`` folded into ``concurrency`` (one of them, not both):
    ``TaskPoolStrategy(size=n)`` is ``n``; ``ActorPoolStrategy`` is ``n``,
    ``(min, max)`` or ``(min, max, initial)``; the strings "tasks" and "actors"
    pick the pool kind.

    >>> compute_as_concurrency("map_batches(M)", ActorPoolStrategy(min_size=1, max_size=4), None, True)
    (1, 4)
    >>> compute_as_concurrency("map_batches(M)", ActorPoolStrategy(), None, True)
    (1, None)
    """
    if compute is None:
        return concurrency
    if concurrency is not None:
        raise PlanError(
            f"{where}: give compute= or concurrency=, not both (concurrency is the short form)"
        )
    if compute == "tasks":
        compute = TaskPoolStrategy()
    elif compute == "actors":
        compute = ActorPoolStrategy()
    if isinstance(compute, TaskPoolStrategy):
        if is_class:
            raise PlanError(
                f"{where}: a callable class runs on an actor pool; pass "
                "compute=ActorPoolStrategy(...) (or concurrency=) instead of TaskPoolStrategy"
            )
        return compute.size
    if isinstance(compute, ActorPoolStrategy):
        if not is_class:
            raise PlanError(
                f"{where}: ActorPoolStrategy needs a callable class (its __init__ runs once per "
                "worker); a function runs as tasks: use TaskPoolStrategy or concurrency=n"
            )
        lo, hi, initial = compute.min_size, compute.max_size, compute.initial_size
        # (lo, None): no upper bound but what the resources allow.
        if initial is not None:
            return (lo, hi, initial)
        return lo if lo == hi else (lo, hi)
    raise PlanError(
        f"{where}: compute must be dataflow.TaskPoolStrategy, dataflow.ActorPoolStrategy, "
        f"'tasks' or 'actors', got {compute!r}"
    )


# -- renamed keywords ---------------------------------------------------------------------


def renamed_keywords(**renames: str) -> Callable[[Callable], Callable]:
    """Let callers keep using a keyword that was renamed to Ray Data's name, with
    a ``FutureWarning``; ``inspect.signature`` shows the new signature only.

    >>> @renamed_keywords(n="limit")
    ... def take(self, limit=20): return limit
    >>> import warnings; warnings.simplefilter("ignore", FutureWarning)
    >>> take(None, n=3)
    3
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__qualname__}() got {old}= and {new}=; {old} is the old "
                            f"name of {new}: give only {new}="
                        )
                    warnings.warn(
                        f"{fn.__qualname__}({old}=...) is deprecated: the keyword is now "
                        f"{new}= (Ray Data's name); {old}= stops working in dataflow 0.3",
                        FutureWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.__renamed_keywords__ = dict(renames)  # type: ignore[attr-defined]
        return wrapper

    return decorate


# -- the ``ray`` namespace of a ported script -----------------------------------------------


class _RayNamespace:
    """What a Ray Data script touches of ``ray``: ``ray.data`` is dataflow,
    ``ray.init``/``ray.shutdown``/``ray.is_initialized`` manage dataflow's session."""

    @property
    def data(self) -> Any:
        # The package this module belongs to, which Python imported before it:
        # no import needed (an import of the package root here would close a cycle).
        return sys.modules[__package__]

    def init(
        self,
        address: str | None = None,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        object_store_memory: int | None = None,
        ignore_reinit_error: bool = False,
        **kwargs: Any,
    ) -> Any:
        """``ray.init()``: start dataflow's local backend (or, with an
        ``address``, the ray backend on that cluster)."""
        from dataflow import session

        if kwargs:
            raise PlanError(
                f"ray.init: {', '.join(sorted(kwargs))} configure a Ray cluster; the dataflow "
                "session takes address, num_cpus, num_gpus and object_store_memory"
            )
        if session.is_initialized() and not ignore_reinit_error and address is None:
            return session.get_backend()
        backend = "ray" if address is not None else None
        options = {"address": address} if address is not None else {}
        return session.init(
            backend,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            object_store_memory=object_store_memory,
            **options,
        )

    def shutdown(self) -> None:
        from dataflow import session

        session.shutdown()

    def is_initialized(self) -> bool:
        from dataflow import session

        return session.is_initialized()


ray = _RayNamespace()
"""``from dataflow.compat import ray`` in place of ``import ray``."""


__all__ = [
    "ActorPoolStrategy",
    "TaskPoolStrategy",
    "check_ray_only",
    "compute_as_concurrency",
    "merge_remote_args",
    "parallelism_arg",
    "ray",
    "renamed_keywords",
]
