"""The TensorFlow, JAX and Daft consumption methods of ``Dataset``
(``iter_tf_batches``, ``to_tf``, ``iter_jax_batches``, ``to_daft``) and
``to_random_access_dataset``, kept out of ``dataset.py``; each imports its
framework only when called.

>>> import dataflow as df
>>> next(df.range(8).iter_jax_batches(batch_size=4))["id"]  # doctest: +SKIP
Array([0, 1, 2, 3], dtype=int32)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dataflow.block import concat, table_to_pandas
from dataflow.dataset_base import DatasetBase
from dataflow.errors import PlanError


class FrameworkMethods(DatasetBase):
    """Part of ``Dataset``: conversions to other frameworks' datasets."""

    def iter_tf_batches(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Batches as dicts of ``tf.Tensor`` (needs TensorFlow); keywords as
        ``DataIterator.iter_tf_batches`` (batch_size, dtypes, drop_last,
        local_shuffle_buffer_size, local_shuffle_seed, prefetch_batches).

        >>> next(df.range(4).iter_tf_batches(batch_size=4))["id"]  # doctest: +SKIP
        <tf.Tensor: shape=(4,), dtype=int64, numpy=array([0, 1, 2, 3])>
        """
        return self.iterator().iter_tf_batches(**kwargs)

    def to_tf(
        self, feature_columns: str | list[str], label_columns: str | list[str], **kwargs: Any
    ) -> Any:
        """A ``tf.data.Dataset`` of ``(features, labels)`` batches for Keras
        (``batch_size`` defaults to 1 as in Ray Data; keywords as ``DataIterator.to_tf``).

        >>> model.fit(ds.to_tf("features", "label", batch_size=64), epochs=3)  # doctest: +SKIP
        """
        if not all(kwargs.get(k) is not None for k in ("feature_type_spec", "label_type_spec")):
            kwargs.setdefault("schema", self.schema())
        return self.iterator().to_tf(feature_columns, label_columns, **kwargs)

    def iter_jax_batches(self, **kwargs: Any) -> Iterator[Any]:
        """Batches as dicts of JAX arrays sharded over the local devices (needs JAX);
        keywords as ``DataIterator.iter_jax_batches`` (batch_size, dtypes,
        collate_fn, drop_last, paddings, local shuffle, prefetch_batches).

        >>> next(df.range(4).iter_jax_batches(batch_size=4))["id"]  # doctest: +SKIP
        Array([0, 1, 2, 3], dtype=int32)
        """
        return self.iterator().iter_jax_batches(**kwargs)

    def to_daft(self) -> Any:
        """The rows as a Daft DataFrame (needs Daft), built from this dataset's
        Arrow blocks as they are (no copy on this side).

        >>> df.range(3).to_daft().to_pydict()  # doctest: +SKIP
        {'id': [0, 1, 2]}
        """
        try:
            import daft
        except ImportError as e:
            raise PlanError("to_daft: needs Daft: pip install getdaft") from e
        blocks = list(self.iterator().iter_blocks())
        if not blocks:
            schema = self.schema() or pa.schema([])
            return daft.from_arrow(schema.empty_table())
        return daft.from_arrow(concat(blocks))  # one schema (blocks may differ: null vs str)

    def to_random_access_dataset(self, key: str, num_workers: int | None = None) -> Any:
        """This dataset sorted by ``key`` and held in memory, for lookups by key:
        ``get_async(k)`` (a future of the row, or None) and ``multiget(keys)``;
        see ``dataflow.random_access``.

        >>> rad = df.range(10).to_random_access_dataset("id")
        >>> rad.multiget([3, 42])
        [{'id': 3}, None]
        """
        from dataflow.random_access import RandomAccessDataset

        return RandomAccessDataset(self, key, num_workers)

    def to_dask(self, meta: Any = None, verify_meta: bool = True) -> Any:
        """The rows as a Dask DataFrame (needs Dask), one partition per block:
        the plan runs now and each block becomes a pandas partition. ``meta``
        (an empty DataFrame, a dict or tuples of column dtypes) defaults to this
        dataset's schema; ``verify_meta`` has Dask check each partition against it.

        >>> df.range(4).to_dask().compute()["id"].tolist()  # doctest: +SKIP
        [0, 1, 2, 3]
        """
        try:
            import dask
            import dask.dataframe as dd
        except ImportError as e:
            raise PlanError('to_dask: needs Dask: pip install "dataflow[dask]"') from e
        blocks = list(self.iterator().iter_blocks())
        if meta is None:
            schema = blocks[0].schema if blocks else self.schema()
            meta = table_to_pandas((schema or pa.schema([])).empty_table())
        parts = [dask.delayed(table_to_pandas)(b) for b in blocks]
        if not parts:
            return dd.from_pandas(meta, npartitions=1)
        return dd.from_delayed(parts, meta=meta, verify_meta=verify_meta)
