"""Datasets from other frameworks' data: ``from_torch`` (a torch ``Dataset``),
``from_daft`` (a Daft DataFrame) and ``from_dask`` (a Dask DataFrame). Each
framework is imported only when its function is called (heavy imports stay
lazy), and Arrow data crosses without a copy where the framework gives Arrow.

>>> import dataflow as df
>>> df.from_torch([10, 20, 30]).take_all()  # doctest: +SKIP
[{'item': 10}, {'item': 20}, {'item': 30}]
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import cloudpickle
import pyarrow as pa

from dataflow.block import pandas_to_table
from dataflow.dataset import Dataset
from dataflow.errors import PlanError
from dataflow.plan.logical import InputData, Read
from dataflow.sources.datasource import Datasource, ReadTask
from dataflow.sources.torch_source import TorchDatasource

if TYPE_CHECKING:
    import daft
    import dask.dataframe
    import torch


def from_torch(dataset: torch.utils.data.Dataset, local_read: bool = False) -> Dataset:
    """The samples of a torch ``Dataset`` (map-style: read in parallel index
    ranges) or ``IterableDataset`` (one read task, in order) as rows; see
    ``dataflow.sources.torch_source`` for how samples become columns.
    ``local_read`` is Ray's "read on the driver's node": every read here runs
    on this machine already, so it changes nothing.

    >>> import torch
    >>> ds = df.from_torch(torch.utils.data.TensorDataset(torch.arange(4)))
    >>> [r["item_0"] for r in ds.take_all()]
    [0, 1, 2, 3]
    """
    if not hasattr(dataset, "__getitem__") and not hasattr(dataset, "__iter__"):
        raise PlanError(
            f"from_torch: expected a torch.utils.data.Dataset or IterableDataset, got "
            f"{type(dataset).__name__} (it has neither __getitem__ nor __iter__)"
        )
    if not isinstance(local_read, bool):
        raise PlanError(f"from_torch: local_read must be a bool, got {local_read!r}")
    return Dataset(Read(TorchDatasource(dataset)))


def from_daft(df: daft.DataFrame) -> Dataset:
    """A Daft DataFrame's rows: Daft runs its plan and hands over Arrow record
    batches, which become the blocks as they are (no copy).

    >>> import daft
    >>> df.from_daft(daft.from_pydict({"x": [1, 2]})).take_all()  # doctest: +SKIP
    [{'x': 1}, {'x': 2}]
    """
    try:
        import daft
    except ImportError as e:
        raise PlanError("from_daft: needs Daft: pip install getdaft") from e
    if not isinstance(df, daft.DataFrame):
        raise PlanError(f"from_daft: expected a daft.DataFrame, got {type(df).__name__}")
    batches = list(df.to_arrow_iter())
    if not batches:
        return Dataset(InputData(blocks=(df.to_arrow(),)))
    return Dataset(InputData(blocks=tuple(pa.Table.from_batches([b]) for b in batches)))


def from_dask(df: dask.dataframe.DataFrame) -> Dataset:
    """A Dask DataFrame's rows: one read task per Dask partition, each computed
    with Dask's synchronous scheduler inside a dataflow worker (so the
    partitions compute in parallel here), its pandas frame becoming a block.

    >>> import dask.dataframe as dd, pandas as pd
    >>> df.from_dask(dd.from_pandas(pd.DataFrame({"x": [1, 2]}), npartitions=2)).count()  # doctest: +SKIP
    2
    """
    try:
        import dask.dataframe as dd
    except ImportError as e:
        raise PlanError('from_dask: needs Dask: pip install "dataflow[dask]"') from e
    if not isinstance(df, dd.DataFrame):
        raise PlanError(f"from_dask: expected a dask.dataframe.DataFrame, got {type(df).__name__}")
    return Dataset(Read(DaskDatasource(df)))


class DaskDatasource(Datasource):
    """The partitions of a Dask DataFrame, one read task each (``from_dask``)."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def get_name(self) -> str:
        return "dask"

    def schema(self) -> pa.Schema | None:
        return pandas_to_table(self.frame._meta).schema

    def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
        return [
            ReadTask(functools.partial(_compute_partition, cloudpickle.dumps(part)))
            for part in self.frame.partitions
        ]


def _compute_partition(payload: bytes) -> Iterator[pa.Table]:
    part = cloudpickle.loads(payload)
    yield pandas_to_table(part.compute(scheduler="sync"))
