"""Dataset constructors: ``range``, ``from_*`` for in-memory data, ``read_*`` for sources.

>>> import dataflow as df
>>> df.range(3).take_all()  # doctest: +SKIP
[{'id': 0}, {'id': 1}, {'id': 2}]
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy, concat, pandas_to_table, rows_to_table
from dataflow.compat import parallelism_arg
from dataflow.context import DataContext
from dataflow.dataset import Dataset
from dataflow.errors import PlanError
from dataflow.plan.logical import InputData
from dataflow.read_connectors import (
    read_datasource,
    read_delta,
    read_iceberg,
    read_lance,
    read_sql,
    read_tfrecords,
    read_webdataset,
)
from dataflow.read_files import (
    check_num_blocks,
    read_avro,
    read_binary_files,
    read_csv,
    read_dataset,
    read_images,
    read_json,
    read_numpy,
    read_orc,
    read_parquet,
    read_text,
)
from dataflow.sources.range import RangeDatasource
from runtime.resources import detect_num_cpus

if TYPE_CHECKING:
    import pandas as pd


def _default_num_blocks(num_rows: int) -> int:
    """Enough blocks to keep every CPU busy, never more than rows."""
    per_cpu = DataContext.get_current().read_parallelism_factor
    return max(1, min(num_rows, per_cpu * detect_num_cpus()))


def _split_table(table: pa.Table, num_blocks: int) -> tuple[pa.Table, ...]:
    n = table.num_rows
    if num_blocks <= 1 or n <= 1:
        return (table,)
    bounds = [n * i // num_blocks for i in builtins.range(num_blocks + 1)]
    return tuple(table.slice(a, b - a) for a, b in zip(bounds, bounds[1:]) if b > a)


def range(  # noqa: A001
    n: int,
    *,
    parallelism: int = -1,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """The integers ``0..n-1`` in an int64 column ``id``, in ``override_num_blocks``
    blocks (``parallelism`` is Ray's older name), read by at most
    ``concurrency`` tasks at once.

    >>> range(10**10).limit(2)
    Dataset(read_range -> limit(2))
    """
    _check_count("range", n)
    return read_dataset(
        "range",
        RangeDatasource(n),
        parallelism=parallelism,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )


def range_tensor(
    n: int,
    *,
    shape: tuple[int, ...] = (1,),
    parallelism: int = -1,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """Rows ``i = 0..n-1`` as tensors ``np.full(shape, i)`` (int64) in column
    ``data`` (blocks and ``concurrency`` as in ``range``).

    >>> range_tensor(4, shape=(2, 2))
    Dataset(read_range_tensor)
    """
    _check_count("range_tensor", n)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise PlanError(f"range_tensor: shape must be a tuple of positive ints, got {shape!r}")
    return read_dataset(
        "range_tensor",
        RangeDatasource(n, shape),
        parallelism=parallelism,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )


def _check_count(where: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise PlanError(f"{where}: n must be a non-negative int, got {n!r}")


def from_items(
    items: Sequence[Any], *, parallelism: int = -1, override_num_blocks: int | None = None
) -> Dataset:
    """A Dataset of Python objects: dicts become rows; other values go in column
    ``item``; ``override_num_blocks`` blocks (``parallelism``: Ray's older name).

    >>> from_items([{"a": 1}, {"a": 2}])
    Dataset(from_blocks)
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise PlanError(
            f"from_items: expected a list of dicts or values, got {type(items).__name__}"
        )
    override_num_blocks = parallelism_arg("from_items", parallelism, override_num_blocks)
    check_num_blocks("from_items", override_num_blocks)
    items = list(items)
    if not items:
        return Dataset(InputData(blocks=()))
    dicts = [isinstance(x, Mapping) for x in items]
    if all(dicts):
        table = rows_to_table(items, "from_items")
    elif not any(dicts):
        table = rows_to_table([{"item": x} for x in items], "from_items")
    else:
        raise PlanError(
            "from_items: mix of dicts and plain values; pass either rows (dicts) or values"
        )
    num_blocks = override_num_blocks or _default_num_blocks(table.num_rows)
    return Dataset(InputData(blocks=_split_table(table, num_blocks)))


def _as_list(where: str, obj: Any, kind: type | tuple[type, ...]) -> list:
    objs = list(obj) if isinstance(obj, list) else [obj]
    bad = [type(o).__name__ for o in objs if not isinstance(o, kind)]
    if bad:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PlanError(f"{where}: expected {names} or a list of them, got {bad[0]}")
    return objs


def from_pandas(
    dfs: pd.DataFrame | list[pd.DataFrame], override_num_blocks: int | None = None
) -> Dataset:
    """One block per DataFrame (the index is dropped), or, with
    ``override_num_blocks``, all the rows re-cut into that many blocks.

    >>> import pandas as pd
    >>> from_pandas(pd.DataFrame({"a": [1, 2]}))
    Dataset(from_blocks)
    """
    import pandas as pd  # on use: pandas doubles the cost of `import dataflow`

    check_num_blocks("from_pandas", override_num_blocks)
    frames = _as_list("from_pandas", dfs, pd.DataFrame)
    blocks = tuple(pandas_to_table(f) for f in frames)
    return Dataset(InputData(blocks=_recut(blocks, override_num_blocks)))


def from_arrow(
    tables: pa.Table | pa.RecordBatch | bytes | list,
    *,
    override_num_blocks: int | None = None,
) -> Dataset:
    """One block per Arrow table (a record batch, or ``bytes`` holding an Arrow
    IPC stream, as Ray's), or, with ``override_num_blocks``, all the rows re-cut
    into that many blocks.

    >>> from_arrow(pa.table({"a": [1, 2]}))
    Dataset(from_blocks)
    """
    check_num_blocks("from_arrow", override_num_blocks)
    objs = _as_list("from_arrow", tables, (pa.Table, pa.RecordBatch, bytes))
    blocks = tuple(_arrow_block(o) for o in objs)
    return Dataset(InputData(blocks=_recut(blocks, override_num_blocks)))


def _arrow_block(obj: pa.Table | pa.RecordBatch | bytes) -> pa.Table:
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if isinstance(obj, bytes):
        try:
            return pa.ipc.open_stream(obj).read_all()
        except pa.ArrowInvalid as e:
            raise PlanError(
                f"from_arrow: bytes must hold an Arrow IPC stream (a serialized table): {e}"
            ) from e
    return obj


def _recut(blocks: tuple[pa.Table, ...], num_blocks: int | None) -> tuple[pa.Table, ...]:
    """``blocks`` as they are, or their rows in ``num_blocks`` near-equal blocks."""
    if num_blocks is None or not blocks:
        return blocks
    return _split_table(concat(list(blocks)), num_blocks)


def from_numpy(ndarrays: np.ndarray | list[np.ndarray]) -> Dataset:
    """Arrays in column ``data`` (N-d arrays become tensor columns); a list gives one
    block per array.

    >>> from_numpy(np.zeros((4, 2)))
    Dataset(from_blocks)
    """
    arrays = _as_list("from_numpy", ndarrays, np.ndarray)
    for a in arrays:
        if a.ndim == 0:
            raise PlanError("from_numpy: got a 0-d array; pass at least one dimension (rows)")
    return Dataset(
        InputData(blocks=tuple(pa.table({"data": array_from_numpy(a, "data")}) for a in arrays))
    )


def from_huggingface(
    dataset: Any,
    parallelism: int = -1,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """A Hugging Face ``datasets.Dataset`` (needs ``datasets``), read as zero-copy
    row ranges of its Arrow table, or a ``datasets.IterableDataset``, streamed.
    Columns keep the Arrow types ``datasets`` stores (an ``Image()`` column is
    ``struct<bytes, path>``, as in Ray Data).

    >>> from_huggingface(datasets.load_from_disk("imdb/train"))  # doctest: +SKIP
    Dataset(read_huggingface)
    """
    from dataflow.sources.huggingface import HuggingFaceDatasource

    return read_dataset(
        "from_huggingface",
        HuggingFaceDatasource(dataset),
        parallelism=parallelism,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )


# -- tables and other formats (the file readers are in read_files.py) ---------------


__all__ = [
    "from_arrow",
    "from_huggingface",
    "from_items",
    "from_numpy",
    "from_pandas",
    "range",
    "range_tensor",
    "read_avro",
    "read_binary_files",
    "read_csv",
    "read_datasource",
    "read_delta",
    "read_iceberg",
    "read_images",
    "read_json",
    "read_lance",
    "read_numpy",
    "read_orc",
    "read_parquet",
    "read_sql",
    "read_text",
    "read_tfrecords",
    "read_webdataset",
]
