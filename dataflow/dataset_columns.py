"""The column methods of ``Dataset`` (``with_column(s)``, ``select_columns``,
``drop_columns``, ``rename_columns``) and ``random_sample``, kept out of
``dataset.py`` so that no file grows into a god file. Each appends one node.

Column rewrites run in Arrow inside the neighbouring tasks (a ``Project``
node fused into them), so they have no task of their own: Ray's per-task
arguments (``num_cpus``, ``concurrency``, ``compute``...) have nothing to
apply to and are refused by name (``dataflow.compat``).

>>> import dataflow as df
>>> df.range(3).with_columns({"twice": df.col("id") * 2}).take_all()  # doctest: +SKIP
[{'id': 0, 'twice': 0}, {'id': 1, 'twice': 2}, {'id': 2, 'twice': 4}]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from dataflow.compat import check_ray_only, merge_remote_args, renamed_keywords
from dataflow.dataset_base import DatasetBase
from dataflow.errors import PlanError
from dataflow.expressions import Expr, check_columns
from dataflow.plan.logical import Project
from dataflow.validate import as_expr, check_known_columns, check_name, check_seed, column_names

if TYPE_CHECKING:
    from dataflow.dataset import Dataset


class ColumnMethods(DatasetBase):
    """Part of ``Dataset``: column rewrites and ``random_sample``."""

    @renamed_keywords(name="column_name")
    def with_column(
        self,
        column_name: str,
        expr: Expr | str,
        *,
        compute: Any = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: dict[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Add (or replace) column ``column_name`` computed from an expression
        (``col(...)`` or a string such as ``"a * 2 + b"``). (``name=`` is the
        deprecated old keyword of ``column_name``.)

        >>> df.range(3).with_column("y", df.col("id") * 10)
        Dataset(read_range -> with_column(y))
        """
        where = f"with_column({column_name})"
        no_task_args(where, **_task_args(locals()))
        check_name("with_column", column_name)
        e = as_expr(where, expr)
        check_columns(e, self._plan.output_schema(), where)
        return self._then(Project(with_columns=((column_name, e),), label=where))

    def with_columns(
        self,
        exprs: Mapping[str, Expr | str] | None = None,
        *more_exprs: Mapping[str, Expr | str],
        compute: Any = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: dict[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Add or replace several columns at once, ``{name: expression}`` (later
        mappings in ``more_exprs`` follow in order). Every expression sees the
        columns as they were before this call, in one projection.

        >>> df.range(3).with_columns({"a": df.col("id") + 1, "b": df.col("id") * 2})
        Dataset(read_range -> with_columns(a, b))
        """
        where = "with_columns"
        no_task_args(where, **_task_args(locals()))
        pairs: list[tuple[str, Expr]] = []
        for mapping in ([exprs] if exprs is not None else []) + list(more_exprs):
            if not isinstance(mapping, Mapping):
                raise PlanError(
                    f"{where}: arguments must be dicts {{column name: expression}}, got "
                    f"{type(mapping).__name__} (Ray's unnest() expressions are not supported)"
                )
            for name, expr in mapping.items():
                check_name(where, name)
                pairs.append((name, as_expr(f"{where}({name})", expr)))
        if not pairs:
            raise PlanError(f"{where}: give at least one {{column name: expression}}")
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise PlanError(f"{where}: column {_first_dup(names)!r} is given twice")
        schema = self._plan.output_schema()
        for name, e in pairs:
            check_columns(e, schema, f"{where}({name})")
        return self._then(Project(with_columns=tuple(pairs), label=f"{where}({', '.join(names)})"))

    def select_columns(
        self,
        cols: str | Sequence[str],
        *,
        compute: Any = None,
        concurrency: int | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: dict[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Keep only ``cols``, in that order.

        >>> df.range(3).select_columns(["id"])
        Dataset(read_range -> select_columns(id))
        """
        no_task_args("select_columns", **_task_args(locals()))
        names = column_names("select_columns", cols)
        check_known_columns("select_columns", names, self._plan.output_schema())
        return self._then(Project(select=names, label=f"select_columns({', '.join(names)})"))

    def drop_columns(
        self,
        cols: str | Sequence[str],
        *,
        compute: Any = None,
        concurrency: int | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: dict[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Remove ``cols``.

        >>> df.from_items([{"a": 1, "b": 2}]).drop_columns("b")
        Dataset(from_blocks -> drop_columns(b))
        """
        no_task_args("drop_columns", **_task_args(locals()))
        names = column_names("drop_columns", cols)
        check_known_columns("drop_columns", names, self._plan.output_schema())
        return self._then(Project(drop=names, label=f"drop_columns({', '.join(names)})"))

    def rename_columns(
        self,
        names: Mapping[str, str] | Sequence[str],
        *,
        concurrency: int | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: dict[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Rename columns: ``{old: new}``, or a list of new names for every
        column in order (as in Ray Data).

        >>> df.range(3).rename_columns({"id": "n"})
        Dataset(read_range -> rename_columns(id->n))
        """
        no_task_args("rename_columns", **_task_args(locals()))
        schema = self._plan.output_schema()
        if isinstance(names, Sequence) and not isinstance(names, (str, bytes)):
            names = _positional_renames(names, schema)
        if not isinstance(names, Mapping) or not names:
            raise PlanError(
                f"rename_columns: expected a non-empty dict {{old: new}} or a list of new "
                f"names, got {names!r}"
            )
        pairs = tuple((str(k), str(v)) for k, v in names.items())
        news = [v for _, v in pairs]
        if len(set(news)) != len(news):
            raise PlanError(f"rename_columns: new names must be unique, got {news}")
        check_known_columns("rename_columns", [k for k, _ in pairs], schema)
        label = f"rename_columns({', '.join(f'{k}->{v}' for k, v in pairs)})"
        return self._then(Project(rename=pairs, label=label))

    def random_sample(self, fraction: float, *, seed: int | None = None) -> Dataset:
        """About ``fraction`` of the rows, chosen at random, in their order (a
        random filter, not a shuffle). With a ``seed`` each block draws from a
        generator seeded by the seed and the block's content, so the same input
        blocks give the same sample on every run, whatever the number of
        workers or the order blocks finish in. Without one, a seed is drawn
        when the Dataset is made: this Dataset samples the same rows each time
        it runs (Ray Data's draws anew on each run).

        >>> df.range(1000).random_sample(0.1, seed=0).count()  # doctest: +SKIP
        104
        """
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0 <= fraction <= 1
        ):
            raise PlanError(f"random_sample: fraction must be in [0, 1], got {fraction!r}")
        check_seed("random_sample", seed)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        return self.map_batches(
            RowSampler(float(fraction), seed),
            batch_format="pyarrow",
            batch_size=None,
            zero_copy_batch=True,
        )


class RowSampler:
    """Keeps each row of a block with probability ``fraction``, drawn from a
    generator seeded by ``seed`` and a digest of the block (its row count and
    first rows): deterministic per block, independent of scheduling."""

    def __init__(self, fraction: float, seed: int) -> None:
        self.fraction = fraction
        self.seed = seed

    def __call__(self, table: pa.Table) -> pa.Table:
        digest = hashlib.blake2b(digest_size=8)
        digest.update(str(table.num_rows).encode())
        digest.update(repr(table.slice(0, 16).to_pylist()).encode())
        rng = np.random.default_rng([self.seed, int.from_bytes(digest.digest(), "little")])
        return table.filter(pa.array(rng.random(table.num_rows) < self.fraction))

    def __repr__(self) -> str:  # the stage's name in plans and stats
        return f"random_sample({self.fraction})"


# -- helpers shared by the Dataset mixins ------------------------------------------------------


_TASK_ARGS = (
    "compute",
    "concurrency",
    "num_cpus",
    "num_gpus",
    "memory",
    "label_selector",
    "fallback_strategy",
    "max_calls",
    "resources",
    "accelerator_type",
    "runtime_env",
    "ray_remote_args",
)


def _task_args(local_vars: dict[str, Any]) -> dict[str, Any]:
    return {k: local_vars[k] for k in _TASK_ARGS if k in local_vars}


def no_task_args(where: str, **values: Any) -> None:
    """Refuse Ray's per-task arguments on a step that has no task of its own
    (Ray-only ones with their own reason first)."""
    ray_only = ("label_selector", "fallback_strategy", "max_calls", "accelerator_type")
    check_ray_only(
        where, **{k: values.get(k) for k in ray_only}, runtime_env=values.get("runtime_env")
    )
    remote = merge_remote_args(where, values.get("ray_remote_args") or None)
    given = {k: v for k, v in values.items() if k not in ray_only and k != "runtime_env"}
    given.update({k: v for k, v in remote.items() if v is not None})
    given.pop("ray_remote_args", None)
    for name, value in given.items():
        if value is not None:
            raise PlanError(
                f"{where}: {name}={value!r} has nothing to apply to: this step runs in Arrow "
                "inside its neighbours' tasks, with no task of its own; drop it"
            )


def _positional_renames(names: Sequence[Any], schema: pa.Schema | None) -> dict[str, str]:
    if schema is None:
        raise PlanError(
            "rename_columns: a list of new names renames every column in order, and this "
            "dataset's columns are not known before it runs; pass a dict {old: new}"
        )
    if len(names) != len(schema.names):
        raise PlanError(
            f"rename_columns: {len(names)} new names for {len(schema.names)} columns "
            f"({', '.join(schema.names)}); give one per column or a dict {{old: new}}"
        )
    return {old: new for old, new in zip(schema.names, names) if old != new} or {
        schema.names[0]: names[0]
    }


def _first_dup(names: list[str]) -> str:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return ""


__all__ = ["ColumnMethods", "RowSampler"]
