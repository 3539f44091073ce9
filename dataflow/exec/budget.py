"""Resource budgets: what the backend has, what operators hold, what is free.

Everything is ``runtime.resources.Resources`` arithmetic; operators report what
their running tasks and live actors hold (``resources_in_use``), so the free
amount is derived, never tracked separately.

>>> check_request("map_batches(embed)", Resources(gpu=2), Resources(cpu=8, gpu=1))
Traceback (most recent call last):
...
dataflow.errors.ResourceError: map_batches(embed) needs 2 GPUs, this machine has 1: lower num_gpus or add a GPU
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dataflow.errors import ResourceError
from dataflow.exec.operators.actor_pool import ActorPoolMapOperator
from dataflow.exec.operators.map import MapOperator
from runtime.resources import Resources

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator


_UNBOUNDED = 1 << 30


def free_resources(total: Resources, ops: Iterable[PhysicalOperator]) -> Resources:
    """``total`` minus what every operator's tasks and actors hold now."""
    # Plain float sums: this runs once per dispatch, on the executor's hot path.
    cpu = gpu = memory = 0.0
    custom: dict[str, float] = {}
    for op in ops:
        held = op.resources_in_use()
        cpu += held.cpu
        gpu += held.gpu
        memory += held.memory
        for k, v in held.custom:
            custom[k] = custom.get(k, 0.0) + v
    if not (cpu or gpu or memory or custom):
        return total
    return total - Resources.of(cpu, gpu, memory, custom)


def task_reserve(ops: Iterable[PhysicalOperator]) -> Resources:
    """What one more task of any task operator among ``ops`` needs
    (component-wise maximum): the room an actor pool must leave free.

    Actors hold their resources for their whole life, so a pool that took the
    last CPU an upstream task stage needs would wait forever for that stage's
    output.
    """
    cpu = gpu = memory = 0.0
    custom: dict[str, float] = {}
    for op in ops:
        if not isinstance(op, MapOperator) or isinstance(op, ActorPoolMapOperator):
            continue
        need = op.options.resources
        cpu, gpu, memory = max(cpu, need.cpu), max(gpu, need.gpu), max(memory, need.memory)
        for k, v in need.custom:
            custom[k] = max(custom.get(k, 0.0), v)
    return Resources.of(cpu, gpu, memory, custom)


def actors_that_fit(need: Resources, total: Resources, reserve: Resources) -> int:
    """How many actors needing ``need`` fit in ``total`` while leaving ``reserve`` free (may be 0)."""
    room = [
        (total.cpu - reserve.cpu, need.cpu),
        (total.gpu - reserve.gpu, need.gpu),
        (total.memory - reserve.memory, need.memory),
    ]
    have = total.custom_dict
    room += [(have.get(k, 0.0) - dict(reserve.custom).get(k, 0.0), v) for k, v in need.custom]
    counts = [int(max(0.0, left) / amount + 1e-9) for left, amount in room if amount]
    return min(counts) if counts else _UNBOUNDED  # an actor needing nothing always fits


def check_request(where: str, need: Resources, total: Resources) -> None:
    """Raise ``ResourceError`` when one task of ``where`` can never run on ``total``."""
    checks = [
        (need.cpu, total.cpu, "CPUs", "num_cpus", "use a machine with more CPUs"),
        (need.gpu, total.gpu, "GPUs", "num_gpus", "add a GPU"),
        (need.memory, total.memory, "bytes of memory", "memory", "free some memory"),
    ]
    checks += [
        (v, total.custom_dict.get(k, 0.0), f"of resource {k!r}", "resources", f"declare {k!r}")
        for k, v in need.custom
    ]
    for amount, have, unit, knob, fix in checks:
        if amount > have + 1e-9:
            raise ResourceError(
                f"{where} needs {amount:g} {unit}, this machine has {have:g}: lower {knob} or {fix}"
            )


def max_concurrency(need: Resources, total: Resources) -> int:
    """How many tasks needing ``need`` fit in ``total`` at once (at least 1)."""
    limits = [
        total.cpu / need.cpu if need.cpu else None,
        total.gpu / need.gpu if need.gpu else None,
    ]
    limits += [total.custom_dict.get(k, 0.0) / v for k, v in need.custom if v]
    if need.memory:
        limits.append(total.memory / need.memory)
    known = [int(x + 1e-9) for x in limits if x is not None]
    return max(1, min(known)) if known else max(1, int(total.cpu))
