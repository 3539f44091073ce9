"""The methods of ``Dataset`` that feed training: torch batches, the torch
``IterableDataset``, and the share of a DDP rank or of ``shard`` (see
``dataflow.distributed``), kept out of ``dataset.py`` so that no file grows into
a god file. ``Dataset`` inherits them.

>>> import dataflow as df
>>> [len(b["id"]) for b in df.range(10).iter_torch_batches(batch_size=4)]  # doctest: +SKIP
[4, 4, 2]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dataflow.dataset_base import DatasetBase
from dataflow.errors import PlanError
from dataflow.validate import non_negative_int, positive_int

if TYPE_CHECKING:
    from dataflow.dataset import Dataset
    from dataflow.iterators import DataIterator


class FeedMethods(DatasetBase):
    """Part of ``Dataset``: ways to feed training processes."""

    def iter_torch_batches(self, **kwargs: Any) -> Iterator[Any]:
        """Batches as dicts of torch tensors; keywords as
        ``DataIterator.iter_torch_batches`` (batch_size, dtypes, device, collate_fn,
        drop_last, local_shuffle_buffer_size, prefetch_batches...).

        Under an initialized ``torch.distributed`` process group (DDP), or with
        ``rank=`` and ``world_size=``, each rank gets its own share of every epoch
        and every rank the same number of batches; ``ddp_remainder="drop"``
        (default) or ``"pad"`` says what happens to the rows that do not divide
        evenly (see ``dataflow.distributed``). ``world_size=1, rank=0`` reads
        everything on any rank.

        >>> next(df.range(4).iter_torch_batches(batch_size=4))  # doctest: +SKIP
        {'id': tensor([0, 1, 2, 3])}
        """
        return self._torch_iterator(kwargs, "iter_torch_batches").iter_torch_batches(**kwargs)

    def to_torch_dataset(self, **kwargs: Any) -> Any:
        """A ``torch.utils.data.IterableDataset`` for ``DataLoader(ds, batch_size=None)``
        (keywords as ``iter_torch_batches``, DDP ones included); with
        ``num_workers > 0`` each worker runs its own share of the reads and
        together they yield each row once (under DDP: each row of this rank's
        share). ``set_epoch(n)`` and ``state_dict()`` as on ``DataIterator``.

        >>> loader = DataLoader(ds.to_torch_dataset(batch_size=64), batch_size=None)  # doctest: +SKIP
        """
        from dataflow.torch_utils import make_torch_dataset

        it = self._torch_iterator(kwargs, "to_torch_dataset")
        return make_torch_dataset(it, self._plan, kwargs, getattr(it, "share", None))

    def _torch_iterator(self, kwargs: dict[str, Any], where: str) -> DataIterator:
        """This process's iterator: the whole dataset, or its DDP share (popping
        the DDP keywords out of ``kwargs``)."""
        from dataflow.distributed import ShareIterator, share_for

        share = share_for(self._plan, kwargs, where)
        if share is None:
            return self.iterator()
        return ShareIterator(share, on_open=lambda stream: setattr(self, "_last_stream", stream))

    def shard(self, num_shards: int, index: int, *, equal: bool = False) -> Dataset:
        """Share ``index`` of ``num_shards`` disjoint shares that together hold every
        row, cut at the sources (as Hugging Face's ``shard``): when the sources
        know their row count (Parquet, ``range``, in-memory data), contiguous row
        ranges in dataset order whose sizes differ by at most one (``equal=True``:
        ``count // num_shards`` rows each, the last rows dropped); otherwise every
        ``num_shards``-th read task. A filter after the sources runs on each
        share, so shares may then differ in size. For DDP training prefer
        ``to_torch_dataset()``, which also evens out the batch counts.

        >>> df.range(10).shard(3, 2).take_all()
        [{'id': 6}, {'id': 7}, {'id': 8}, {'id': 9}]
        """
        from dataflow.plan.shard import (
            TASKS_PER_SHARE,
            shard_plan,
            shard_rows,
            share_range,
            source_rows,
        )

        positive_int("shard", "num_shards", num_shards)
        non_negative_int("shard", "index", index)
        if index >= num_shards:
            raise PlanError(
                f"shard: index must be in 0..num_shards-1 and num_shards >= 1, got "
                f"num_shards={num_shards}, index={index}"
            )
        rows = source_rows(self._plan)
        if any(n is None for n in rows):
            if equal:
                raise PlanError(
                    "shard: equal=True needs the row count, and a source of this dataset "
                    "cannot count its rows without reading them; shard without equal="
                )
            tasks = TASKS_PER_SHARE * num_shards
            return type(self)(
                shard_plan(self._plan, index, num_shards, parallelism=tasks, where="shard")
            )
        total = sum(n or 0 for n in rows)
        span = share_range(total, index, num_shards, "drop" if equal else "keep")
        return type(self)(shard_rows(self._plan, [span], where="shard"))
