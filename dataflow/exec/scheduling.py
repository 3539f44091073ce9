"""Which operator launches the next task: pure functions over the topology.

Task selection policy
---------------------
Walk the operators from the sink upstream and pick the first one that

1. has something to launch (``dispatch_cost()`` is not None: queued input, a
   read task left, a ready actor with a free slot or room to start one),
2. fits in the free resources (``dispatch_cost().fits_in(free)``; an actor
   with a free slot costs nothing, a new actor or a task costs its resources),
3. is not vetoed by any backpressure policy (backpressure.py).

An actor start is checked against the backend's real resources (actors are
never queued behind each other: each holds its lease for life) and must leave
one task's worth free for every unfinished task operator
(``budget.task_reserve``): an actor pool that took the last CPU an upstream
stage needs would wait forever for that stage's output.

Furthest downstream first: finishing work that is already in flight frees
memory and delivers rows sooner, while upstream (reads) only adds memory.
The executor repeats the selection until nothing is eligible, then blocks on
``Backend.wait_any`` for a task to finish (never a sleep).

State
-----
Nothing here keeps state. Each call reads, from the operators:

* ``dispatch_cost()``, ``next_task_bytes()`` - what the next launch needs and
  produces;
* ``resources_in_use()`` - what running tasks and live actors hold, giving the
  free resources as ``total - sum``;
* ``memory_usage()`` / ``num_active_tasks()`` - bytes held in the store and
  tasks running, giving the ``PressureState`` the policies see;

and, from the executor, the total resources, the consumer queue's fullness and
the last sampled resident memory. Stats observe the executor's events; they
are never read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dataflow.exec.backpressure import BackpressurePolicy, PressureState
from dataflow.exec.budget import free_resources, task_reserve
from dataflow.exec.operators.actor_pool import ActorPoolMapOperator

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator
    from runtime.resources import Resources


def pressure_state(
    ops: Sequence[PhysicalOperator],
    *,
    sink: PhysicalOperator | None,
    output_queue_bytes: int = 0,
    output_queue_full: bool = False,
    rss_bytes: int = 0,
) -> PressureState:
    """Snapshot of memory held and tasks running across ``ops``; the consumer's
    queue holds ``output_queue_bytes`` (0 = empty)."""
    running = sum(op.num_active_tasks() for op in ops)
    consumer_has_work = output_queue_bytes > 0 or (sink is not None and sink.has_next())
    return PressureState(
        memory_usage=output_queue_bytes + sum(op.memory_usage() for op in ops),
        running_tasks=running,
        output_queue_full=output_queue_full,
        stalled=running == 0 and not consumer_has_work,
        sink=sink,
        rss_bytes=rss_bytes,
    )


def select_operator(
    ops: Sequence[PhysicalOperator],
    total: Resources,
    policies: Sequence[BackpressurePolicy],
    state: PressureState,
    *,
    actor_total: Resources | None = None,
) -> tuple[PhysicalOperator | None, list[PhysicalOperator]]:
    """The operator to dispatch next (or None), and the operators that had work
    and resources but were held back by a policy (for backpressure stats).

    ``ops`` is in topological order, upstream first. ``total`` may count each
    slot more than once (tasks queue in the backend); ``actor_total`` is what
    the backend really has, for actor starts (default ``total``).
    """
    free: Resources | None = None
    held_back: list[PhysicalOperator] = []
    for op in reversed(ops):
        cost = op.dispatch_cost()
        if cost is None:
            continue
        if cost.cpu or cost.gpu or cost.memory or cost.custom:
            if free is None:
                free = free_resources(total, ops)
            if not cost.fits_in(free):
                continue
            if isinstance(op, ActorPoolMapOperator) and not _actor_fits(
                cost, ops, actor_total or total
            ):
                continue
        if all(p.can_dispatch(op, state) for p in policies):
            return op, held_back
        held_back.append(op)
    return None, held_back


def _actor_fits(cost: Resources, ops: Sequence[PhysicalOperator], total: Resources) -> bool:
    """True when a new actor fits next to the live actors and still leaves the
    reserve of every unfinished task operator."""
    actors = [op for op in ops if isinstance(op, ActorPoolMapOperator)]
    reserve = task_reserve(op for op in ops if not op.completed())
    return (cost + reserve).fits_in(free_resources(total, actors))
