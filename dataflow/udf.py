"""How a user function becomes a stage: the arguments every UDF transform shares
(``fn``, ``fn_args``..., ``concurrency``, ``num_cpus``/``num_gpus``/``memory``/
``resources``, ``on_error``), validated into the fields of a logical node.

Messages name the transform, the function and the argument:

>>> udf_fields("map_batches", fn=len, concurrency=(1, 4))
Traceback (most recent call last):
...
dataflow.errors.PlanError: map_batches(len): concurrency=(min, max) autoscales an actor pool and needs a callable class; for a function pass concurrency=n (at most n tasks at once)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from dataflow.compat import check_ray_only, compute_as_concurrency, merge_remote_args
from dataflow.errors import PlanError
from dataflow.plan.logical import Compute, check_on_error
from dataflow.validate import check_callable
from runtime.resources import Resources

UDF_ARGS = (
    "fn",
    "compute",
    "fn_args",
    "fn_kwargs",
    "fn_constructor_args",
    "fn_constructor_kwargs",
    "num_cpus",
    "num_gpus",
    "memory",
    "concurrency",
    "label_selector",
    "fallback_strategy",
    "max_calls",
    "resources",
    "accelerator_type",
    "runtime_env",
    "ray_remote_args_fn",
    "ray_remote_args",
    "on_error",
)
"""The keyword arguments of ``udf_fields``: what map, flat_map, filter and
map_batches share (Ray Data's, plus ``on_error``)."""


def fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def udf_fields(
    method: str,
    *,
    fn: Any,
    compute: Any = None,
    fn_args: Sequence[Any] | None = None,
    fn_kwargs: Mapping[str, Any] | None = None,
    fn_constructor_args: Sequence[Any] | None = None,
    fn_constructor_kwargs: Mapping[str, Any] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    concurrency: int | tuple[int, ...] | None = None,
    label_selector: Any = None,
    fallback_strategy: Any = None,
    max_calls: int | None = None,
    resources: Mapping[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: Any = None,
    ray_remote_args_fn: Any = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Validate the arguments every UDF transform shares; the fields of its node.
    Messages name the transform and the function: ``map_batches(embed): ...``.
    Ray's ``compute=`` strategies become ``concurrency``; ``ray_remote_args``
    may reserve resources; the other Ray-only arguments are refused
    (``dataflow.compat``)."""
    where = f"{method}({fn_name(fn)})"
    is_class = isinstance(fn, type)
    check_callable(where if is_class else method, fn)  # a non-callable has no name to show
    check_ray_only(
        where,
        label_selector=label_selector,
        fallback_strategy=fallback_strategy,
        max_calls=max_calls,
        accelerator_type=accelerator_type,
        runtime_env=runtime_env,
        ray_remote_args_fn=ray_remote_args_fn,
    )
    amounts = merge_remote_args(
        where,
        ray_remote_args,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        memory=memory,
        resources=resources,
    )
    in_flight = getattr(compute, "max_tasks_in_flight_per_actor", None)
    concurrency = compute_as_concurrency(where, compute, concurrency, is_class)
    fn_args = () if fn_args is None else fn_args
    fn_constructor_args = () if fn_constructor_args is None else fn_constructor_args
    if not is_class and (fn_constructor_args or fn_constructor_kwargs):
        raise PlanError(
            f"{where}: fn_constructor_args/fn_constructor_kwargs are only for callable "
            "classes; pass arguments of a function with fn_args/fn_kwargs"
        )
    for name, value in (("fn_kwargs", fn_kwargs), ("fn_constructor_kwargs", fn_constructor_kwargs)):
        if value is not None and not isinstance(value, Mapping):
            raise PlanError(f"{where}: {name} must be a dict, got {type(value).__name__}")
    for name, value in (("fn_args", fn_args), ("fn_constructor_args", fn_constructor_args)):
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Iterable)):
            raise PlanError(f"{where}: {name} must be a tuple or list, got {type(value).__name__}")
    check_on_error(where, on_error)
    computed = _compute(where, is_class, concurrency)
    if in_flight is not None:
        computed = dataclasses.replace(computed, max_tasks_in_flight=in_flight)
    return {
        "fn": fn,
        "fn_args": tuple(fn_args),
        "fn_kwargs": tuple((fn_kwargs or {}).items()),
        "fn_constructor_args": tuple(fn_constructor_args),
        "fn_constructor_kwargs": tuple((fn_constructor_kwargs or {}).items()),
        "compute": computed,
        "resources": resources_of(
            where,
            amounts["num_cpus"],
            amounts["num_gpus"],
            amounts["memory"],
            amounts["resources"],
        ),
        "on_error": on_error,
    }


def _compute(where: str, is_class: bool, concurrency: Any) -> Compute:
    def whole(v: Any, least: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= least

    if concurrency is None:
        return Compute("actors", 1, None) if is_class else Compute()
    if whole(concurrency, 1):
        return (
            Compute("actors", concurrency, concurrency)
            if is_class
            else Compute("tasks", 1, concurrency)
        )
    # (min, max) or Ray's (min, max, initial). min may be 0: the pool then scales
    # to zero when idle (Ray Data's pools cannot); max None (from
    # ActorPoolStrategy(min_size=n)): as many as the resources allow.
    tup = isinstance(concurrency, tuple) and len(concurrency) in (2, 3)
    if (
        tup
        and whole(concurrency[0], 0)
        and (concurrency[1] is None or whole(concurrency[1], 1))
        and (len(concurrency) == 2 or whole(concurrency[2], 0))
    ):
        lo, hi = concurrency[0], concurrency[1]
        initial = concurrency[2] if len(concurrency) == 3 else None
        if hi is not None and lo > hi:
            raise PlanError(f"{where}: concurrency=(min, max) needs min <= max, got {concurrency}")
        if initial is not None and (initial < lo or (hi is not None and initial > hi)):
            raise PlanError(
                f"{where}: concurrency=(min, max, initial) needs min <= initial <= max, "
                f"got {concurrency}"
            )
        if not is_class:
            raise PlanError(
                f"{where}: concurrency=(min, max) autoscales an actor pool and needs a "
                "callable class; for a function pass concurrency=n (at most n tasks at once)"
            )
        return Compute("actors", lo, hi, initial_size=initial)
    raise PlanError(
        f"{where}: concurrency must be None, a positive int, a (min, max) or a "
        f"(min, max, initial) tuple with 0 <= min <= initial <= max and max >= 1, "
        f"got {concurrency!r}"
    )


def resources_of(
    where: str, num_cpus: Any, num_gpus: Any, memory: Any, resources: Mapping[str, float] | None
) -> Resources:
    """What a task reserves, checked (``num_cpus`` None: one CPU)."""
    custom = resources
    if custom is not None and not isinstance(custom, Mapping):
        raise PlanError(f"{where}: resources must be a dict of name -> amount")
    amounts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": memory, **(custom or {})}
    for name, value in amounts.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise PlanError(f"{where}: {name} must be a non-negative number, got {value!r}")
    return Resources.of(
        cpu=1 if num_cpus is None else num_cpus,
        gpu=num_gpus or 0,
        memory=memory or 0,
        custom=custom,
    )


class AddColumn:
    """The batch function of ``add_column``: ``batch[name] = fn(batch)``."""

    def __init__(self, name: str, fn: Callable[[Any], Any]) -> None:
        self.name = name
        self.fn = fn
        self.__name__ = f"add_column({name})"

    def __call__(self, batch: Any) -> Any:
        column = self.fn(batch)
        if isinstance(batch, pa.Table):
            column = column if isinstance(column, (pa.Array, pa.ChunkedArray)) else pa.array(column)
            idx = batch.schema.get_field_index(self.name)
            if idx >= 0:
                return batch.set_column(idx, self.name, column)
            return batch.append_column(self.name, column)
        batch[self.name] = column
        return batch
