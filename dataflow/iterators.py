"""DataIterator: the consumption side of a Dataset, built on a stream of blocks.

Each ``iter_*`` call opens one execution (``open_stream()``), re-slices its
blocks into batches of exactly ``batch_size`` rows (the last may be shorter),
converts them to the batch format, and closes the execution when the loop ends,
breaks or raises. ``prefetch_batches`` formats up to that many batches ahead on
a background thread (bounded: a slow consumer stops it).

>>> import dataflow as df
>>> it = df.range(10).iterator()                         # doctest: +SKIP
>>> [len(b["id"]) for b in it.iter_batches(batch_size=4)]  # doctest: +SKIP
[4, 4, 2]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dataflow.block import check_batch_format, iter_rows, rebatch, to_batch
from dataflow.errors import PlanError

if TYPE_CHECKING:
    import pyarrow as pa

    from dataflow.plan.planner import OutputStream

_DONE = object()


class DataIterator:
    """Iterates a dataset's rows or batches; ``Dataset.iterator()`` makes one.

    ``open_stream`` starts one execution and returns its ``OutputStream``; every
    ``iter_*`` call starts a fresh one, so a DataIterator can be iterated again.
    """

    def __init__(self, open_stream: Callable[[], OutputStream], name: str = "dataset") -> None:
        self._open_stream = open_stream
        self._name = name

    def __repr__(self) -> str:
        return f"DataIterator({self._name})"

    def iter_blocks(self) -> Iterator[pa.Table]:
        """The blocks of one execution, as they come; the execution stops (and
        frees its objects) when this generator is closed or exhausted."""
        stream = self._open_stream()
        try:
            yield from stream.iter_blocks()
        finally:
            stream.close()

    def iter_batches(
        self,
        *,
        batch_size: int | None = 256,
        batch_format: str | None = "default",
        prefetch_batches: int = 1,
        drop_last: bool = False,
    ) -> Iterator[Any]:
        """Batches of ``batch_size`` rows (``None``: one batch per block) in
        ``batch_format`` ("default"/"numpy": dict of arrays, "pandas", "pyarrow").

        >>> next(df.range(5).iterator().iter_batches(batch_size=2))  # doctest: +SKIP
        {'id': array([0, 1])}
        """
        fmt = _check_batch_args("iter_batches", batch_size, batch_format, prefetch_batches)
        return self._iter_formatted(
            lambda t: to_batch(t, fmt), batch_size, drop_last, prefetch_batches
        )

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts (tensor cells as numpy arrays)."""
        for table in self.iter_blocks():
            yield from iter_rows(table)

    def _iter_formatted(
        self,
        format_fn: Callable[[pa.Table], Any],
        batch_size: int | None,
        drop_last: bool,
        prefetch_batches: int,
    ) -> Iterator[Any]:
        """``format_fn`` over exact-size batches, computed ``prefetch_batches`` ahead."""
        stream = self._open_stream()

        def batches() -> Iterator[Any]:
            for table in rebatch(stream.iter_blocks(), batch_size):
                if drop_last and batch_size is not None and table.num_rows < batch_size:
                    return
                yield format_fn(table)

        try:
            if prefetch_batches <= 0:
                yield from batches()
            else:
                yield from _prefetched(batches(), stream.close, prefetch_batches)
        finally:
            stream.close()


def _prefetched(source: Iterator[Any], wake: Callable[[], None], depth: int) -> Iterator[Any]:
    """Items of ``source`` produced by a background thread at most ``depth`` ahead.

    Errors in the thread re-raise here. Closing this generator stops the thread:
    ``wake`` (the stream's thread-safe ``close``) ends a wait inside ``source``."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        # Poll so that a consumer that went away never leaves this thread blocked.
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)

    thread = threading.Thread(target=produce, name="dataflow-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        if thread.is_alive():
            wake()
        thread.join()


def _check_batch_args(
    where: str, batch_size: int | None, batch_format: str | None, prefetch_batches: int
) -> str:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise PlanError(f"{where}: batch_size must be a positive int or None, got {batch_size!r}")
    if not isinstance(prefetch_batches, int) or prefetch_batches < 0:
        raise PlanError(
            f"{where}: prefetch_batches must be a non-negative int, got {prefetch_batches!r}"
        )
    try:
        fmt = check_batch_format(batch_format, where)
    except ValueError as e:
        raise PlanError(str(e)) from None
    if fmt == "cupy":
        raise PlanError(
            f"{where}: batch_format 'cupy' is for map_batches on GPU workers; "
            "use 'numpy', 'pandas' or 'pyarrow' here"
        )
    return fmt


__all__ = ["DataIterator"]
