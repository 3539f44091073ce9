"""Backpressure as composable policies: each may veto dispatching an operator.

A policy sees the operator and a ``PressureState`` snapshot taken once per
scheduling round; ``select_operator`` (scheduling.py) asks every policy. Three
policies ship:

* ``MemoryBudgetPolicy`` - bytes held in operator queues and outputs plus the
  estimated output of running tasks, plus the estimate for the new task, must
  stay within ``object_store_memory``;
* ``OutputQueuePolicy`` - the last operator waits while the consumer's bounded
  queue is full (a slow consumer stops the pipeline);
* ``MemoryLimitPolicy`` - nothing new starts while the process tree's resident
  memory is over ``DataContext.memory_limit``.

A policy never vetoes when the pipeline is stalled - no task running and
nothing for the consumer to take - since only a new task can then make
progress (peak = budget + one block per running task). While the consumer has
bundles to take, its progress frees memory, so the vetoes stand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator


@dataclass(frozen=True)
class PressureState:
    """What policies look at, sampled once per scheduling round."""

    memory_usage: int
    """Store bytes held by all operators (queues, outputs, running tasks) and the output queue."""
    running_tasks: int
    output_queue_full: bool
    stalled: bool
    """No task running and nothing waiting for the consumer: only a dispatch can progress."""
    sink: PhysicalOperator | None
    rss_bytes: int = 0


class BackpressurePolicy(Protocol):
    def can_dispatch(self, op: PhysicalOperator, state: PressureState) -> bool: ...


@dataclass(frozen=True)
class MemoryBudgetPolicy:
    budget_bytes: int

    def can_dispatch(self, op: PhysicalOperator, state: PressureState) -> bool:
        if state.stalled:
            return True
        _, estimate = op.next_task_bytes()
        return state.memory_usage + estimate <= self.budget_bytes


@dataclass(frozen=True)
class OutputQueuePolicy:
    def can_dispatch(self, op: PhysicalOperator, state: PressureState) -> bool:
        return op is not state.sink or not (state.output_queue_full or op.has_next())


@dataclass(frozen=True)
class MemoryLimitPolicy:
    limit_bytes: int

    def can_dispatch(self, op: PhysicalOperator, state: PressureState) -> bool:
        return state.stalled or state.rss_bytes <= self.limit_bytes
