"""DataContext: every tunable of dataflow with its default, in one place.

The executor takes a snapshot (``copy()``) when a pipeline starts, so changing
the context mid-run affects only later runs.

>>> ctx = DataContext.get_current()
>>> ctx.target_max_block_size = 64 * 1024 * 1024
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

MiB = 1024 * 1024


@dataclass
class DataContext:
    """Tunables of dataset execution. Get the live one with ``get_current()``."""

    # -- blocks --------------------------------------------------------------
    target_max_block_size: int = 32 * MiB
    """Blocks are re-chunked inside tasks to stay under this many bytes (and
    read tasks sized to about it). 32 MiB rather than Ray Data's 128: per-block
    cost is small here, and smaller blocks halve peak memory (8M-row etl 790 ->
    443 MiB, sort 848 -> 473 MiB) at equal or better speed (measured)."""
    target_min_block_size: int = 1 * MiB
    """Read tasks smaller than this are grouped together (many small files)."""
    read_parallelism_factor: int = 2
    """Aim for at least this many read tasks per worker slot when the data allows."""

    # -- memory --------------------------------------------------------------
    object_store_memory: int | None = None
    """Bytes of shared memory for blocks; None = 30 % of RAM (backend decides)."""
    memory_limit: int | None = None
    """Cap on the resident memory of the whole process tree (driver and
    workers); None = no cap. Over it, nothing new starts; a run that stays over
    it while tasks run (a leaking UDF) stops with ``MemoryLimitError`` naming the
    operator, before the kernel's OOM killer would end a process
    (``dataflow/exec/memory_guard.py``)."""
    spill_path: str | None = None
    """Directory under which the local backend's object store spills the blocks
    that do not fit in ``object_store_memory`` (in a private per-session
    subdirectory, removed at shutdown); None = the temp directory ($TMPDIR).
    Read when the backend starts (``init`` or the first pipeline);
    ``init(spill_dir=...)`` overrides it. ``stats()`` reports bytes spilled and
    restored and the directory; a full disk raises ``SpillError`` naming it."""
    output_queue_max_blocks: int = 8
    """Blocks the executor buffers for a consumer before it stops dispatching."""

    # -- execution -----------------------------------------------------------
    preserve_order: bool = True
    """Rows leave in dataset order (every pipeline without a shuffle; after a
    sort, in sorted order), on every backend, so splits, limits, ``take`` and
    resumable iterators are deterministic. Finished blocks that wait behind a
    slower earlier one are held in a bounded reorder window
    (``reorder_window_bytes``); False delivers blocks as tasks finish, for the
    last few percent of throughput."""
    reorder_window_bytes: int | None = None
    """Bytes an operator may hold back to keep order before it stops launching
    tasks (a straggler then backpressures); None = a quarter of the memory budget."""
    task_placement: str = "auto"
    """Where map tasks run: "auto" (per operator: driver threads for Arrow work,
    worker processes for per-row Python, batch UDFs measured on threads and
    moved to processes when they hold the GIL; see ``stats()``), "threads" or
    "processes" (every function UDF; actor pools always use processes)."""
    max_task_retries: int = 3
    """Retries of a task whose worker died (SIGKILL, segfault, OOM kill)."""
    max_errored_blocks: int = 0
    """Blocks whose user-code or source errors are skipped instead of raised
    (-1 = any number)."""
    dead_letter_path: str | None = None
    """Directory where ``on_error="dead_letter"`` writes failing rows (parquet)."""
    actor_max_tasks_in_flight: int = 2
    """Per-actor in-flight limit, so one slow actor does not hoard blocks."""
    driver_inline_max_rows: int = 100_000
    """Plans with no Python UDF run on driver threads without starting workers
    when they have at most this many input rows, or at any size when every read
    releases the GIL (Parquet, CSV, JSON, range: ``Datasource.reads_without_gil``)."""

    broadcast_join_max_bytes: int = 128 * MiB
    """An ``inner`` or ``left_outer`` join on one key whose right side is
    estimated (from metadata) at most this big, and at most a quarter of the
    object store, joins each left block with the whole right side instead of
    partitioning both: the left side streams, in order, with no exchange and no
    spill (``exec/operators/broadcast_join.py``). 0 = always the hash join."""

    optimizer_flags: Any = None
    """``dataflow.plan.optimizer.OptimizerFlags``; None = every rule on."""

    # -- observability -------------------------------------------------------
    enable_progress_bars: bool = True
    """Live progress bars when output is a terminal or a notebook."""
    stall_warning_s: float = 30.0
    """Warn (and record in stats) when no operator progressed for this long."""
    trace_path: str | None = None
    """Write a Chrome trace (Perfetto) of every task to this path."""
    metrics_port: int | None = None
    """Serve Prometheus metrics of running pipelines at ``http://metrics_host:
    metrics_port/metrics`` (the ``metrics`` extra; 0 = any free port; None = off;
    also ``DATAFLOW_METRICS_PORT``). ``dataflow top`` reads the same port."""
    metrics_host: str = "127.0.0.1"
    """Interface the metrics server binds; "0.0.0.0" exposes it to the network."""

    # -- consumers -----------------------------------------------------------
    split_start_timeout_s: float = 600.0
    """``streaming_split``: an epoch begins once every split has asked for data;
    the splits that did wait fail when one has not come after this many seconds."""

    # -- extension point -----------------------------------------------------
    extra: dict = field(default_factory=dict)

    _current: ClassVar[DataContext | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get_current(cls) -> DataContext:
        """The process-wide context, created on first use."""
        with cls._lock:
            if cls._current is None:
                cls._current = cls._from_env()
            return cls._current

    @classmethod
    def _set_current(cls, ctx: DataContext | None) -> None:
        with cls._lock:
            cls._current = ctx

    @classmethod
    def _from_env(cls) -> DataContext:
        ctx = cls()
        if os.environ.get("DATAFLOW_DISABLE_PROGRESS_BARS"):
            ctx.enable_progress_bars = False
        port = os.environ.get("DATAFLOW_METRICS_PORT", "")
        if port.isdigit():
            ctx.metrics_port = int(port)
        return ctx

    def copy(self) -> DataContext:
        """A snapshot, as the executor takes one when a pipeline starts."""
        return copy.deepcopy(self)

    def replace(self, **changes) -> DataContext:
        """A copy with some fields changed (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)
