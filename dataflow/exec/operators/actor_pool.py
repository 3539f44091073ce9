"""A map operator on an actor pool: long-lived workers that build the stage's
callable classes once (``ActorFactory``) and then serve one task per bundle.

Sizing, all decided by the operator from its own queue:

* start: ``initial_size`` actors (the planner picks ``min_size``, or for a GPU
  pool the largest size the free devices allow at once);
* up: one more actor when every ready actor has ``actor_max_tasks_in_flight``
  tasks, input is waiting, no actor is still starting and the pool is under
  ``max_size`` (the executor only dispatches it when the resources are free);
* down: an actor idle for ``IDLE_ACTOR_S`` above ``min_size`` is stopped, and
  every actor is stopped as soon as upstream is exhausted and the queue is
  drained, whatever ``min_size`` says.

A worker that dies under an actor loses the actor: its task's input goes back
to the front of the queue (up to ``max_task_retries`` times) and a fresh actor
is started through the usual scale-up.

Each stopped actor's (start, stop) wall-clock span goes to ``metrics.actor_spans``
(``OperatorStats.actor_utilisation`` = busy time / lifetime), and a task's
per-batch outputs leave in bundles of at least ``target_min_block_size``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dataflow.errors import ResourceError, WorkerCrashedError
from dataflow.exec.interfaces import ExecEnv, PhysicalOperator, RefBundle
from dataflow.exec.operators.map import (
    MapOperator,
    MapOptions,
    MapTask,
    scaled_resources,
)
from dataflow.exec.transforms import ActorFactory, MapTaskFn, remote_to_user_error
from runtime.errors import RemoteTaskError
from runtime.errors import ResourceError as RuntimeResourceError
from runtime.errors import WorkerCrashedError as RuntimeWorkerCrashed
from runtime.resources import Resources

if TYPE_CHECKING:
    from runtime.backends.base import ActorHandle, FunctionHandle, TaskFuture, TaskResult

IDLE_ACTOR_S = 2.0
"""Seconds an actor above ``min_size`` may sit idle before it is stopped."""


@dataclass(eq=False)
class _Actor:
    handle: ActorHandle
    ready: bool = False
    in_flight: int = 0
    idle_since: float = 0.0
    started_ts: float = 0.0
    """Wall clock at the start request, for ``OpMetrics.actor_spans``."""


class ActorPoolMapOperator(MapOperator):
    """``MapOperator`` whose tasks run on an autoscaling pool of actors."""

    groups_reads = False

    def __init__(
        self,
        name: str,
        inputs: list[PhysicalOperator],
        task_fn: MapTaskFn,
        options: MapOptions,
        *,
        min_size: int,
        max_size: int,
        initial_size: int,
        max_tasks_in_flight: int | None = None,
    ) -> None:
        super().__init__(name, inputs, task_fn, options)
        self.min_size = min_size
        self.max_size = max_size
        self.initial_size = initial_size
        # Per-pool override of DataContext.actor_max_tasks_in_flight (Ray's
        # ActorPoolStrategy(max_tasks_in_flight_per_actor=n)).
        self.max_tasks_in_flight = max_tasks_in_flight
        self._actors: list[_Actor] = []
        self._starting: dict[TaskFuture, _Actor] = {}
        self._task_actor: dict[TaskFuture, _Actor] = {}
        self._retry: deque[MapTask] = deque()
        self._done_on: _Actor | None = None
        self._max_in_flight = 2
        self._min_bundle_bytes = 0
        self.peak_actors = 0

    def start(self, env: ExecEnv) -> None:
        super().start(env)
        self.metrics.placement = "actors (worker processes)"
        self._max_in_flight = max(1, self.max_tasks_in_flight or env.ctx.actor_max_tasks_in_flight)
        self._min_bundle_bytes = env.ctx.target_min_block_size
        for _ in range(self.initial_size):
            self._start_actor()

    def _register(self, env: ExecEnv) -> FunctionHandle:
        return env.backend.register_function(ActorFactory(self.task_fn), self.name)

    def _start_actor(self) -> None:
        try:
            handle = self._backend.start_actor(
                self._handle, resources=self.options.resources, name=self.name
            )
        except RuntimeResourceError as e:  # e.g. 1.5 GPUs: the user's error, not the runtime's
            raise ResourceError(str(e)) from None
        actor = _Actor(handle, idle_since=time.monotonic(), started_ts=time.time())
        self._actors.append(actor)
        self._starting[handle.ready] = actor
        self.peak_actors = max(self.peak_actors, len(self._actors))

    def _stop_actor(self, actor: _Actor) -> None:
        self._actors.remove(actor)
        self._backend.stop_actor(actor.handle)
        self.metrics.actor_spans.append((actor.started_ts, time.time()))

    def shutdown(self) -> None:
        if self._closed or self._backend is None:
            return
        super().shutdown()
        for fut in self._starting:
            self._backend.cancel(fut)
        self._starting.clear()
        self._task_actor.clear()
        self._backend.free([r for t in self._retry if t.inputs.owns_blocks for r in t.inputs.refs])
        self._retry.clear()
        for actor in list(self._actors):
            self._stop_actor(actor)

    # -- dispatch --------------------------------------------------------------
    def _free_actor(self) -> _Actor | None:
        best = None
        for a in self._actors:
            if a.ready and a.in_flight < self._max_in_flight:
                if best is None or a.in_flight < best.in_flight:
                    best = a
        return best

    def dispatch_cost(self) -> Resources | None:
        # A retry is the oldest unfinished task: it must run even when the window is full.
        if self._closed or not (self._retry or (self._queue and not self._window_full())):
            return None
        if self._free_actor() is not None:
            return Resources()  # the actor already holds its resources
        if self._starting or len(self._actors) >= self.max_size:
            return None
        return self.options.resources

    def dispatch(self) -> TaskFuture | None:
        actor = self._free_actor()
        if actor is None:
            self._start_actor()
            return None
        retry = self._retry.popleft() if self._retry else None
        task, args = (retry, (retry.index, None)) if retry else self._next_task()
        fut = self._backend.submit_actor(actor.handle, task.inputs.refs, args, name=self.name)
        actor.in_flight += 1
        self._task_actor[fut] = actor
        if retry is None:
            self._track(fut, task)
        else:
            self._tasks[fut] = task
        return fut

    def _has_queued(self) -> bool:
        return bool(self._retry) or super()._has_queued()

    def active_tasks(self) -> list[TaskFuture]:
        return [*self._tasks, *self._starting]

    def num_active_tasks(self) -> int:
        return len(self._tasks) + len(self._starting)

    def resources_in_use(self) -> Resources:
        return scaled_resources(self.options.resources, len(self._actors))

    # -- completion ------------------------------------------------------------
    def on_task_done(self, future: TaskFuture) -> TaskResult | None:
        if future in self._starting:
            actor = self._starting.pop(future)
            try:
                future.result()
            except RemoteTaskError as e:
                self._stop_actor(actor)
                raise remote_to_user_error(self.name, "actor start", e) from None
            except RuntimeWorkerCrashed as e:
                self._stop_actor(actor)
                raise WorkerCrashedError(
                    f"{self.name}: an actor died while starting ({e})", e.exitcode
                ) from None
            actor.ready = True
            actor.idle_since = time.monotonic()
            return None
        actor = self._task_actor.pop(future)
        actor.in_flight -= 1
        actor.idle_since = time.monotonic()
        self._done_on = actor
        return super().on_task_done(future)

    def _finish(self, task: MapTask, outputs: list[RefBundle]) -> None:
        super()._finish(task, _coalesce(outputs, self._min_bundle_bytes))

    def _on_failure(self, task: MapTask, failure: BaseException) -> BaseException | None:
        if not isinstance(failure, RuntimeWorkerCrashed):
            return super()._on_failure(task, failure)
        # The actor is gone; actor calls are not retried by the backend, so retry here
        # on a fresh actor with the same inputs (same task, so order is kept).
        if self._done_on in self._actors:
            self._stop_actor(self._done_on)
        if task.attempts > self._max_retries:
            return super()._on_failure(task, failure)
        task.attempts += 1
        self._retry.append(task)
        return None

    def on_tick(self, now: float) -> None:
        drained = self.all_inputs_done and not (self._queue or self._pending or self._retry)
        for actor in list(self._actors):
            if not actor.ready or actor.in_flight:
                continue
            if drained or (
                len(self._actors) > self.min_size and now - actor.idle_since > IDLE_ACTOR_S
            ):
                self._stop_actor(actor)


def _coalesce(outputs: list[RefBundle], min_bytes: int) -> list[RefBundle]:
    """A task's output blocks (one per model batch) grouped into bundles of at
    least ``min_bytes``: a model called on small batches would otherwise feed
    the next stage one tiny task (and one written file) per batch."""
    merged: list[RefBundle] = []
    group: list[RefBundle] = []
    for bundle in outputs:
        if group and (
            bundle.schema != group[0].schema or sum(b.nbytes for b in group) >= min_bytes
        ):
            merged.append(_joined(group))
            group = []
        group.append(bundle)
    if group:
        merged.append(_joined(group))
    return merged


def _joined(group: list[RefBundle]) -> RefBundle:
    if len(group) == 1:
        return group[0]
    refs = tuple(r for b in group for r in b.refs)
    origins = tuple(o for b in group for o in b.block_origins())
    return RefBundle(
        refs, group[0].schema, group[0].seq, all(b.owns_blocks for b in group), origins
    )
