"""Feeding PyTorch's ``DataLoader``: the ``to_torch_dataset`` dataset (one
share of the plan per loader worker, DDP-aware) and the batch type it yields.
Batch -> tensor conversion is ``dataflow.torch_convert``.

A batch crosses from a loader worker to the main process as a ``TorchBatch``
(small CPU tensors travel inside the pickle):

>>> import pickle, torch
>>> pickle.loads(pickle.dumps(TorchBatch({"x": torch.arange(3)})))["x"].tolist()
[0, 1, 2]
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from dataflow.torch_convert import check_torch_args

if TYPE_CHECKING:
    import torch


def make_torch_dataset(
    local: Any, plan: Any, torch_kwargs: dict[str, Any], share: Any = None
) -> torch.utils.data.IterableDataset:
    """The ``to_torch_dataset()`` object: ``local`` (a ``DataIterator``) feeds it in
    the main process; each DataLoader worker runs its own share of ``plan`` (the
    logical plan, sharded at its sources by ``dataflow.plan.shard``). Under DDP
    ``share`` (a ``dataflow.distributed.DistributedShare``) is this rank's share,
    which ``local`` iterates and the workers cut into parts."""
    check_torch_args(
        torch_kwargs.get("dtypes"), torch_kwargs.get("device"), None, "to_torch_dataset"
    )
    # What a worker's share runs, imported here so that forked workers inherit it
    # instead of each importing it again.
    import dataflow.plan.optimizer  # noqa: F401
    import dataflow.plan.planner  # noqa: F401
    import dataflow.plan.shard  # noqa: F401
    import runtime.backends.inline  # noqa: F401

    cls = _torch_dataset_class() if share is None else _torch_share_dataset_class()
    return cls(local, plan, torch_kwargs, share)


def __getattr__(name: str) -> Any:
    # The class subclasses torch's IterableDataset, so it is built on first use;
    # this hook lets pickle find it by name in a fresh process.
    if name == "TorchIterableDataset":
        return _torch_dataset_class()
    if name == "TorchShareDataset":
        return _torch_share_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


INBAND_MAX_BYTES = 1 << 20
"""A DataLoader worker sends tensors up to this size to the main process inside
the pickle (two memcpys, ~0.1 ms per batch); bigger ones through torch's shared
memory, whose fixed cost (a file and a mapping per tensor, ~1.5 ms measured)
only pays off for big tensors."""


class TorchBatch(dict):
    """A batch (column -> tensor) from ``to_torch_dataset``: a plain dict, except
    that DataLoader's ``default_collate`` refuses to stack several of them and
    that small CPU tensors pickle as their bytes (see ``INBAND_MAX_BYTES``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        import torch

        def inband(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.device.type == "cpu" and not v.requires_grad:
                if v.nbytes <= INBAND_MAX_BYTES:
                    try:
                        return v.numpy()
                    except TypeError:  # a dtype numpy lacks (bfloat16)
                        return v
            return v

        return _rebuild_batch, ({k: inband(v) for k, v in self.items()},)


def _rebuild_batch(columns: dict[str, Any]) -> TorchBatch:
    import torch

    return TorchBatch(
        {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in columns.items()}
    )


def _refuse_collate(batch: list[TorchBatch], *, collate_fn_map: Any = None) -> Any:
    rows = len(next(iter(batch[0].values()))) if batch[0] else 0
    raise TypeError(
        f"to_torch_dataset: DataLoader(batch_size={len(batch)}) would stack {len(batch)} "
        f"batches of {rows} rows into one; the dataset already yields whole batches. Pass "
        "batch_size=None to DataLoader and choose the batch size with "
        "to_torch_dataset(batch_size=...)"
    )


def _guard_default_collate() -> None:
    """Make ``default_collate`` (DataLoader with a ``batch_size``) raise on our
    batches; the registry is torch's documented way to extend it."""
    from torch.utils.data._utils.collate import default_collate_fn_map

    default_collate_fn_map.setdefault(TorchBatch, _refuse_collate)


def _share_stream(plan: Any, index: int, count: int, ctx: Any) -> Any:
    """Start share ``index`` of ``count`` of ``plan`` on this process's backend."""
    from dataflow.plan.optimizer import optimize
    from dataflow.plan.planner import execute
    from dataflow.plan.shard import shard_plan

    share = shard_plan(
        plan,
        index,
        count,
        parallelism=ctx.read_parallelism_factor * count,
        where=f"to_torch_dataset with DataLoader(num_workers={count})",
    )
    return execute(optimize(share, ctx.optimizer_flags), ctx)


MAX_LOADER_WORKERS = 256
"""DataLoader workers a ``to_torch_dataset`` keeps an epoch count for."""


@functools.cache
def _torch_dataset_class() -> type:
    import torch.utils.data

    from dataflow import session
    from dataflow.context import DataContext
    from dataflow.iterators import DataIterator
    from runtime.fnpickle import dumps_function, loads_function

    _guard_default_collate()

    class TorchIterableDataset(torch.utils.data.IterableDataset):
        """Batches of tensors for ``DataLoader(ds, batch_size=None)``.

        With ``num_workers > 0`` each loader worker runs its own share of the
        pipeline (every ``num_workers``-th read task, or a row range of in-memory
        data; under DDP, whole batches of this rank's rows) on an in-process
        backend, so together they yield each row once and nothing is shared
        across processes (no threads, sockets or gRPC state in the parent to
        fork). ``state_dict``/``load_state_dict`` resume iteration in the main
        process (``num_workers=0``). Each iteration is the next epoch (for the
        local shuffle and, under DDP, the dealing of shares); ``set_epoch(n)``
        sets it, as on a ``DistributedSampler``.
        """

        def __init__(self, local: Any, plan: Any, torch_kwargs: dict[str, Any], share: Any) -> None:
            self._local = local
            self._plan = plan
            self._kwargs = torch_kwargs
            self._share = share
            self._ctx: DataContext | None = None
            self._copy_iter: DataIterator | None = None
            # [0]: the epoch set by set_epoch; [1 + w]: iterations worker w began
            # since. In shared memory, so loader workers of every epoch (forked
            # or spawned, persistent or not) count on from the same numbers.
            self._epochs = torch.zeros(1 + MAX_LOADER_WORKERS, dtype=torch.int64)
            self._epochs.share_memory_()

        def __getstate__(self) -> dict[str, Any]:
            # A spawned worker gets the context as it is now (a forked one has it),
            # and the plan's UDFs by value, as workers of a backend get them.
            state = {**self.__dict__, "_local": None, "_copy_iter": None}
            state["_ctx"] = DataContext.get_current().copy()
            state["_plan"] = dumps_function(self._plan)
            state["_share"] = None if self._share is None else dumps_function(self._share)
            return state

        def __setstate__(self, state: dict[str, Any]) -> None:
            share = state["_share"]
            self.__dict__.update(
                state,
                _plan=loads_function(state["_plan"]),
                _share=None if share is None else loads_function(share),
            )

        def __iter__(self) -> Iterator[Any]:
            _guard_default_collate()  # in whichever process collates
            info = torch.utils.data.get_worker_info()
            if info is not None:
                batches = self._worker_batches(info.id, info.num_workers)
            elif self._local is not None:
                batches = self._local.iter_torch_batches(**self._kwargs)
            else:  # a copy unpickled in another process: the whole plan, run there
                batches = self._copy_iterator().iter_torch_batches(**self._kwargs)
            for batch in batches:
                yield TorchBatch(batch) if type(batch) is dict else batch

        def set_epoch(self, epoch: int) -> None:
            """Make the next iteration epoch ``epoch``, in this process and in
            DataLoader workers (call it before iterating the loader)."""
            if self._local is not None:
                self._local.set_epoch(epoch)
            self._epochs[0] = epoch
            self._epochs[1:] = 0

        def _worker_epoch(self, index: int, count: int) -> int:
            if count > MAX_LOADER_WORKERS:
                raise ValueError(
                    f"to_torch_dataset: DataLoader(num_workers={count}) is more than the "
                    f"{MAX_LOADER_WORKERS} workers it keeps epochs for"
                )
            epoch = int(self._epochs[0]) + int(self._epochs[1 + index])
            self._epochs[1 + index] += 1
            return epoch

        def _worker_batches(self, index: int, count: int) -> Iterator[Any]:
            # A forked worker dropped its parent's backend (see dataflow.session);
            # its share runs here, in this process.
            if not session.is_initialized():
                session.init("inline")
            ctx = self._ctx or DataContext.get_current().copy()
            epoch = self._worker_epoch(index, count)
            name = f"DataLoader worker {index} of {count}"
            kwargs = dict(self._kwargs)
            salt: tuple[int, ...] = ()
            if self._share is None:
                opener = functools.partial(_share_stream, self._plan, index, count, ctx)
            else:
                part = self._share.part(epoch, index, count)
                opener = functools.partial(self._share.open, part, ctx)
                name = f"{self._share.where}, {name}"
                salt = (1 + part.slot, 1 + index)
                if kwargs.get("local_shuffle_seed") is None:
                    kwargs["local_shuffle_seed"] = self._share.seed
            it = DataIterator(opener, name=name, shuffle_salt=salt)
            it.set_epoch(epoch)
            # DataLoader prefetches (prefetch_factor) from each worker: a prefetch
            # thread here would only add GIL hand-offs.
            return it.iter_torch_batches(**{**kwargs, "prefetch_batches": 0})

        def _copy_iterator(self) -> DataIterator:
            if self._copy_iter is None:
                if self._share is not None:
                    from dataflow.distributed import ShareIterator

                    self._copy_iter = ShareIterator(self._share)
                else:
                    ctx = self._ctx or DataContext.get_current().copy()
                    self._copy_iter = DataIterator(
                        functools.partial(_share_stream, self._plan, 0, 1, ctx)
                    )
            return self._copy_iter

        def state_dict(self) -> dict[str, Any]:
            return self._main_iterator().state_dict()

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self._main_iterator().load_state_dict(state)

        def _main_iterator(self) -> DataIterator:
            if self._local is None:
                raise RuntimeError(
                    "to_torch_dataset: state_dict/load_state_dict track iteration in the "
                    "main process (num_workers=0); call them on the original dataset"
                )
            if int(self._epochs[1:].sum()):
                raise RuntimeError(
                    "to_torch_dataset: DataLoader workers iterated this dataset, and the "
                    "main process does not see where they stand; state_dict/load_state_dict "
                    "need DataLoader(num_workers=0) (dataflow runs the pipeline in parallel "
                    "either way)"
                )
            return self._local

    TorchIterableDataset.__module__ = __name__
    TorchIterableDataset.__qualname__ = "TorchIterableDataset"
    return TorchIterableDataset


@functools.cache
def _torch_share_dataset_class() -> type:
    base = _torch_dataset_class()

    class TorchShareDataset(base):  # type: ignore[misc, valid-type]
        """``to_torch_dataset()`` under DDP: this rank's share of every epoch.

        ``len()`` is the number of batches this rank yields an epoch, the same on
        every rank and exact with any number of DataLoader workers (their parts
        are whole batches). Lightning, seeing a length, fetches no batch ahead,
        so ``state_dict()`` saved in a checkpoint is where training stands.
        """

        def __len__(self) -> int:
            share = self._share
            size = self._kwargs.get("batch_size", share.batch_size)
            if self._kwargs.get("drop_last"):
                return share.rows_per_rank // size
            return -(-share.rows_per_rank // size)

    TorchShareDataset.__module__ = __name__
    TorchShareDataset.__qualname__ = "TorchShareDataset"
    return TorchShareDataset
