"""Map operators: run a ``MapTaskFn`` (a fused chain of stages) once per input
bundle, on a task pool. A map operator may also be a source: given an iterator
of ``ReadTask`` it launches one task per read task, pulling them lazily so that
reading starts while the datasource is still listing files.

The actor-pool variant (``actor_pool.py``) reuses all of this and changes only
where a task runs.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dataflow.errors import WorkerCrashedError
from dataflow.exec.interfaces import (
    BlockOrigin,
    ExecEnv,
    PhysicalOperator,
    RefBundle,
    cancel_or_collect,
    files_phrase,
)
from dataflow.exec.placement import Placement, idle_cpu_s
from dataflow.exec.transforms import MapTaskFn, remote_to_user_error
from dataflow.sources.datasource import BlockMetadata, TaskSizer
from runtime.errors import RemoteTaskError, TaskCancelledError
from runtime.errors import WorkerCrashedError as RuntimeWorkerCrashed
from runtime.resources import Resources

if TYPE_CHECKING:
    from dataflow.exec.metering import StepInfo
    from dataflow.sources.datasource import ReadTask
    from runtime.backends.base import Backend, FunctionHandle, TaskFuture, TaskResult


@dataclass(eq=False)
class MapTask:
    """One launched task: what it consumed and, once done, what it produced."""

    index: int
    seq: tuple[int, ...]
    label: str
    """What the task works on, for error messages: "read task 3 (file /d/x.parquet)"."""
    inputs: RefBundle | None
    outputs: list[RefBundle] | None = None
    done: bool = False
    attempts: int = 1
    producer: str = ""
    """The task in words, for the origins of its outputs: "read task 3"."""
    files: tuple[str, ...] = ()
    """The files its input came from, when known."""
    read_bytes: int = 0
    """A read task's planned bytes (what the sizer is told it cost)."""
    expect_rows: int = 0
    """Rows the task should produce when known (input rows; 0 when unknown)."""


@dataclass
class _Estimate:
    """Running mean of output bytes per task, for the memory budget."""

    total: int = 0
    count: int = 0
    default: int = 0

    def add(self, nbytes: int) -> None:
        self.total += nbytes
        self.count += 1

    def value(self, input_bytes: int) -> int:
        if self.count:
            return self.total // self.count
        return input_bytes or self.default


SHORT_TASK_S = 0.005
"""Tasks shorter than this on average are short: the driver round trip is a
large part of them."""
SHORT_TASKS_PER_SLOT = 4
"""A short-task operator counts each task as this fraction of its resources, so
this many times more tasks are in flight: they queue in the workers, which then
never wait for the driver, and the executor collects several per wake-up."""
_SHORT_AFTER = 8  # tasks measured before an operator may count as short
MAX_READS_PER_TASK = 16
"""Short read tasks (tiny files, many small ranges) run up to this many reads
per launched task, together at most ``target_min_block_size`` planned bytes,
so the per-task cost (dispatch, store, bookkeeping) is paid once per several
reads; each read still makes its own blocks."""


@dataclass
class MapOptions:
    """How a map operator's tasks run."""

    resources: Resources = field(default_factory=lambda: Resources(cpu=1))
    min_rows_per_task: int = 0
    """Bundle inputs until a task has this many rows (map_batches' batch_size)."""
    placement: str = "processes"
    """Where tasks run: "threads" (the driver's), "processes" (workers) or
    "auto" (threads, moving to processes when measured GIL-bound; placement.py)."""
    max_tasks: int | None = None
    """At most this many tasks at once (``concurrency=n`` of a function)."""
    sizer: TaskSizer | None = None
    """Told each read task's cost, so the source sizes later tasks by it."""
    row_cap: int | None = None
    """A downstream ``limit(n)`` over row-preserving steps: no new task starts
    while the rows already produced plus those promised by running tasks (their
    known input rows) reach ``n``. A straggler that holds later outputs back for
    order then stops the launches instead of letting thousands of reads start."""


