"""``DataIterator.to_torch``: Ray Data's column-oriented torch dataset, a
``torch.utils.data.IterableDataset`` of ``(features, label)`` batches.

Each batch of ``batch_size`` rows becomes:

- ``label``: column ``label_column`` as a tensor (shape ``(B, 1)`` with
  ``unsqueeze_label_tensor``, else ``(B,)``), None without a label column;
- ``features``: ``feature_columns`` (default: every column but the label)
  as one tensor, each column a ``(B, 1)`` slice (``unsqueeze_feature_tensors``)
  concatenated along dim 1 so that ``features[:, j]`` is column ``j``; a list
  of lists gives a list of such tensors, a dict of lists a dict of them.
  ``feature_column_dtypes`` is one dtype, or one per group (list or dict).

torch is imported when the dataset is made.

>>> import dataflow as df
>>> ds = df.from_items([{"a": 1.0, "b": 2.0, "y": 0}]).iterator().to_torch(label_column="y")  # doctest: +SKIP
>>> next(iter(ds))  # doctest: +SKIP
(tensor([[1., 2.]]), tensor([[0]]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from dataflow.errors import PlanError
from dataflow.torch_convert import array_to_tensor


def columns_torch_dataset(
    batches: Callable[[], Iterator[dict[str, np.ndarray]]],
    *,
    label_column: str | None,
    feature_columns: Any,
    label_column_dtype: Any,
    feature_column_dtypes: Any,
    unsqueeze_label_tensor: bool,
    unsqueeze_feature_tensors: bool,
) -> Any:
    """The IterableDataset over the numpy batches ``batches()`` yields."""
    import torch

    _check_groups(feature_columns, feature_column_dtypes)

    def generate() -> Iterator[tuple[Any, Any]]:
        for batch in batches():
            label = None
            if label_column is not None:
                if label_column not in batch:
                    raise PlanError(
                        f"to_torch: no label column {label_column!r}; columns: {list(batch)}"
                    )
                label = _tensor(batch, [label_column], label_column_dtype, unsqueeze_label_tensor)
            rest = {k: v for k, v in batch.items() if k != label_column}
            if isinstance(feature_columns, Mapping):
                dtypes = feature_column_dtypes
                features: Any = {
                    key: _tensor(
                        rest,
                        cols,
                        dtypes.get(key) if isinstance(dtypes, Mapping) else dtypes,
                        unsqueeze_feature_tensors,
                    )
                    for key, cols in feature_columns.items()
                }
            elif feature_columns and isinstance(feature_columns[0], (list, tuple)):
                dtypes = feature_column_dtypes
                features = [
                    _tensor(
                        rest,
                        cols,
                        dtypes[i] if isinstance(dtypes, (list, tuple)) else dtypes,
                        unsqueeze_feature_tensors,
                    )
                    for i, cols in enumerate(feature_columns)
                ]
            else:
                cols = list(feature_columns) if feature_columns else list(rest)
                features = _tensor(rest, cols, feature_column_dtypes, unsqueeze_feature_tensors)
            yield features, label

    class ColumnsTorchDataset(torch.utils.data.IterableDataset):
        """``(features, label)`` batches of a dataflow ``DataIterator``."""

        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            return generate()

    return ColumnsTorchDataset()


def _check_groups(feature_columns: Any, dtypes: Any) -> None:
    if isinstance(feature_columns, Mapping):
        if isinstance(dtypes, (list, tuple)):
            raise PlanError(
                "to_torch: feature_columns is a dict; give feature_column_dtypes as a dict"
            )
    elif feature_columns and isinstance(feature_columns[0], (list, tuple)):
        if isinstance(dtypes, Mapping):
            raise PlanError("to_torch: feature_columns is a list of lists; give dtypes as a list")
        if isinstance(dtypes, (list, tuple)) and len(dtypes) != len(feature_columns):
            raise PlanError(
                f"to_torch: {len(dtypes)} feature_column_dtypes for "
                f"{len(feature_columns)} feature column groups"
            )
    elif isinstance(dtypes, (list, tuple, Mapping)):
        raise PlanError("to_torch: feature_columns is one group; give one feature_column_dtypes")


def _tensor(
    batch: Mapping[str, np.ndarray], columns: list[str], dtype: Any, unsqueeze: bool
) -> Any:
    """The columns as one tensor: each ``(B, 1)`` (or its own shape) joined on dim 1."""
    import torch

    missing = [c for c in columns if c not in batch]
    if missing:
        raise PlanError(f"to_torch: no column {missing[0]!r}; columns: {list(batch)}")
    parts = []
    for c in columns:
        t = array_to_tensor(batch[c], c)
        if dtype is not None:
            t = t.to(dtype)
        if unsqueeze and t.dim() == 1:
            t = t.unsqueeze(1)
        parts.append(t)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
