"""The streaming executor: one background thread per running pipeline.

Its loop (DESIGN.md "How a pipeline runs", point 4):

1. move finished bundles one hop downstream, the sink's into the consumer's
   bounded ``OutputQueue``; signal ended inputs; stop everything upstream of a
   satisfied limit;
2. launch tasks while ``scheduling.select_operator`` finds an eligible
   operator (furthest downstream, resources free, not backpressured);
3. block in ``Backend.wait_any`` until a task finishes (or, with nothing
   running, on the output queue's condition until the consumer takes a
   bundle), then hand finished futures to their operators.

``OutputStream`` is the consumer's side: an iterator of ``RefBundle`` with
``iter_blocks()``, ``close()`` and ``stats()``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from dataflow.errors import SourceError, SpillError, UserCodeError
from dataflow.exec.backpressure import (
    BackpressurePolicy,
    MemoryBudgetPolicy,
    MemoryLimitPolicy,
    OutputQueuePolicy,
)
from dataflow.exec.interfaces import ExecEnv, PhysicalOperator, RefBundle
from dataflow.exec.memory_guard import MemoryGuard
from dataflow.exec.progress import builtin_observers
from dataflow.exec.scheduling import pressure_state, select_operator
from dataflow.exec.stats import DatasetStats, ExecutorObserver, StatsCollector
from dataflow.exec.topology import Topology
from runtime.errors import SpillError as RuntimeSpillError

if TYPE_CHECKING:
    import pyarrow as pa

    from dataflow.context import DataContext
    from runtime.backends.base import Backend, StoreStats, TaskFuture

_WAIT_S = 0.1
"""Longest the loop blocks without an event (bounds close() latency and the
actor-pool scale-down and RSS sampling cadence)."""
_RSS_EVERY_S = 0.25
_QUEUE_DEPTH = 2
"""Tasks launched per resource slot: the second waits in the worker's queue
(backends pipeline it), so a worker never idles for a driver round trip."""


SMALL_BYTES_PER_SLOT = 64 * 1024
"""Bytes of small blocks the output queue takes per slot of its block count
beyond that count: a consumer thread wakes late while task threads hold the
GIL (up to its 5 ms switch interval), and a queue of a few tiny blocks full
then stopped every task (``overhead``: 2,000 blocks of 8 KiB)."""


class OutputQueue:
    """Bounded hand-off of the sink's bundles from the executor to the consumer:
    ``max_blocks`` blocks, or more while they hold under
    ``max_blocks * SMALL_BYTES_PER_SLOT`` bytes."""

    def __init__(self, max_blocks: int) -> None:
        self.max_blocks = max(1, max_blocks)
        self._small_bytes = self.max_blocks * SMALL_BYTES_PER_SLOT
        self._items: deque[RefBundle] = deque()
        self._cond = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self.nbytes = 0

    def has_room(self) -> bool:
        return len(self._items) < self.max_blocks or self.nbytes < self._small_bytes

    def __len__(self) -> int:
        return len(self._items)

    def put(self, bundle: RefBundle) -> None:
        with self._cond:
            self._items.append(bundle)
            self.nbytes += bundle.nbytes
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def get(self) -> RefBundle | None:
        """The next bundle; None at the end; raises the pipeline's error."""
        with self._cond:
            while not self._items and not self._done:
                self._cond.wait()
            if self._items:
                bundle = self._items.popleft()
                self.nbytes -= bundle.nbytes
                self._cond.notify_all()  # the executor may be waiting for room
                return bundle
            if self._error is not None:
                error, self._error = self._error, None
                raise error.with_traceback(None)
            return None

    def wait(self, timeout: float) -> None:
        """Block the executor until the consumer takes something (or timeout)."""
        with self._cond:
            if not self._done:
                self._cond.wait(timeout)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def drain(self) -> list[RefBundle]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self.nbytes = 0
            return items