class MapOperator(PhysicalOperator):
    """Applies a ``MapTaskFn`` to each input bundle on a pool of tasks.

    ``groups_reads``: short reads may share a task (not in an actor pool, where
    one slow actor must not hold several reads).

    >>> op = MapOperator("map_batches(f)", [upstream], MapTaskFn(stages, 1 << 27))  # doctest: +SKIP
    """

    groups_reads = True

    def __init__(
        self,
        name: str,
        inputs: list[PhysicalOperator],
        task_fn: MapTaskFn,
        options: MapOptions | None = None,
        read_tasks: Iterator[ReadTask] | None = None,
    ) -> None:
        super().__init__(name, inputs)
        self.task_fn = task_fn
        self.options = options or MapOptions()
        self._read_tasks = read_tasks
        self._next_read: ReadTask | None = None
        self._queue: deque[RefBundle] = deque()
        self._pending: list[RefBundle] = []
        self._pending_rows = 0
        self._tasks: dict[TaskFuture, MapTask] = {}
        self._ordered: deque[MapTask] = deque()
        self._out: deque[RefBundle] = deque()
        self._estimate = _Estimate()
        self._task_s = 0.0  # summed wall time of finished tasks
        self._task_n = 0
        self._slot = self.options.resources  # what one task counts against the budget
        self._out_bytes = 0  # finished outputs not yet taken (incl. ordered hold-back)
        self._held_bytes = 0  # finished outputs waiting behind an unfinished earlier task
        self._window_bytes = 0  # hold-back above which no new task starts (preserve_order)
        self._running_in_bytes = 0
        self._task_count = 0
        self._reads_per_task = 1
        self._group_bytes = 0  # planned bytes a task of grouped reads stays within
        self._handle: FunctionHandle | None = None
        self._backend: Backend | None = None
        self._preserve_order = False
        self._max_retries = 3
        self._placement = Placement("processes", 1)
        self._closed = False
        self._promised_rows = 0  # produced + expected from running tasks (row_cap)

    def steps(self) -> tuple[StepInfo, ...]:
        return self.task_fn.steps()

    # -- lifecycle -------------------------------------------------------------
    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend
        self._preserve_order = env.ctx.preserve_order
        self._window_bytes = reorder_window_bytes(env)
        self._max_retries = env.ctx.max_task_retries
        mode = "threads" if env.in_driver else self.options.placement
        if not env.backend.driver_threads:
            mode = "processes"  # every task runs in the backend's workers (ray)
        self._placement = Placement(mode, int(env.backend.total_resources().cpu))
        self.metrics.placement = self._placement.note
        self._estimate.default = env.ctx.target_min_block_size
        self._group_bytes = env.ctx.target_min_block_size
        self._handle = self._register(env)

    def _register(self, env: ExecEnv) -> FunctionHandle:
        return env.backend.register_function(self.task_fn, self.name)

    def shutdown(self) -> None:
        if self._closed or self._backend is None:
            return
        self._closed = True
        backend = self._backend
        to_free: list = []
        for fut, task in list(self._tasks.items()):
            to_free += cancel_or_collect(backend, fut)
            if task.inputs is not None and task.inputs.owns_blocks:
                to_free += task.inputs.refs
        self._tasks.clear()
        held = list(self._queue) + self._pending + list(self._out)
        held += [b for t in self._ordered for b in (t.outputs or ())]
        to_free += [r for b in held if b.owns_blocks for r in b.refs]
        self._queue.clear()
        self._pending.clear()
        self._out.clear()
        self._ordered.clear()
        self._read_tasks = None
        self._next_read = None
        self._out_bytes = self._running_in_bytes = self._held_bytes = 0
        self.metrics.queued_bytes = 0
        if to_free:
            backend.free(to_free)
        self._release()

    def _release(self) -> None:
        if self._handle is not None:
            self._backend.release_function(self._handle)
            self._handle = None

    # -- data in ---------------------------------------------------------------
    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        self.metrics.queued_bytes += bundle.nbytes
        if self.options.min_rows_per_task <= 1:
            self._queue.append(bundle)
            return
        self._pending.append(bundle)
        self._pending_rows += bundle.num_rows
        if self._pending_rows >= self.options.min_rows_per_task:
            self._flush_pending()

    def _inputs_done(self, input_index: int) -> None:
        self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        first = self._pending[0]
        if len(self._pending) == 1:
            self._queue.append(first)
        else:
            self._queue.append(
                RefBundle(
                    refs=tuple(r for b in self._pending for r in b.refs),
                    schema=first.schema,
                    seq=first.seq,
                    owns_blocks=all(b.owns_blocks for b in self._pending),
                    origins=tuple(o for b in self._pending for o in b.block_origins()),
                )
            )
        self._pending = []
        self._pending_rows = 0

    def _peek_read(self) -> ReadTask | None:
        if self._next_read is None and self._read_tasks is not None:
            self._next_read = next(self._read_tasks, None)
            if self._next_read is None:
                self._read_tasks = None
        return self._next_read

    def _has_queued(self) -> bool:
        return bool(self._queue or self._pending) or self._peek_read() is not None

    # -- work ------------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(self._queue) or self._peek_read() is not None

    def dispatch_cost(self) -> Resources | None:
        if self._closed or not self._has_work() or self._window_full():
            return None
        if self.options.max_tasks is not None and len(self._tasks) >= self.options.max_tasks:
            return None
        cap = self.options.row_cap
        if cap is not None and self._tasks and self._promised_rows >= cap:
            return None
        return self._slot

    def _window_full(self) -> bool:
        """True while outputs held back for order exceed the reorder window: a
        straggling task then stops new launches instead of growing the window
        (it is running, so it always finishes and drains the window)."""
        return self._held_bytes > self._window_bytes

    def next_task_bytes(self) -> tuple[int, int]:
        if self._queue:
            nbytes = self._queue[0].nbytes
            return nbytes, self._estimate.value(nbytes)
        read = self._peek_read()
        size = read.metadata.size_bytes if read is not None else None
        return 0, self._estimate.value(size or 0)

    def _next_task(self) -> tuple[MapTask, tuple]:
        index = self._task_count
        self._task_count += 1
        if self._queue:
            bundle = self._queue.popleft()
            self.metrics.queued_bytes -= bundle.nbytes
            label = bundle.describe() or f"the input of its task {index}"
            producer = f"{self.name} task {index}"
            task = MapTask(
                index,
                bundle.seq,
                label,
                bundle,
                producer=producer,
                files=bundle.files(),
                expect_rows=bundle.num_rows or 0,
            )
            return task, (index, None)
        reads = [self._peek_read()]
        self._next_read = None
        planned = reads[0].metadata.size_bytes or 0
        while len(reads) < self._reads_per_task and self._peek_read() is not None:
            planned += self._next_read.metadata.size_bytes or self._group_bytes
            if planned > self._group_bytes:
                break
            reads.append(self._next_read)
            self._next_read = None
        files = tuple(f for read in reads for f in read.metadata.input_files)
        producer = f"read task {index}"
        label = producer + files_phrase(files)
        # The worker needs the read function and the file names (for errors) only:
        # the rest of the metadata (a schema, sizes) would be pickled with every task.
        slim = tuple(
            dataclasses.replace(r, metadata=BlockMetadata(input_files=r.metadata.input_files))
            for r in reads
        )
        task = MapTask(
            index,
            (index,),
            label,
            None,
            producer=producer,
            files=files,
            read_bytes=sum(r.metadata.size_bytes or 0 for r in reads),
            expect_rows=sum(r.metadata.num_rows or 0 for r in reads),
        )
        return task, (index, slim[0] if len(slim) == 1 else slim)

    def dispatch(self) -> TaskFuture | None:
        task, args = self._next_task()
        refs = task.inputs.refs if task.inputs is not None else ()
        fut = self._submit(refs, args)
        self._track(fut, task)
        return fut

    def _submit(self, refs: tuple, args: tuple) -> TaskFuture:
        return self._backend.submit(
            self._handle,
            refs,
            args,
            resources=self.options.resources,
            max_retries=self._max_retries,
            name=self.name,
            in_driver=self._placement.in_driver,
        )

    def _track(self, fut: TaskFuture, task: MapTask) -> None:
        self.metrics.tasks_launched += 1
        self._promised_rows += task.expect_rows
        if task.inputs is not None:
            self._running_in_bytes += task.inputs.nbytes
        self._tasks[fut] = task
        if self._preserve_order:
            self._ordered.append(task)

    def active_tasks(self) -> list[TaskFuture]:
        return list(self._tasks)

    def num_active_tasks(self) -> int:
        return len(self._tasks)

    def resources_in_use(self) -> Resources:
        return scaled_resources(self._slot, len(self._tasks))

    def on_task_done(self, future: TaskFuture) -> TaskResult | None:
        task = self._tasks.pop(future)
        try:
            result = future.result()
        except (TaskCancelledError, RemoteTaskError, RuntimeWorkerCrashed) as e:
            failure = e
        else:
            outputs = [
                RefBundle(
                    refs=(ref,),
                    schema=schema,
                    seq=task.seq + (k,),
                    origins=(BlockOrigin(task.producer, k, task.files),),
                )
                for k, (ref, schema) in enumerate(zip(result.refs, result.schemas))
            ]
            self._estimate.add(sum(r.nbytes for r in result.refs))
            self._time_task(result.wall_s)
            if self.options.sizer is not None:
                self.options.sizer.observe(result.wall_s, task.read_bytes)
            self._finish(task, outputs)
            return result
        # Raised outside the except block so the user sees one traceback, not a chain.
        error = self._on_failure(task, failure)
        if error is not None:
            raise error
        return None

    def on_tick(self, now: float) -> None:
        placement = self._placement
        if placement.measuring:
            placement.observe(len(self._tasks), now, time.process_time(), idle_cpu_s())
            self.metrics.placement = placement.note
        # Measured GIL-bound: move to the workers when they are up; boot them
        # (prestart is a no-op once they exist) only once the boot is due, and
        # keep starting tasks on threads meanwhile.
        if not placement.moving:
            return
        backend = self._backend
        if (placement.boot_due or backend.worker_pids()) and backend.prestart(wait=0):
            placement.moved()
            self.metrics.placement = placement.note

    def _time_task(self, seconds: float) -> None:
        self._task_s += seconds
        self._task_n += 1
        if self._task_n >= _SHORT_AFTER:
            short = self._task_s < SHORT_TASK_S * self._task_n
            res = self.options.resources
            self._slot = scaled_resources(res, 1 / SHORT_TASKS_PER_SLOT) if short else res
            if short and self.groups_reads and self.options.row_cap is None:
                # A limit downstream keeps one read per task: no read past it.
                per_read = self._task_s / self._task_n / self._reads_per_task
                self._reads_per_task = max(
                    1, min(MAX_READS_PER_TASK, int(SHORT_TASK_S / max(per_read, 1e-6)))
                )

    def _on_failure(self, task: MapTask, failure: BaseException) -> BaseException | None:
        """Free what the task held; the error to raise (None: nothing to report)."""
        self._finish(task, [])
        if isinstance(failure, RemoteTaskError):
            return remote_to_user_error(self.name, task.label, failure)
        if isinstance(failure, RuntimeWorkerCrashed):
            return WorkerCrashedError(
                f"{self.name}: the worker running {task.label} died ({failure}) and the task "
                f"failed after {self._max_retries} retries; raise "
                "DataContext.max_task_retries or find what kills the worker (memory?)",
                failure.exitcode,
            )
        return None

    def _finish(self, task: MapTask, outputs: list[RefBundle]) -> None:
        self._promised_rows += sum(b.num_rows for b in outputs) - task.expect_rows
        if task.inputs is not None:
            self._running_in_bytes -= task.inputs.nbytes
            if task.inputs.owns_blocks and task.inputs.refs:
                self._backend.free(task.inputs.refs)
        nbytes = sum(b.nbytes for b in outputs)
        self._out_bytes += nbytes
        if not self._preserve_order:
            self._out.extend(outputs)
            return
        task.outputs, task.done = outputs, True
        self._held_bytes += nbytes
        while self._ordered and self._ordered[0].done:
            released = self._ordered.popleft().outputs
            self._held_bytes -= sum(b.nbytes for b in released)
            self._out.extend(released)

    # -- data out --------------------------------------------------------------
    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        bundle = self._out.popleft()
        self._out_bytes -= bundle.nbytes
        return bundle

    def output_bytes(self) -> int:
        return self._out_bytes

    def memory_usage(self) -> int:
        running = self._running_in_bytes + len(self._tasks) * self._estimate.value(0)
        return self.metrics.queued_bytes + self._out_bytes + running


def reorder_window_bytes(env: ExecEnv) -> int:
    """Bytes of finished outputs an operator may hold back to keep order:
    ``DataContext.reorder_window_bytes``, by default a quarter of the memory
    budget (at least one block), so ordering never takes the whole budget."""
    window = env.ctx.reorder_window_bytes
    if window is None:
        window = max(env.memory_budget // 4, env.ctx.target_max_block_size)
    return window


@functools.lru_cache(maxsize=256)
def scaled_resources(resources: Resources, n: int) -> Resources:
    """``resources`` times ``n``, memoized: asked once per dispatch per operator."""
    return resources.scale(n) if n else Resources()
