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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from dataflow.errors import PlanError
from dataflow.plan.logical import Compute
from runtime.resources import Resources

ON_ERROR = ("raise", "skip", "dead_letter")

UDF_ARGS = (
    "fn",
    "fn_args",
    "fn_kwargs",
    "fn_constructor_args",
    "fn_constructor_kwargs",
    "concurrency",
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "on_error",
)
"""The keyword arguments of ``udf_fields``: what map, flat_map, filter and
map_batches share."""


def fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _is_callable_class(fn: Any) -> bool:
    return isinstance(fn, type) and any("__call__" in vars(k) for k in fn.__mro__[:-1])


def udf_fields(
    method: str,
    *,
    fn: Any,
    fn_args: Sequence[Any] = (),
    fn_kwargs: Mapping[str, Any] | None = None,
    fn_constructor_args: Sequence[Any] = (),
    fn_constructor_kwargs: Mapping[str, Any] | None = None,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    resources: Mapping[str, float] | None = None,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Validate the arguments every UDF transform shares; the fields of its node.
    Messages name the transform and the function: ``map_batches(embed): ...``."""
    where = f"{method}({fn_name(fn)})"
    is_class = isinstance(fn, type)
    if is_class and not _is_callable_class(fn):
        raise PlanError(f"{where}: class {fn.__name__} has no __call__ method")
    if not callable(fn):
        raise PlanError(f"{method}: fn must be a function or a callable class, got {fn!r}")
    if not is_class and (fn_constructor_args or fn_constructor_kwargs):
        raise PlanError(
            f"{where}: fn_constructor_args/fn_constructor_kwargs are only for callable "
            "classes; pass arguments of a function with fn_args/fn_kwargs"
        )
    for name, value in (("fn_kwargs", fn_kwargs), ("fn_constructor_kwargs", fn_constructor_kwargs)):
        if value is not None and not isinstance(value, Mapping):
            raise PlanError(f"{where}: {name} must be a dict, got {type(value).__name__}")
    for name, value in (("fn_args", fn_args), ("fn_constructor_args", fn_constructor_args)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise PlanError(f"{where}: {name} must be a tuple or list, got {type(value).__name__}")
    if on_error not in ON_ERROR:
        raise PlanError(f"{where}: on_error must be one of {ON_ERROR}, got {on_error!r}")
    return {
        "fn": fn,
        "fn_args": tuple(fn_args),
        "fn_kwargs": tuple((fn_kwargs or {}).items()),
        "fn_constructor_args": tuple(fn_constructor_args),
        "fn_constructor_kwargs": tuple((fn_constructor_kwargs or {}).items()),
        "compute": _compute(where, is_class, concurrency),
        "resources": _resources(where, num_cpus, num_gpus, memory, resources),
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
    # min may be 0: the pool then scales to zero when idle (Ray Data's pools cannot).
    pair = isinstance(concurrency, tuple) and len(concurrency) == 2
    if pair and whole(concurrency[0], 0) and whole(concurrency[1], 1):
        lo, hi = concurrency
        if lo > hi:
            raise PlanError(f"{where}: concurrency=(min, max) needs min <= max, got {concurrency}")
        if not is_class:
            raise PlanError(
                f"{where}: concurrency=(min, max) autoscales an actor pool and needs a "
                "callable class; for a function pass concurrency=n (at most n tasks at once)"
            )
        return Compute("actors", lo, hi)
    raise PlanError(
        f"{where}: concurrency must be None, a positive int or a (min, max) tuple "
        f"with 0 <= min <= max and max >= 1, got {concurrency!r}"
    )


def _resources(
    where: str, num_cpus: Any, num_gpus: Any, memory: Any, custom: Mapping[str, float] | None
) -> Resources:
    amounts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": memory, **(custom or {})}
    for name, value in amounts.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise PlanError(f"{where}: {name} must be a non-negative number, got {value!r}")
    if custom is not None and not isinstance(custom, Mapping):
        raise PlanError(f"{where}: resources must be a dict of name -> amount")
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