class StreamingExecutor:
    """Runs a physical DAG on ``backend`` in a background thread."""

    def __init__(
        self,
        sink: PhysicalOperator,
        backend: Backend,
        ctx: DataContext,
        *,
        in_driver: bool = False,
        observers: Sequence[ExecutorObserver] = (),
    ) -> None:
        self.topology = Topology(sink)
        self.backend = backend
        self.ctx = ctx
        self.in_driver = in_driver
        self.output = OutputQueue(ctx.output_queue_max_blocks)
        self.collector = StatsCollector()
        self.observers: list[ExecutorObserver] = [
            self.collector,
            *builtin_observers(ctx, backend, self.collector.stats, self.output),
            *observers,
        ]
        budget = ctx.object_store_memory or backend.store_stats().capacity_bytes
        self.memory_budget = budget
        self.policies: list[BackpressurePolicy] = [MemoryBudgetPolicy(budget), OutputQueuePolicy()]
        self._guard: MemoryGuard | None = None
        if ctx.memory_limit:
            self.policies.append(MemoryLimitPolicy(ctx.memory_limit))
            self._guard = MemoryGuard(ctx.memory_limit, backend)
            self.observers.append(self._guard)  # it learns which operators launch tasks
        self._actor_total = backend.total_resources()
        self._total = self._actor_total.scale(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataflow-executor", daemon=True)
        self._errored_blocks = 0

    def start(self) -> None:
        self.collector.store_at_start = self._store_stats()
        env = ExecEnv(self.backend, self.ctx, self.in_driver, self.memory_budget)
        started: list[PhysicalOperator] = []
        try:
            for op in self.topology.ops:
                op.start(env)
                started.append(op)
        except BaseException as e:
            for op in started:
                op.shutdown()
            if isinstance(e, RuntimeSpillError):  # an input put into a full store
                raise SpillError.from_runtime(e) from e.__cause__
            raise
        for obs in self.observers:
            obs.on_start(self.topology.ops)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end; it cancels tasks and frees objects on its way out."""
        self._stop.set()
        self.output.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the loop --------------------------------------------------------------
    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._loop()
        except RuntimeSpillError as e:  # raised by the store, under dataflow's name
            error = SpillError.from_runtime(e)
        except BaseException as e:  # handed to the consumer, raised from next()
            error = e
        finally:
            for op in self.topology.ops:
                try:
                    op.shutdown()
                except Exception as e:  # keep freeing the others; report the first
                    error = error or e
            store = self._store_stats()
            for obs in self.observers:
                obs.on_finish(store)
            self.output.finish(error)

    def _loop(self) -> None:
        topo, ops, backend = self.topology, self.topology.ops, self.backend
        rss, next_rss = 0, 0.0
        while not self._stop.is_set():
            moved = topo.move_outputs(self.output)
            topo.propagate_completion()
            if topo.done():
                return
            now = time.monotonic()
            if now >= next_rss:
                rss, next_rss = self._sample_rss(), now + _RSS_EVERY_S
                if self._guard is not None:
                    self._guard.check(now, rss, ops)
            launched, held_back = self._dispatch(ops, rss, now)
            for op in ops:
                op.on_tick(now)
            for obs in self.observers:
                obs.on_tick(now, held_back, rss)
            owners = {f: op for op in ops for f in op.active_tasks()}
            if not owners:
                if not (moved or launched):  # nothing can change until the consumer acts
                    self.output.wait(_WAIT_S)
                continue
            for fut in backend.wait_any(list(owners), _WAIT_S):
                self._collect(owners[fut], fut)

    def _dispatch(
        self, ops: list[PhysicalOperator], rss: int, now: float
    ) -> tuple[int, list[PhysicalOperator]]:
        """Launch tasks while an operator is eligible; (launched, held back)."""
        sink = self.topology.sink
        launched = 0
        while True:
            state = pressure_state(
                ops,
                sink=sink,
                output_queue_bytes=self.output.nbytes,
                output_queue_full=not self.output.has_room(),
                rss_bytes=rss,
            )
            op, held_back = select_operator(
                ops, self._total, self.policies, state, actor_total=self._actor_total
            )
            if op is None:
                return launched, held_back
            launched += 1
            fut = op.dispatch()
            if fut is not None:
                for obs in self.observers:
                    obs.on_task_start(op, fut, now)

    def _collect(self, op: PhysicalOperator, fut: TaskFuture) -> None:
        try:
            result = op.on_task_done(fut)
        except Exception as e:
            for obs in self.observers:
                obs.on_task_failed(op, e)
            if not isinstance(e, (UserCodeError, SourceError)):
                raise
            limit = self.ctx.max_errored_blocks
            if limit != -1 and self._errored_blocks >= limit:
                raise
            self._errored_blocks += 1
            for obs in self.observers:
                obs.on_block_error(op, e)
            return
        if result is not None:
            for obs in self.observers:
                obs.on_task_done(op, result)

    def _store_stats(self) -> StoreStats | None:
        try:
            return self.backend.store_stats()
        except Exception:  # a backend shut down under the run
            return None

    def _sample_rss(self) -> int:
        """Resident memory of the driver plus every worker."""
        try:
            import psutil

            driver = psutil.Process(os.getpid()).memory_info().rss
        except Exception:
            driver = 0
        try:
            workers = self.backend.worker_rss_bytes()
        except Exception:
            workers = 0
        return driver + workers


class OutputStream:
    """The running pipeline as the consumer sees it: an iterator of ``RefBundle``.

    Bundles returned by ``next()`` belong to the caller (free them with
    ``free(bundle)`` or keep them, as ``materialize()`` does); ``iter_blocks()``
    fetches the tables and frees each bundle once the consumer moved past it.
    ``close()`` stops the executor, cancels running tasks and frees every
    object; it runs on exhaustion, on errors, on garbage collection and at
    ``with`` exit.

    >>> with execute(plan, ctx) as stream:  # doctest: +SKIP
    ...     rows = sum(t.num_rows for t in stream.iter_blocks())
    """

    def __init__(self, executor: StreamingExecutor) -> None:
        self.backend = executor.backend
        self._executor = executor
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_executor, executor)

    def __iter__(self) -> OutputStream:
        return self

    def __next__(self) -> RefBundle:
        try:
            bundle = self._executor.output.get()
        except BaseException:  # the pipeline's error, or KeyboardInterrupt while waiting
            self.close()
            raise
        if bundle is None:
            self.close()
            raise StopIteration
        return bundle

    def iter_blocks(self) -> Iterator[pa.Table]:
        """Tables of the output, in delivery order; each bundle is freed once the
        consumer asks for the next one (or at close)."""
        try:
            for bundle in self:
                try:
                    for ref in bundle.refs:
                        yield self.backend.get(ref)
                finally:
                    self.free(bundle)
        finally:
            self.close()

    def count_rows(self) -> int:
        """Rows of the rest of the output, summed from the bundles' metadata without
        fetching a block (each bundle is freed as it is counted)."""
        total = 0
        for bundle in self:
            total += bundle.num_rows
            self.free(bundle)
        return total

    def free(self, bundle: RefBundle) -> None:
        """Free a bundle taken with ``next()`` (no-op for borrowed blocks)."""
        if bundle.owns_blocks and bundle.refs:
            self.backend.free(bundle.refs)

    def close(self) -> None:
        """Stop the executor, cancel its tasks and free every object (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def stats(self) -> DatasetStats:
        """Per-operator statistics (complete once the stream ended or closed)."""
        return self._executor.collector.stats

    def __enter__(self) -> OutputStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_executor(executor: StreamingExecutor) -> None:
    executor.stop()
    leftovers = [r for b in executor.output.drain() if b.owns_blocks for r in b.refs]
    if leftovers:
        executor.backend.free(leftovers)
