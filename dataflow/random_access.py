"""``Dataset.to_random_access_dataset``: rows looked up by key, served in-process.

Ray Data sorts the dataset by the key, cuts it into ranges and serves each
range from an actor, routing a key to its range by binary search over the
ranges' first keys. Here the sorted rows stay in this process as one Arrow
table (the dataset is run once, through ``sort``); a lookup is a binary search
over the sorted key column (``numpy.searchsorted``), vectorized for a
``multiget``. ``get_async`` returns a ``concurrent.futures.Future`` (Ray: an
``ObjectRef``; call ``.result()`` instead of ``ray.get``), answered by a pool
of ``num_workers`` threads. With duplicate keys a lookup returns the first row
of the key in sorted order.

>>> import dataflow as df
>>> rad = df.from_items([{"k": "b", "v": 2}, {"k": "a", "v": 1}]).to_random_access_dataset("k")
>>> rad.get_async("b").result()
{'k': 'b', 'v': 2}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from dataflow.block import concat, iter_rows
from dataflow.errors import PlanError


class RandomAccessDataset:
    """The rows of a dataset sorted by ``key``, for lookups by key (see the
    module docstring). Build one with ``Dataset.to_random_access_dataset``."""

    def __init__(self, dataset: Any, key: str, num_workers: int | None = None) -> None:
        where = "to_random_access_dataset"
        if not isinstance(key, str):
            raise PlanError(f"{where}: key must be a column name (str), got {key!r}")
        if num_workers is not None and (
            isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1
        ):
            raise PlanError(f"{where}: num_workers must be a positive int, got {num_workers!r}")
        schema = dataset.schema()
        if schema is not None and key not in schema.names:
            raise PlanError(f"{where}: no column {key!r}; the dataset has {schema.names}")
        start = time.perf_counter()
        blocks = list(dataset.sort(key).iterator().iter_blocks())
        table = concat(blocks) if blocks else (schema or pa.schema([])).empty_table()
        if table.column(key).null_count:
            raise PlanError(f"{where}: key column {key!r} has nulls; drop or fill them first")
        self.key = key
        self._table = table
        self._keys = table.column(key).to_numpy(zero_copy_only=False)
        self._num_workers = num_workers or 1
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._build_s = time.perf_counter() - start
        self._lookups = 0

    def __repr__(self) -> str:
        return f"RandomAccessDataset(key={self.key!r}, rows={self._table.num_rows})"

    def get_async(self, key: Any) -> Future:
        """A future of the row whose key is ``key`` (None when there is none).

        >>> rad.get_async(3).result()  # doctest: +SKIP
        {'id': 3}
        """
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._num_workers, "random-access")
            pool = self._pool
        return pool.submit(lambda: self.multiget([key])[0])

    def multiget(self, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """The rows of ``keys``, in their order (None for a key not present).

        >>> rad.multiget([1, 5, 99])  # doctest: +SKIP
        [{'id': 1}, {'id': 5}, None]
        """
        keys = list(keys)
        if not keys:
            return []
        self._lookups += len(keys)
        n = len(self._keys)
        try:
            wanted = np.asarray(keys, dtype=object if self._keys.dtype == object else None)
            pos = np.searchsorted(self._keys, wanted) if n else np.zeros(len(keys), int)
        except (TypeError, ValueError) as e:
            raise PlanError(
                f"multiget: keys {keys[:3]!r}... do not compare with key column "
                f"{self.key!r} ({self._table.schema.field(self.key).type})"
            ) from e
        clipped = np.minimum(pos, max(n - 1, 0))
        found = (pos < n) & (self._keys[clipped] == wanted) if n else np.zeros(len(keys), bool)
        rows = list(iter_rows(self._table.take(pa.array(clipped[found])))) if found.any() else []
        it = iter(rows)
        return [next(it) if f else None for f in found]

    def stats(self) -> str:
        """How this dataset was built and used, in words."""
        return (
            f"RandomAccessDataset on {self.key!r}: {self._table.num_rows} rows, "
            f"{self._table.nbytes / 2**20:.1f} MiB in this process, built in "
            f"{self._build_s:.3f} s; {self._lookups} keys looked up"
        )

    def close(self) -> None:
        """Stop the lookup threads (idempotent; also on garbage collection)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
