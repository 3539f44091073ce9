"""The TensorFlow and JAX consumption methods of ``Dataset`` (``iter_tf_batches``,
``to_tf``, ``iter_jax_batches``), kept out of ``dataset.py``; each delegates to
``DataIterator`` and imports its framework only when called.

>>> import dataflow as df
>>> next(df.range(8).iter_jax_batches(batch_size=4))["id"]  # doctest: +SKIP
Array([0, 1, 2, 3], dtype=int32)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class FrameworkMethods:
    """Mixin of ``Dataset``: needs ``iterator()`` and ``schema()``."""

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
