"""Physical-plan interfaces: ``RefBundle`` (what flows) and ``PhysicalOperator``.

A ``RefBundle`` is one or more blocks in the object store plus their metadata;
operators pass bundles downstream and the executor frees refs when their last
consumer is done (``owns_blocks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtime.refs import ObjectRef
from runtime.resources import Resources

if TYPE_CHECKING:
    import pyarrow as pa

    from dataflow.context import DataContext
    from dataflow.exec.metering import StepInfo
    from dataflow.exec.transforms import MapTaskFn
    from runtime.backends.base import Backend, TaskFuture, TaskResult


def cancel_or_collect(backend: Backend, fut: TaskFuture) -> list[ObjectRef]:
    """Cancel a running task; for one already done, return its output refs to free.

    A task may finish between the check and the cancel (the backend then keeps
    its result): its outputs are collected like those of one done before."""
    if not fut.done():
        backend.cancel(fut)
        if not fut.done():
            return []
    try:
        return list(fut.result().refs)
    except Exception:
        return []  # a failed or cancelled task holds no outputs


@dataclass(frozen=True)
class BlockOrigin:
    """Where a block was made, in the words an error message uses: its position
    among the outputs of one task, that task, and the files it was read from.

    >>> BlockOrigin("read task 3", 1, ("/data/x.parquet",)).describe()
    'block 1 of read task 3 (file /data/x.parquet)'
    """

    task: str
    """The producing task in words: "read task 3", "map_batches(f) task 5"."""
    index: int
    files: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"block {self.index} of {self.task}{files_phrase(self.files)}"


def files_phrase(files: tuple[str, ...], shown: int = 3) -> str:
    """`` (file a)``, `` (files a, b)``, `` (files a, b, c and 4 more)`` or ``""``."""
    if not files:
        return ""
    if len(files) == 1:
        return f" (file {files[0]})"
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return f" (files {', '.join(files[:shown])}{more})"


@dataclass(frozen=True)
class RefBundle:
    """Blocks in the store, with what is known of them.

    ``seq`` orders bundles for ``preserve_order`` (a tuple so that a task's k-th
    output of input s sorts as ``(s, k)``); ``owns_blocks`` says whether the
    consumer may free the refs once done with them; ``origins`` says where each
    block was made (one per ref, empty when unknown), for error messages.
    """

    refs: tuple[ObjectRef, ...]
    schema: pa.Schema | None = None
    seq: tuple[int, ...] = (0,)
    owns_blocks: bool = True
    origins: tuple[BlockOrigin, ...] = ()

    def block_origins(self) -> tuple[BlockOrigin, ...]:
        """``origins`` when they match ``refs`` one to one, else ()."""
        return self.origins if len(self.origins) == len(self.refs) else ()

    def describe(self) -> str:
        """The bundle's blocks in words, e.g. "block 1 of read task 3 (file
        /data/x.parquet)"; "" when their origin is unknown."""
        origins = self.block_origins()
        if len(origins) <= 2:
            return " and ".join(o.describe() for o in origins)
        return f"{len(origins)} blocks, from {origins[0].describe()} to {origins[-1].describe()}"

    def files(self) -> tuple[str, ...]:
        """The files the blocks were read from, when known, without repeats."""
        return tuple(dict.fromkeys(f for o in self.block_origins() for f in o.files))

    @property
    def num_rows(self) -> int:
        return sum(r.num_rows for r in self.refs)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.refs)


@dataclass
class OpMetrics:
    """Counters an operator keeps about itself; its public methods update them
    around the protected ones, so every operator counts the same way."""

    rows_in: int = 0
    bytes_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    bundles_out: int = 0
    tasks_launched: int = 0
    queued_bytes: int = 0
    """Bytes of bundles waiting in this operator (input queue and output buffer)."""
    actor_spans: list[tuple[float, float]] = field(default_factory=list)
    """(start_ts, stop_ts) wall-clock seconds of each stopped actor (actor pools)."""
    placement: str = ""
    """Where the tasks ran, in words (map operators: ``exec/placement.py``)."""


