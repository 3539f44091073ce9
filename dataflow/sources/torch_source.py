"""Reading a ``torch.utils.data.Dataset`` (``dataflow.from_torch``).

A map-style dataset (``__len__`` and ``__getitem__``) is cut into index ranges,
one read task each, so that its samples load in parallel; an
``IterableDataset`` (or one without ``__len__``) is read by one task, in
order, as Ray Data reads every torch dataset.

Samples become rows: a sample that is a tensor, array, PIL image or scalar
goes in column ``item`` (tensors and images as numpy tensor cells); a dict
sample gives its keys as columns; a tuple or list sample (``(image, label)``)
gives columns ``item_0``, ``item_1``... (Arrow has no column of Python tuples;
Ray Data keeps the tuple as a pickled object in ``item``).

>>> src = TorchDatasource([1, 2, 3])
>>> [t.to_pydict() for task in src.get_read_tasks(2) for t in task()]
[{'item': [1, 2]}, {'item': [3]}]
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa

from dataflow.block import rows_to_table
from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask

BATCH_ROWS = 32
"""Samples a block holds (Ray Data's TORCH_DATASOURCE_READER_BATCH_SIZE)."""


class TorchDatasource(Datasource):
    """A torch ``Dataset`` / ``IterableDataset`` (or any sized, indexable
    sequence of samples) as a source; see the module docstring."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.sized = _is_map_style(dataset)

    def get_name(self) -> str:
        return "torch"

    def num_rows(self) -> int | None:
        return len(self.dataset) if self.sized else None

    def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
        # cloudpickle: a dataset class defined in the user's script (__main__)
        # goes by value; plain pickle would name a class workers cannot import.
        payload = cloudpickle.dumps(self.dataset)
        if not self.sized:
            return [ReadTask(functools.partial(_read_iterable, payload))]
        n = len(self.dataset)
        k = max(1, min(parallelism, n))
        bounds = np.linspace(0, n, k + 1).astype(int)
        return [
            ReadTask(
                functools.partial(_read_range, payload, int(lo), int(hi)),
                BlockMetadata(num_rows=int(hi - lo)),
            )
            for lo, hi in zip(bounds[:-1], bounds[1:])
            if hi > lo
        ]


def _is_map_style(dataset: Any) -> bool:
    try:
        from torch.utils.data import IterableDataset
    except ImportError:  # pragma: no cover - torch is what calls this
        IterableDataset = ()  # noqa: N806
    if isinstance(dataset, IterableDataset):
        return False
    if not hasattr(dataset, "__getitem__"):
        return False
    try:
        len(dataset)
    except TypeError:
        return False
    return True


def _read_range(payload: bytes, lo: int, hi: int) -> Iterator[pa.Table]:
    dataset = cloudpickle.loads(payload)
    for start in range(lo, hi, BATCH_ROWS):
        yield samples_to_table([dataset[i] for i in range(start, min(hi, start + BATCH_ROWS))])


def _read_iterable(payload: bytes) -> Iterator[pa.Table]:
    dataset = cloudpickle.loads(payload)
    batch: list[Any] = []
    for sample in dataset:
        batch.append(sample)
        if len(batch) == BATCH_ROWS:
            yield samples_to_table(batch)
            batch = []
    if batch:
        yield samples_to_table(batch)


def samples_to_table(samples: list[Any]) -> pa.Table:
    """Torch samples as one block (see the module docstring for the columns).

    >>> samples_to_table([(1, "a"), (2, "b")]).to_pydict()
    {'item_0': [1, 2], 'item_1': ['a', 'b']}
    """
    first = samples[0]
    if isinstance(first, Mapping):
        rows = [{k: _value(v) for k, v in s.items()} for s in samples]
    elif isinstance(first, (tuple, list)):
        rows = [{f"item_{i}": _value(v) for i, v in enumerate(s)} for s in samples]
    else:
        rows = [{"item": _value(s)} for s in samples]
    return rows_to_table(rows, "from_torch")


def _value(v: Any) -> Any:
    """A sample's field as Arrow can hold it: tensors and images as numpy."""
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        arr = v.detach().cpu().numpy()
        return arr if arr.ndim else arr.item()
    if type(v).__module__.startswith("PIL."):
        return np.asarray(v)
    if isinstance(v, np.generic):
        return v.item()
    return v
