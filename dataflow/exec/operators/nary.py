"""Operators with several inputs: union (concatenation of streams) and zip
(row-aligned column concatenation of two streams)."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa

from dataflow.errors import PlanError
from dataflow.exec.interfaces import (
    BlockOrigin,
    ExecEnv,
    PhysicalOperator,
    RefBundle,
    cancel_or_collect,
)
from dataflow.exec.transforms import remote_to_user_error
from runtime.errors import RemoteTaskError
from runtime.resources import Resources

if TYPE_CHECKING:
    from runtime.backends.base import Backend, FunctionHandle, TaskFuture, TaskResult
    from runtime.refs import ObjectRef


class UnionOperator(PhysicalOperator):
    """Passes every input bundle through. With ``preserve_order`` input ``i`` is
    held back until inputs ``0..i-1`` are done, so output = input 0, input 1, ..."""

    def __init__(self, name: str, inputs: list[PhysicalOperator]) -> None:
        super().__init__(name, inputs)
        self._buffers: list[list[RefBundle]] = [[] for _ in inputs]
        self._out: deque[RefBundle] = deque()
        self._current = 0
        self._preserve_order = False
        self._backend: Backend | None = None

    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend
        self._preserve_order = env.ctx.preserve_order

    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        bundle = dataclasses.replace(bundle, seq=(input_index, *bundle.seq))
        if not self._preserve_order or input_index == self._current:
            self._out.append(bundle)
        else:
            self._buffers[input_index].append(bundle)

    def _inputs_done(self, input_index: int) -> None:
        while self._current < len(self._buffers) and self._inputs_complete[self._current]:
            self._current += 1
            if self._current < len(self._buffers):
                self._out.extend(self._buffers[self._current])
                self._buffers[self._current] = []

    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        return self._out.popleft()

    def output_bytes(self) -> int:
        held = list(self._out) + [b for buf in self._buffers for b in buf]
        return sum(b.nbytes for b in held)

    def shutdown(self) -> None:
        held = list(self._out) + [b for buf in self._buffers for b in buf]
        self._out.clear()
        self._buffers = [[] for _ in self._buffers]
        owned = [r for b in held if b.owns_blocks for r in b.refs]
        if owned and self._backend is not None:
            self._backend.free(owned)


def zip_blocks(inputs: list[pa.Table], n_left: int, offset: int, num_rows: int) -> list[pa.Table]:
    """Task function: the left blocks side by side with ``num_rows`` rows of the
    right blocks starting at ``offset``; a right column whose name is taken gets
    a suffix ``_1`` (``_2``, ... if that is taken too), as in Ray Data."""
    left = pa.concat_tables(inputs[:n_left]) if n_left > 1 else inputs[0]
    right = pa.concat_tables(inputs[n_left:]).slice(offset, num_rows)
    names = list(left.column_names)
    columns = list(left.columns)
    for name, column in zip(right.column_names, right.columns):
        new, k = name, 0
        while new in names:
            k += 1
            new = f"{name}_{k}"
        names.append(new)
        columns.append(column)
    return [pa.Table.from_arrays(columns, names=names)]


class OrderedDriverTasks(PhysicalOperator):
    """The task bookkeeping of operators that run one driver task per bundle of
    their first input and pass the outputs on in launch order, whichever task
    finishes first (zip, broadcast join): ``_launch`` in ``dispatch``,
    ``_collect`` in ``on_task_done``, ``_drop_tasks`` in ``shutdown``."""

    def __init__(self, name: str, inputs: list[PhysicalOperator]) -> None:
        super().__init__(name, inputs)
        self._tasks: dict[TaskFuture, RefBundle] = {}
        self._launched: deque[TaskFuture] = deque()  # in dispatch order
        self._finished: dict[TaskFuture, list[RefBundle]] = {}
        self._out: deque[RefBundle] = deque()
        self._task_index: dict[TaskFuture, int] = {}  # names the blocks a task makes
        self._backend: Backend | None = None
        self._handle: FunctionHandle | None = None
        self._max_retries = 0

    def _launch(self, bundle: RefBundle, refs: tuple, args: tuple) -> TaskFuture:
        """Submit the task for ``bundle`` (reading ``refs``) on a driver thread."""
        fut = self._backend.submit(
            self._handle,
            refs,
            args,
            resources=Resources(),
            max_retries=self._max_retries,
            name=self.name,
            in_driver=True,
        )
        self._task_index[fut] = self.metrics.tasks_launched
        self.metrics.tasks_launched += 1
        self._tasks[fut] = bundle
        self._launched.append(fut)
        return fut

    def active_tasks(self) -> list[TaskFuture]:
        return list(self._tasks)

    def _collect(self, future: TaskFuture, label: Callable[[RefBundle], str]) -> TaskResult:
        """Free the task's input bundle and queue its outputs in launch order;
        a failed task raises the user error naming this operator and
        ``label(bundle)``."""
        bundle = self._tasks.pop(future)
        if bundle.owns_blocks:
            self._backend.free(bundle.refs)
        try:
            result = future.result()
        except RemoteTaskError as e:
            raise remote_to_user_error(self.name, label(bundle), e) from None
        task = f"{self.name} task {self._task_index.pop(future)}"
        self._finished[future] = [
            RefBundle((ref,), schema, bundle.seq + (k,), origins=(BlockOrigin(task, k),))
            for k, (ref, schema) in enumerate(zip(result.refs, result.schemas))
        ]
        while self._launched and self._launched[0] in self._finished:
            self._out.extend(self._finished.pop(self._launched.popleft()))
        return result

    def has_next(self) -> bool:
        return bool(self._out)

    def _get_next(self) -> RefBundle:
        return self._out.popleft()

    def _held(self) -> list[RefBundle]:
        """Finished output not yet taken downstream."""
        return list(self._out) + [b for done in self._finished.values() for b in done]

    def output_bytes(self) -> int:
        return sum(b.nbytes for b in self._held())

    def _drop_tasks(self) -> list[ObjectRef]:
        """Cancel the running tasks and forget every output: the refs to free
        (outputs, inputs of the tasks, what finished meanwhile)."""
        backend = self._backend
        done = [r for fut in self._tasks for r in cancel_or_collect(backend, fut)]
        held = self._held() + list(self._tasks.values())
        owned = [r for b in held if b.owns_blocks for r in b.refs] + done
        self._tasks.clear()
        self._task_index.clear()
        self._launched.clear()
        self._finished.clear()
        self._out.clear()
        return owned

    def _release_function(self) -> None:
        if self._handle is not None:
            self._backend.release_function(self._handle)
            self._handle = None


class ZipOperator(OrderedDriverTasks):
    """Row-aligned zip of two inputs. Rows align by input order, so it waits for
    both inputs to finish, sorts each by ``seq`` and then launches one driver
    task per left bundle with the slice of right blocks that covers its rows.
    Outputs leave in that order whichever task finishes first."""

    MAX_IN_FLIGHT = 2

    def __init__(self, name: str, inputs: list[PhysicalOperator]) -> None:
        super().__init__(name, inputs)
        self._buffers: list[list[RefBundle]] = [[], []]
        self._plan: deque[tuple[RefBundle, list, int, int]] = deque()
        self._right_used: list = []

    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend
        self._handle = env.backend.register_function(zip_blocks, self.name)
        self._max_retries = env.ctx.max_task_retries

    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        self._buffers[input_index].append(bundle)

    def _inputs_done(self, input_index: int) -> None:
        if not self.all_inputs_done:
            return
        left, right = (sorted(b, key=lambda x: x.seq) for b in self._buffers)
        n_left = sum(b.num_rows for b in left)
        n_right = sum(b.num_rows for b in right)
        if n_left != n_right:
            raise PlanError(
                f"zip: the datasets have different numbers of rows ({n_left} and {n_right}); "
                "zip needs equal row counts: limit() the longer one"
            )
        right_refs = [r for b in right for r in b.refs if r.num_rows]
        start = 0  # first right ref not fully used
        start_row = 0  # global row index where right_refs[start] begins
        row = 0
        for bundle in left:
            rows = bundle.num_rows
            if not rows:
                continue
            end = start
            covered = start_row
            while covered < row + rows:
                covered += right_refs[end].num_rows
                end += 1
            self._plan.append((bundle, right_refs[start:end], row - start_row, rows))
            row += rows
            while start < len(right_refs) and start_row + right_refs[start].num_rows <= row:
                start_row += right_refs[start].num_rows
                start += 1
        self._right_used = [r for b in right if b.owns_blocks for r in b.refs]
        left_unused = [r for b in left if not b.num_rows and b.owns_blocks for r in b.refs]
        self._buffers = [[], []]
        if left_unused:
            self._backend.free(left_unused)

    def _has_queued(self) -> bool:
        return bool(self._plan) or any(self._buffers)

    def dispatch_cost(self) -> Resources | None:
        if self._plan and len(self._tasks) < self.MAX_IN_FLIGHT:
            return Resources()
        return None

    def next_task_bytes(self) -> tuple[int, int]:
        bundle, right, _, _ = self._plan[0]
        return 0, bundle.nbytes + sum(r.nbytes for r in right)

    def dispatch(self) -> TaskFuture | None:
        bundle, right, offset, rows = self._plan.popleft()
        return self._launch(bundle, bundle.refs + tuple(right), (len(bundle.refs), offset, rows))

    def on_task_done(self, future: TaskFuture) -> TaskResult | None:
        result = self._collect(future, _zip_label)
        self._maybe_free_right()
        return result

    def _maybe_free_right(self) -> None:
        if not self._plan and not self._tasks and self._right_used:
            self._backend.free(self._right_used)
            self._right_used = []

    def output_bytes(self) -> int:
        return super().output_bytes() + sum(b.nbytes for buf in self._buffers for b in buf)

    def shutdown(self) -> None:
        backend = self._backend
        if backend is None:
            return
        owned = self._drop_tasks()
        held = [b for buf in self._buffers for b in buf] + [p[0] for p in self._plan]
        owned += [r for b in held if b.owns_blocks for r in b.refs] + self._right_used
        self._plan.clear()
        self._buffers = [[], []]
        self._right_used = []
        if owned:
            backend.free(owned)
        self._release_function()


def _zip_label(left: RefBundle) -> str:
    """A zip task in words: the left blocks it pairs with rows of the right input."""
    left_blocks = left.describe() or "a block"
    return f"{left_blocks} of the left input and the matching rows of the right input"
