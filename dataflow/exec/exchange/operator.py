"""The exchange operator: map -> exchange -> reduce, run by the streaming executor.

Phases, each a pool of tasks of the registered ``ExchangeTaskFn``:

* **sample** (a sort without a limit): one task per input block as it arrives; when every
  input is in, the driver sorts the samples and picks the range boundaries.
* **map**: one task per input block, cutting it into ``m`` partition pieces
  (one object each). Hash and random partitioning start as soon as a block
  arrives (the map side streams); a sort's map waits for its boundaries.
* **reduce**: once every map task is done, the partitions are grouped into
  reduce tasks of about ``target_max_block_size`` bytes (at least two per
  worker slot when there are enough partitions; an aggregation's by bytes,
  so a small result is one key-sorted task), in partition order; each
  task reads the pieces of its partitions, in input order, and yields output
  blocks. Output bundles leave in partition order, so a sort's output is
  globally sorted and a seeded shuffle is the same on every run.

Map outputs wait in the object store, which spills them to disk when they do
not fit; they are not counted as this operator's queue (they must all exist
before any reduce can run), so upstream keeps flowing into the map side.
Every piece is freed once its reduce task is done; ``shutdown`` frees all.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from dataflow.errors import WorkerCrashedError
from dataflow.exec.exchange.partition import boundaries_from_samples
from dataflow.exec.exchange.tasks import ExchangeSpec, ExchangeTaskFn
from dataflow.exec.interfaces import (
    BlockOrigin,
    ExecEnv,
    JoinsWrite,
    PhysicalOperator,
    RefBundle,
    cancel_or_collect,
)
from dataflow.exec.transforms import remote_to_user_error
from runtime.errors import RemoteTaskError, TaskCancelledError
from runtime.errors import WorkerCrashedError as RuntimeWorkerCrashed
from runtime.resources import Resources

if TYPE_CHECKING:
    from runtime.backends.base import Backend, FunctionHandle, TaskFuture, TaskResult
    from runtime.refs import ObjectRef

DEFAULT_PARTITIONS = 32
"""Map-side partitions when the operation does not fix them; reduce tasks
take contiguous runs of them, so this only bounds how finely work can split."""
_SPLIT_BYTES = 8 << 20
"""An aggregation's partial states are merged by one reduce below this many
bytes, by up to two per worker slot above (each at least this big)."""


@dataclass(frozen=True)
class _Block:
    """One input block waiting for (or being processed by) the map side."""

    side: int
    block_id: tuple[int, ...]
    ref: ObjectRef
    owned: bool
    origin: str = ""
    """Where the block was made, in words (error messages)."""


@dataclass
class _SliceReaders:
    """An owned input block of a streaming repartition and the reduces reading it."""

    ref: ObjectRef
    running: int = 0
    """Reduces planned to read it and not done yet."""
    last_planned: bool = False
    """The output holding its last row is planned: no later reduce will read it."""


@dataclass
class _Task:
    kind: str  # "sample" | "map" | "reduce"
    label: str
    block: _Block | None = None
    index: int = 0
    inputs: list = field(default_factory=list)
    """Refs the task reads."""
    args: tuple = ()
    frees: list = field(default_factory=list)
    """Refs this operator frees once the task is done (the map pieces it merged)."""


class ExchangeOperator(JoinsWrite, PhysicalOperator):
    """Runs an ``ExchangeSpec`` over one input (or two: join).

    ``num_partitions`` fixes the number of map partitions and of output blocks
    (``repartition(n)``); None chooses from the data. A write joined to it
    (``join_write``) runs in each reduce task, on that task's outputs.

    >>> op = ExchangeOperator("sort(a)", [upstream], SortSpec(key))  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        inputs: list[PhysicalOperator],
        spec: ExchangeSpec,
        *,
        num_partitions: int | None = None,
        resources: Resources = Resources(cpu=1),
        total_rows: int | None = None,
    ) -> None:
        super().__init__(name, inputs)
        self.spec = spec
        self.num_partitions = num_partitions
        self.total_rows = total_rows
        """repartition(n) of an input whose row count is known and whose blocks
        arrive in order: each output block is cut as soon as its rows are in,
        instead of after the whole input (``_plan_ready_slices``). Without it
        the count is taken once the whole input is in (``_plan_slices``)."""
        self.resources = resources
        self._backend: Backend | None = None
        self._handle: FunctionHandle | None = None
        self._max_retries = 3
        self._in_driver = False
        self._target_bytes = 128 << 20
        self._slots = 1
        self._m = 0  # map partitions; 0 until known (a sort knows after sampling)
        self._to_sample: deque[_Block] = deque()
        self._to_map: deque[_Block] = deque()
        self._held: list[_Block] = []  # sort: sampled, waiting for boundaries
        self._samples: list[ObjectRef] = []
        self._boundaries: pa.Table | None = None
        self._pieces: list[list[tuple[tuple, ObjectRef]]] = []
        self._schemas: list[pa.Schema | None] = [None] * max(1, len(inputs))
        self._inputs_seen: list[_Block] = []
        self._blocks_in = 0  # input blocks received (names those of unknown origin)
        self._reduces: deque[_Task] | None = None
        self._done_reduces: dict[int, list[RefBundle]] = {}
        self._next_out = 0
        # Streaming repartition: rows received, the row offset of _inputs_seen[0],
        # output blocks planned, and the owned input blocks being read.
        self._seen_rows = self._first_row = self._planned = 0
        self._last_block_id: tuple[int, ...] | None = None
        self._slice_readers: dict[str, _SliceReaders] = {}
        self._map_rows = [0, 0]  # rows into and out of the map tasks done so far
        self._out: deque[RefBundle] = deque()
        self._tasks: dict[TaskFuture, _Task] = {}
        self._closed = False

    # -- lifecycle -------------------------------------------------------------
    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend
        self._max_retries = env.ctx.max_task_retries
        # Arrow and numpy work (partitioning, sorting, vectorized aggregation)
        # releases the GIL: driver threads unless user code runs in the tasks.
        self._in_driver = not self.spec.runs_python and (
            env.in_driver or env.ctx.task_placement != "processes"
        )
        self._target_bytes = env.ctx.target_max_block_size
        self._slots = max(1, int(env.backend.total_resources().cpu // max(self.resources.cpu, 1)))
        if self._streams():
            self._reduces = deque()
        if self.spec.has_map and self.spec.fixed_partitions:
            m = self.num_partitions or self.spec.map_partitions or DEFAULT_PARTITIONS
            self._set_partitions(m)
        fn = ExchangeTaskFn(self.spec, self._target_bytes, self.post)
        self._handle = env.backend.register_function(fn, self.name)

    def _set_partitions(self, m: int) -> None:
        self._m = m
        self._pieces = [[] for _ in range(m)]

    def shutdown(self) -> None:
        if self._closed or self._backend is None:
            return
        self._closed = True
        to_free: list[ObjectRef] = []
        for fut, task in list(self._tasks.items()):
            to_free += cancel_or_collect(self._backend, fut)
            to_free += task.frees
            if task.block is not None and task.block.owned:  # a sample or map task's input
                to_free.append(task.block.ref)
        self._tasks.clear()
        blocks = list(self._to_sample) + list(self._to_map) + self._held + self._inputs_seen
        to_free += [b.ref for b in blocks if b.owned]
        to_free += [r.ref for r in self._slice_readers.values()]
        to_free += self._samples + [r for p in self._pieces for _, r in p]
        to_free += [r for t in self._reduces or () for r in t.frees]
        bundles = list(self._out) + [b for bs in self._done_reduces.values() for b in bs]
        to_free += [r for b in bundles for r in b.refs]
        for queue in (self._to_sample, self._to_map, self._out):
            queue.clear()
        self._held, self._samples, self._pieces, self._inputs_seen = [], [], [], []
        self._slice_readers = {}
        self._reduces, self._done_reduces = deque(), {}
        self.metrics.queued_bytes = 0  # what it held is freed: the budget's view says so
        if to_free:  # a repartition input may be both held and being read: free it once
            self._backend.free(list({ref.id: ref for ref in to_free}.values()))
        if self._handle is not None:
            self._backend.release_function(self._handle)
            self._handle = None

    # -- data in ---------------------------------------------------------------
    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        if self._schemas[input_index] is None and bundle.schema is not None:
            self._schemas[input_index] = bundle.schema
        origins = bundle.block_origins()
        for j, ref in enumerate(bundle.refs):
            self._blocks_in += 1
            origin = origins[j].describe() if origins else f"input block {self._blocks_in - 1}"
            block_id = (input_index, *bundle.seq, j)
            block = _Block(input_index, block_id, ref, bundle.owns_blocks, origin)
            self.metrics.queued_bytes += ref.nbytes
            if not self.spec.has_map:
                if self._streams():
                    self._check_in_order(block)
                    self._seen_rows += ref.num_rows
                self._inputs_seen.append(block)
            elif self.spec.needs_sample:
                self._to_sample.append(block)
            else:
                self._to_map.append(block)
        if self._streams():
            self._reduces.extend(self._plan_ready_slices())

    def _streams(self) -> bool:
        return not self.spec.has_map and self.total_rows is not None

    def _check_in_order(self, block: _Block) -> None:
        last = self._last_block_id
        if last is not None and block.block_id < last:
            raise RuntimeError(
                f"{self.name}: input block {block.block_id} arrived after {last}; a "
                "streaming repartition needs its input in order (preserve_order)"
            )
        self._last_block_id = block.block_id

    def _has_queued(self) -> bool:
        return bool(
            self._to_sample
            or self._to_map
            or self._held
            or self._inputs_seen
            or any(self._pieces)
            or self._reduces
            or self._done_reduces
        ) or (self._reduces is None and self.all_inputs_done)

    # -- planning ----------------------------------------------------------------
    def _advance(self) -> None:
        """Move between phases when the previous one is complete."""
        if self._reduces is not None or not self.all_inputs_done or self._closed:
            if self._streams() and self.all_inputs_done and self._seen_rows != self.total_rows:
                raise RuntimeError(
                    f"{self.name}: the input's metadata promised {self.total_rows} rows "
                    f"but {self._seen_rows} arrived"
                )
            return
        running = {t.kind for t in self._tasks.values()}
        if self.spec.needs_sample and self._boundaries is None:
            if self._to_sample or "sample" in running:
                return
            self._choose_boundaries()
        if self._to_map or "map" in running or "sample" in running:
            return
        self._reduces = deque(self._plan_reduces())

    def _choose_boundaries(self) -> None:
        total = sum(b.ref.nbytes for b in self._held)
        m = self.num_partitions or self._default_reduces(total, len(self._held))
        samples = [self._backend.get(r) for r in self._samples]
        self._backend.free(self._samples)
        self._samples = []
        non_empty = [s for s in samples if s.num_rows]
        merged = pa.concat_tables(non_empty) if non_empty else None
        if merged is None:
            m = 1
            self._boundaries = pa.table({})
        else:
            self._boundaries = boundaries_from_samples(merged, self.spec.key, m)
            m = self._boundaries.num_rows + 1
        self._set_partitions(m)
        self._to_map.extend(self._held)
        self._held = []

    def _default_reduces(self, total_bytes: int, num_blocks: int) -> int:
        by_size = math.ceil(total_bytes / self._target_bytes)
        return max(1, by_size, min(num_blocks, 2 * self._slots))

    def _plan_reduces(self) -> list[_Task]:
        if not self.spec.has_map:
            return self._plan_slices()
        sizes = [sum(r.nbytes for _, r in p) for p in self._pieces]
        if self.num_partitions:
            groups = [[p] for p in range(self._m)]
        elif self.spec.small_output:
            # One key-sorted block when the states are small; many groups (high
            # cardinality) still merge on every worker slot.
            total = sum(sizes)
            n = max(
                math.ceil(total / self._target_bytes), min(2 * self._slots, total // _SPLIT_BYTES)
            )
            groups = _contiguous_groups(sizes, min(n, self._m))
        else:
            n = self._default_reduces(sum(sizes), self._m)
            groups = _contiguous_groups(sizes, min(n, self._m))
        tasks = []
        for group in groups:
            pieces = sorted(
                ((key + (p,), r) for p in group for key, r in self._pieces[p]), key=lambda x: x[0]
            )
            refs = [r for _, r in pieces]
            if not (refs or self.num_partitions):
                continue
            num_left = sum(1 for key, _ in pieces if key[0] == 0)
            first, last = group[0], group[-1]
            label = f"partition {first}" if first == last else f"partitions {first}-{last}"
            args = ("reduce", num_left, tuple(self._schemas), len(tasks))
            tasks.append(
                _Task("reduce", label, index=len(tasks), inputs=refs, args=args, frees=refs)
            )
        if not tasks:  # no rows at all: one reduce still gives the output's schema
            args = ("reduce", 0, tuple(self._schemas), 0)
            tasks.append(_Task("reduce", "partition 0", index=0, inputs=[], args=args, frees=[]))
        self._pieces = [[] for _ in range(self._m)]
        return tasks

    def _plan_slices(self) -> list[_Task]:
        """repartition(n) without shuffle whose row count was not known: the
        whole input is in, so every range is ready (``_plan_ready_slices``)."""
        self._inputs_seen.sort(key=lambda b: b.block_id)
        self.total_rows = self._seen_rows = sum(b.ref.num_rows for b in self._inputs_seen)
        return self._plan_ready_slices()

    def _plan_ready_slices(self) -> list[_Task]:
        """Streaming repartition: a reduce for each output block whose row range
        has fully arrived. An owned input block is freed once no later output
        needs it and every reduce reading it is done (``_slice_readers``); its
        bytes count in ``queued_bytes`` (the memory budget's view) until then."""
        n, total = self.num_partitions or 1, self.total_rows or 0
        tasks = []
        while self._planned < n:
            i = self._planned
            lo, hi = (total * i) // n, (total * (i + 1)) // n
            if hi > self._seen_rows:
                break
            refs, slices, keep = [], [], []
            off = self._first_row
            for b in self._inputs_seen:
                rows = b.ref.num_rows
                start, end = max(lo, off), min(hi, off + rows)
                if start < end:
                    refs.append(b.ref)
                    slices.append((start - off, end - start))
                    if b.owned:
                        readers = self._slice_readers.setdefault(b.ref.id, _SliceReaders(b.ref))
                        readers.running += 1
                if off + rows > hi:
                    keep.append(b)  # a later output reads its rest
                elif b.owned and b.ref.id in self._slice_readers:
                    # Its bytes stay counted until its last reader is done.
                    self._slice_readers[b.ref.id].last_planned = True
                else:
                    self.metrics.queued_bytes -= b.ref.nbytes
                    if b.owned:
                        self._backend.free([b.ref])  # no rows: nothing reads it
                off += rows
            self._first_row += sum(b.ref.num_rows for b in self._inputs_seen) - sum(
                b.ref.num_rows for b in keep
            )
            self._inputs_seen = keep
            args = ("reduce", len(refs), tuple(slices), i)
            tasks.append(_Task("reduce", f"output block {i}", index=i, inputs=refs, args=args))
            self._planned += 1
        if self._planned == n:  # every row is placed: what still comes is empty
            self.metrics.queued_bytes -= sum(b.ref.nbytes for b in self._inputs_seen)
            self._backend.free([b.ref for b in self._inputs_seen if b.owned])
            self._inputs_seen = []
        return tasks

    def _release_slices(self, task: _Task) -> None:
        """A streaming repartition's reduce is done: free the inputs it was the
        last reader of."""
        done = []
        for ref in task.inputs:
            readers = self._slice_readers.get(ref.id)
            if readers is None:
                continue
            readers.running -= 1
            if readers.running == 0 and readers.last_planned:
                done.append(ref)
                del self._slice_readers[ref.id]
                self.metrics.queued_bytes -= ref.nbytes
        if done:
            self._backend.free(done)

    # -- work --------------------------------------------------------------------
    def dispatch_cost(self) -> Resources | None:
        if self._closed:
            return None
        self._advance()
        if self._to_sample or self._to_map or self._reduces:
            return self.resources
        return None

    def next_task_bytes(self) -> tuple[int, int]:
        if self._to_sample:
            return 0, 0
        if self._to_map:
            n = self._to_map[0].ref.nbytes
            return n, n
        if self._reduces:
            n = sum(r.nbytes for r in self._reduces[0].inputs)
            return n, n
        return 0, 0

    def dispatch(self) -> TaskFuture | None:
        if self._to_sample:
            block = self._to_sample.popleft()
            # Sampled blocks wait for the boundaries outside the queue count:
            # the whole input must be in before any of it can move on.
            self.metrics.queued_bytes -= block.ref.nbytes
            task = _Task("sample", _label(block), block=block)
            fut = self._submit([block.ref], ("sample", block.block_id))
        elif self._to_map:
            block = self._to_map.popleft()
            if not self.spec.needs_sample:
                self.metrics.queued_bytes -= block.ref.nbytes
            extra = self.spec.map_extra(self._boundaries, *self._map_rows)
            args = ("map", block.side, block.block_id, self._m, extra)
            task = _Task("map", _label(block), block=block, args=args)
            fut = self._submit([block.ref], args)
        else:
            task = self._reduces.popleft()
            fut = self._submit(task.inputs, task.args)
        self.metrics.tasks_launched += 1
        self._tasks[fut] = task
        return fut

    def _submit(self, refs: list, args: tuple) -> TaskFuture:
        return self._backend.submit(
            self._handle,
            refs,
            args,
            resources=self.resources,
            max_retries=self._max_retries,
            name=self.name,
            in_driver=self._in_driver,
        )

    def active_tasks(self) -> list[TaskFuture]:
        return list(self._tasks)

    def num_active_tasks(self) -> int:
        return len(self._tasks)

    def resources_in_use(self) -> Resources:
        return self.resources.scale(len(self._tasks)) if self._tasks else Resources()

    def on_task_done(self, future: TaskFuture) -> TaskResult | None:
        task = self._tasks.pop(future)
        try:
            result = future.result()
        except TaskCancelledError:
            return None
        except RemoteTaskError as e:
            failure: Exception = remote_to_user_error(self.name, task.label, e)
        except RuntimeWorkerCrashed as e:
            failure = WorkerCrashedError(
                f"{self.name}: the worker running the {task.kind} task of {task.label} died "
                f"({e}) and the task failed after {self._max_retries} retries; raise "
                "DataContext.max_task_retries or find what kills the worker (memory?)",
                e.exitcode,
            )
        else:
            getattr(self, f"_{task.kind}_done")(task, result)
            self._advance()
            return result
        raise failure

    def _sample_done(self, task: _Task, result: TaskResult) -> None:
        self._samples += result.refs
        self._held.append(task.block)

    def _map_done(self, task: _Task, result: TaskResult) -> None:
        block = task.block
        self._map_rows[0] += block.ref.num_rows
        self._map_rows[1] += sum(ref.num_rows for ref in result.refs)
        empty = []
        for p, (ref, schema) in enumerate(zip(result.refs, result.schemas)):
            if self._schemas[block.side] is None:
                self._schemas[block.side] = schema
            if ref.num_rows:
                self._pieces[p].append(((block.side, block.block_id), ref))
            else:
                empty.append(ref)
        if block.owned:
            empty.append(block.ref)
        self._backend.free(empty)

    def _reduce_done(self, task: _Task, result: TaskResult) -> None:
        self._backend.free(task.frees)
        if self._streams():
            self._release_slices(task)
        self._done_reduces[task.index] = [
            RefBundle(
                refs=(ref,),
                schema=schema,
                seq=(task.index, k),
                origins=(BlockOrigin(f"{self.name} task {task.index}", k),),
            )
            for k, (ref, schema) in enumerate(zip(result.refs, result.schemas))
        ]
        while self._next_out in self._done_reduces:
            self._out.extend(self._done_reduces.pop(self._next_out))
            self._next_out += 1

    # -- data out ----------------------------------------------------------------
    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        return self._out.popleft()

    def output_bytes(self) -> int:
        """Bytes produced and not yet taken downstream."""
        held = sum(b.nbytes for bs in self._done_reduces.values() for b in bs)
        return held + sum(b.nbytes for b in self._out)


def _label(block: _Block) -> str:
    return block.origin if block.side == 0 else f"{block.origin} (right input)"


def _contiguous_groups(sizes: list[int], n: int) -> list[list[int]]:
    """Cut partitions ``0..len(sizes)-1`` into ``n`` contiguous runs of similar bytes."""
    total = sum(sizes)
    if n <= 1 or total == 0:
        return [list(range(len(sizes)))]
    groups: list[list[int]] = [[]]
    acc = 0
    for p, size in enumerate(sizes):
        if groups[-1] and acc + size / 2 > total * len(groups) / n and len(groups) < n:
            groups.append([])
        groups[-1].append(p)
        acc += size
    return groups


__all__ = ["DEFAULT_PARTITIONS", "ExchangeOperator"]