class PhysicalOperator:
    """A node of the physical DAG, driven by the streaming executor.

    Data in: ``add_input(bundle, i)`` and ``inputs_done(i)`` for input ``i``.
    Data out: ``has_next()`` / ``get_next()``. Work: ``dispatch_cost()`` says what
    the next ``dispatch()`` needs (None = nothing to launch now); the executor
    waits on ``active_tasks()`` and hands each finished one to ``on_task_done``.
    Operators that do no remote work (limit, union) never have a cost.
    Public methods keep ``metrics`` and delegate to the protected ``_`` ones.
    """

    def __init__(self, name: str, inputs: list[PhysicalOperator]) -> None:
        self.name = name
        self.input_dependencies = inputs
        self.metrics = OpMetrics()
        self._inputs_complete = [False] * len(inputs)
        self._finished_early = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    def steps(self) -> tuple[StepInfo, ...]:
        """The logical steps this operator runs in each task (a fused map: read,
        UDFs, filters, write), each with its own stats row; () for operators
        whose tasks are one step of their own."""
        return ()

    # -- lifecycle -------------------------------------------------------------
    def start(self, env: ExecEnv) -> None:
        """Called once before any input: register functions, put input blocks."""

    def shutdown(self) -> None:
        """Cancel running tasks, free held bundles, stop actors (idempotent)."""

    # -- data in ---------------------------------------------------------------
    def add_input(self, bundle: RefBundle, input_index: int = 0) -> None:
        self.metrics.rows_in += bundle.num_rows
        self.metrics.bytes_in += bundle.nbytes
        self._add_input(bundle, input_index)

    def inputs_done(self, input_index: int = 0) -> None:
        self._inputs_complete[input_index] = True
        self._inputs_done(input_index)

    @property
    def all_inputs_done(self) -> bool:
        return all(self._inputs_complete)

    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        raise NotImplementedError

    def _inputs_done(self, input_index: int) -> None:
        """Hook for operators that act when an input ends (zip, ordered union)."""

    # -- data out --------------------------------------------------------------
    def has_next(self) -> bool:
        raise NotImplementedError

    def get_next(self) -> RefBundle:
        bundle = self._get_next()
        self.metrics.rows_out += bundle.num_rows
        self.metrics.bytes_out += bundle.nbytes
        self.metrics.bundles_out += 1
        return bundle

    def _get_next(self) -> RefBundle:
        raise NotImplementedError

    # -- work ------------------------------------------------------------------
    def dispatch_cost(self) -> Resources | None:
        """Resources the next ``dispatch()`` takes, or None when it cannot run now."""
        return None

    def dispatch(self) -> TaskFuture | None:
        """Launch one task (or start one actor); return the task's future if any."""
        raise NotImplementedError

    def next_task_bytes(self) -> tuple[int, int]:
        """(bytes of the input the next task consumes, estimated bytes it outputs)."""
        return 0, 0

    def output_bytes(self) -> int:
        """Bytes of finished output not yet taken downstream."""
        return 0

    def memory_usage(self) -> int:
        """Store bytes this operator is responsible for: queued input, finished
        output, and the inputs plus estimated outputs of its running tasks."""
        return self.metrics.queued_bytes + self.output_bytes()

    def active_tasks(self) -> list[TaskFuture]:
        return []

    def num_active_tasks(self) -> int:
        return len(self.active_tasks())

    def resources_in_use(self) -> Resources:
        """Resources held now by this operator's running tasks and actors."""
        return Resources()

    def on_tick(self, now: float) -> None:
        """Called once per executor loop turn (actor pools scale down here)."""

    def on_task_done(self, future: TaskFuture) -> TaskResult | None:
        """Collect a finished future; raises a ``dataflow.errors`` exception naming
        this operator and the block when the task failed."""
        raise NotImplementedError

    def input_exhausted(self) -> bool:
        """True once no more input will come and nothing is queued or running."""
        return self.all_inputs_done and self.num_active_tasks() == 0 and not self._has_queued()

    def _has_queued(self) -> bool:
        return False

    def completed(self) -> bool:
        """Nothing more will ever come out of this operator."""
        return (self._finished_early or self.input_exhausted()) and not self.has_next()

    # -- early finish (limit) --------------------------------------------------
    def wants_no_more_input(self) -> bool:
        """True when upstream operators may stop (a satisfied limit)."""
        return False

    def finish_early(self) -> None:
        """Downstream needs nothing more: cancel tasks, drop queued input."""
        self._finished_early = True
        self.shutdown()


class JoinsWrite:
    """Mixed into operators whose tasks can also run the write after them
    (``join_write``: the exchange, the broadcast join): each task hands its
    output tables to ``post`` (a ``MapTaskFn`` of one write stage) as task
    ``task_index`` and outputs its write results, so the rows go to the files
    without a trip through the object store and without a write task per block.
    The operator passes ``post`` to its task function when it starts."""

    name: str
    post: MapTaskFn | None = None

    def join_write(self, name: str, post: MapTaskFn) -> None:
        self.post = post
        self.name = f"{self.name}->{name}"

    def steps(self) -> tuple[StepInfo, ...]:
        return self.post.steps() if self.post is not None else ()


@dataclass
class ExecEnv:
    """What operators get at start: the backend, the context snapshot, whether
    tasks run in the driver (small plans with no Python UDF) and the memory
    budget (bytes) the executor keeps the pipeline under."""

    backend: Backend
    ctx: DataContext
    in_driver: bool = False
    memory_budget: int = 0
