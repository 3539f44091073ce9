"""Public protocols for reading and writing: ``Datasource``/``ReadTask`` and ``Datasink``.

Users implement them to plug their own formats into ``read_datasource`` and
``write_datasink``, exactly as the built-in formats do.

>>> class Squares(Datasource):
...     def get_name(self): return "squares"
...     def get_read_tasks(self, parallelism, **pushdown):
...         return [ReadTask(lambda: [pa.table({"x": [i * i]})],
...                          BlockMetadata(num_rows=1, size_bytes=8)) for i in range(4)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cloudpickle
import pyarrow as pa

if TYPE_CHECKING:
    import pyarrow.compute as pc


@dataclass(frozen=True)
class BlockMetadata:
    """What is known about a read task's output before it runs (None = unknown)."""

    num_rows: int | None = None
    size_bytes: int | None = None
    input_files: tuple[str, ...] = ()
    schema: pa.Schema | None = None


@dataclass
class ReadTask:
    """A picklable unit of reading: ``read_fn()`` yields the blocks of one task.

    ``metadata`` sizes the task for planning and answers ``count()``.
    """

    read_fn: Callable[[], Iterable[pa.Table]]
    metadata: BlockMetadata = field(default_factory=BlockMetadata)

    def __call__(self) -> Iterable[pa.Table]:
        return self.read_fn()


class TaskSizer:
    """How big a read task should be, learned from the tasks that finished.

    The planner makes one per read (DESIGN.md "How a pipeline runs", point 3):
    tasks are first sized from metadata; as they finish, the operator running
    them reports ``observe(seconds, planned_bytes)``, and a source that plans
    lazily asks ``cap(planned)`` at each cut, so that later tasks take about
    ``target_s`` each when the work per byte is high (a slow UDF: finer tasks,
    early first output, no worker idle at the end). A task never gets more
    bytes than planned.

    >>> sizer = TaskSizer(target_s=1.0)
    >>> sizer.observe(4.0, 8 << 20)   # 4 s for 8 MiB: 2 MiB a second
    >>> sizer.cap(32 << 20) == 2 << 20
    True
    """

    def __init__(self, target_s: float = 1.0) -> None:
        self.target_s = target_s
        self._seconds = 0.0
        self._bytes = 0

    def observe(self, seconds: float, nbytes: int) -> None:
        if nbytes > 0 and seconds > 0:
            self._seconds += seconds
            self._bytes += nbytes

    def cap(self, planned: int) -> int:
        """Bytes for the next task: ``planned``, or fewer once measured."""
        if not self._bytes:
            return planned
        per_second = self._bytes / self._seconds
        return max(1, min(planned, int(per_second * self.target_s)))


class Datasource:
    """Base class of sources. Subclasses implement ``get_read_tasks``; the
    ``supports_*`` flags say which pushdowns ``get_read_tasks`` honours, and
    ``supports_task_sizing`` that ``iter_read_tasks`` takes a ``sizer``
    (``TaskSizer``) and asks it before cutting each task."""

    supports_projection_pushdown: bool = False
    supports_predicate_pushdown: bool = False
    supports_limit_pushdown: bool = False
    supports_task_sizing: bool = False
    supports_dictionary_read: bool = False
    """``get_read_tasks`` takes ``dictionary_columns``: string columns it reads
    dictionary-encoded (cheaper to decode and to group by)."""
    reads_without_gil: bool = False
    """True when reading is Arrow's C++ readers (Parquet, CSV, JSON) that release
    the GIL: a plan of such reads and no Python UDF runs on driver threads."""
    filter_as_expr: bool = False
    """True when ``get_read_tasks`` takes ``filter`` as the dataflow ``Expr``
    (to translate into the source's own language, e.g. Iceberg's expressions)
    instead of a ``pyarrow.compute.Expression``."""

    def get_name(self) -> str:
        """Short name shown in plans, e.g. ``parquet`` -> ``read_parquet``."""
        name = type(self).__name__
        return name.removesuffix("Datasource").lower() or name

    def get_read_tasks(
        self,
        parallelism: int,
        *,
        columns: list[str] | None = None,
        filter: pc.Expression | None = None,
        limit: int | None = None,
    ) -> list[ReadTask]:
        """Split the source into about ``parallelism`` read tasks.

        ``columns``, ``filter`` and ``limit`` are passed only when the matching
        ``supports_*`` flag is set; the tasks must then apply them.
        """
        raise NotImplementedError

    def iter_read_tasks(self, parallelism: int, **pushdown: Any) -> Iterator[ReadTask]:
        """Read tasks as they are planned; sources whose listing or footer reads
        are slow override this so that reading starts before planning ends."""
        yield from self.get_read_tasks(parallelism, **pushdown)

    def explain_read(self, **pushdown: Any) -> str:
        """One line for ``explain()`` on what ``pushdown`` (the keyword arguments
        of ``get_read_tasks``) prunes, e.g. "files: 2 of 40 (38 pruned by
        statistics)". May read metadata (a table's log), never data; empty when
        there is nothing to add."""
        return ""

    def estimate_inmemory_data_size(self) -> int | None:
        """Bytes the data takes in memory, if cheaply known."""
        return None

    def schema(self) -> pa.Schema | None:
        """The output schema, if known without reading data."""
        return None

    def num_rows(self) -> int | None:
        """Row count, if known from metadata without reading data."""
        return None


@dataclass(frozen=True)
class WriteResult:
    """What one write task wrote (a block of its files lands in the manifest)."""

    files: tuple[str, ...] = ()
    num_rows: int = 0
    num_bytes: int = 0
    extra: dict = field(default_factory=dict)

    def to_table(self) -> pa.Table:
        """Encode as a one-row block, the output of a write task."""
        from dataflow.block import binary_array

        column = binary_array([cloudpickle.dumps(self)])
        return pa.Table.from_arrays([column], [WRITE_RESULT_COLUMN])

    @staticmethod
    def from_tables(tables: Iterable[pa.Table]) -> list[WriteResult]:
        """Decode the outputs of write tasks."""
        return [
            cloudpickle.loads(v) for t in tables for v in t.column(WRITE_RESULT_COLUMN).to_pylist()
        ]


WRITE_RESULT_COLUMN = "write_result"


class Datasink:
    """Base class of sinks. ``write`` runs in a worker per task; the ``on_*``
    hooks run in the driver around the whole write (atomic commit lives there)."""

    writes_without_gil: bool = False
    """True when ``write`` is Arrow's (or another library's) C code that releases
    the GIL: its tasks may run on driver threads without measuring."""

    def get_name(self) -> str:
        name = type(self).__name__
        return name.removesuffix("Datasink").lower() or name

    def on_write_start(self) -> None:
        """Called once in the driver before any task writes."""

    def write(self, blocks: Iterable[pa.Table], task_index: int) -> WriteResult:
        """Write the blocks of one task; runs in a worker."""
        raise NotImplementedError

    def on_write_complete(self, results: list[WriteResult]) -> Any:
        """Called once in the driver after every task succeeded: commit here."""

    def on_write_failed(self, error: BaseException) -> None:
        """Called once in the driver when the write failed: roll back here."""
