"""Feeding TensorFlow and JAX: batch conversion for ``iter_tf_batches``, ``to_tf``
and ``iter_jax_batches`` (extras ``dataflow[tensorflow]``, ``dataflow[jax]``;
each library is imported only when its method is called).

Batches are exact-size numpy batches (``DataIterator``'s batching, prefetch and
local shuffle), then one conversion per column: ``tf.convert_to_tensor``, or
``jax.make_array_from_process_local_data`` onto a 1-D mesh of the local devices
(the batch axis sharded across them, as Ray Data does). Tensor columns become
N-d tensors; string columns become ``tf.string`` tensors (JAX has no strings:
such a column is an error naming it).

>>> batch = {"x": np.arange(4.0)}
>>> numpy_batch_to_tf(batch)["x"].shape  # doctest: +SKIP
TensorShape([4])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from dataflow.block import to_batch
from dataflow.errors import unknown_columns


def import_tf() -> Any:
    """TensorFlow, or an ImportError that says how to install it."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "iter_tf_batches / to_tf need TensorFlow: pip install 'dataflow[tensorflow]'"
        ) from e
    return tf


def import_jax() -> Any:
    """JAX, or an ImportError that says how to install it."""
    try:
        import jax
    except ImportError as e:
        raise ImportError("iter_jax_batches needs JAX: pip install 'dataflow[jax]'") from e
    return jax


def _per_column(spec: Any, name: str) -> Any:
    return spec.get(name) if isinstance(spec, Mapping) else spec


def check_dtypes_cover(where: str, dtypes: Any, columns: Sequence[str]) -> None:
    """A dict of dtypes may only name columns the batch has."""
    if isinstance(dtypes, Mapping):
        unknown = sorted(set(dtypes) - set(columns))
        if unknown:
            raise ValueError(
                f"{where}: dtypes names columns {unknown} that are not in the batch; "
                f"columns are {sorted(columns)}"
            )


# -- TensorFlow ------------------------------------------------------------------------


def numpy_batch_to_tf(batch: Mapping[str, np.ndarray], dtypes: Any = None) -> dict[str, Any]:
    """A numpy batch as a dict of ``tf.Tensor`` (``dtypes``: one or per column)."""
    tf = import_tf()
    check_dtypes_cover("iter_tf_batches", dtypes, list(batch))
    out = {}
    for name, arr in batch.items():
        dtype = _per_column(dtypes, name)
        if arr.dtype == object or arr.dtype.kind in "US":
            out[name] = tf.convert_to_tensor(
                arr.tolist() if arr.dtype == object else arr, tf.string
            )
        else:
            out[name] = tf.convert_to_tensor(arr, dtype=dtype)
    return out


def table_to_tf(table: pa.Table, dtypes: Any = None) -> dict[str, Any]:
    return numpy_batch_to_tf(to_batch(table, "numpy"), dtypes)


def tf_spec(schema: pa.Schema, name: str) -> Any:
    """The ``tf.TensorSpec`` of a batch of column ``name``: ``(None, *cell shape)``."""
    tf = import_tf()
    if name not in schema.names:
        raise unknown_columns("to_tf", [name], schema.names)
    t = schema.field(name).type
    shape: tuple = ()
    if isinstance(t, pa.FixedShapeTensorType):
        shape, t = tuple(t.shape), t.value_type
    elif pa.types.is_fixed_size_list(t):
        shape, t = (t.list_size,), t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        dtype = tf.string
    else:
        try:
            dtype = tf.as_dtype(t.to_pandas_dtype())
        except (TypeError, NotImplementedError) as e:
            raise TypeError(
                f"to_tf: column {name!r} has type {t}, which has no TensorFlow dtype; pass "
                "feature_type_spec / label_type_spec or convert it first"
            ) from e
    return tf.TensorSpec(shape=(None, *shape), dtype=dtype, name=name)


def select_for_tf(
    batch: Mapping[str, np.ndarray], columns: str | Sequence[str]
) -> np.ndarray | dict[str, np.ndarray]:
    """One column's array (a name) or a dict of arrays (a list of names)."""
    if isinstance(columns, str):
        return batch[columns]
    return {c: batch[c] for c in columns}


# -- JAX -------------------------------------------------------------------------------


class JaxConverter:
    """Numpy batches to JAX arrays sharded on a 1-D mesh of the local devices;
    ``paddings`` fills a short last batch up to ``batch_size``."""

    def __init__(
        self,
        batch_size: int,
        dtypes: Any = None,
        paddings: Any = None,
        collate_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
        synchronize_batches: bool = False,
    ) -> None:
        jax = import_jax()
        where = "iter_jax_batches"
        devices = jax.local_device_count()
        if batch_size is None or batch_size <= 0 or batch_size % devices:
            raise ValueError(
                f"{where}: batch_size ({batch_size}) must be a positive multiple of the "
                f"{devices} local JAX device(s), so each device gets an equal share"
            )
        if synchronize_batches and jax.process_count() > 1:
            raise NotImplementedError(
                f"{where}: synchronize_batches across {jax.process_count()} JAX processes is "
                "not supported; give every host the same number of equal batches "
                "(streaming_split(n, equal=True) with drop_last=True)"
            )
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(
                f"{where}: collate_fn must be callable, got {type(collate_fn).__name__}"
            )
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
        self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        self.batch_size, self.devices = batch_size, devices
        self.dtypes, self.paddings, self.collate_fn = dtypes, paddings, collate_fn

    def _array(self, name: str, arr: np.ndarray) -> Any:
        jax = import_jax()
        if arr.dtype == object or arr.dtype.kind in "USO":
            raise TypeError(
                f"iter_jax_batches: column {name!r} has dtype {arr.dtype}, which JAX cannot "
                "hold; drop it, encode it as numbers, or pass collate_fn="
            )
        dtype = _per_column(self.dtypes, name)
        if dtype is not None:
            arr = arr.astype(dtype)
        rows = len(arr)
        if rows < self.batch_size and self.paddings is not None:
            pad = _per_column(self.paddings, name)
            if pad is not None:
                fill = np.full((self.batch_size - rows, *arr.shape[1:]), pad, dtype=arr.dtype)
                arr = np.concatenate([arr, fill])
        if len(arr) % self.devices:
            raise ValueError(
                f"iter_jax_batches: a batch of {len(arr)} rows cannot be split over "
                f"{self.devices} devices; pass drop_last=True or paddings="
            )
        return jax.make_array_from_process_local_data(self.sharding, np.ascontiguousarray(arr))

    def __call__(self, table: pa.Table) -> Any:
        batch = to_batch(table, "numpy")
        if self.collate_fn is not None:
            batch = self.collate_fn(batch)
            if isinstance(batch, np.ndarray):
                return self._array("collate_fn output", batch)
        check_dtypes_cover("iter_jax_batches", self.dtypes, list(batch))
        return {name: self._array(name, np.asarray(arr)) for name, arr in batch.items()}
