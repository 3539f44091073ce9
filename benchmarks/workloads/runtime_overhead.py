"""runtime_overhead: no-op task round trips on a 1-row block through 2 workers: tasks/s.

Each engine's own task API, not a Dataset: dataflow's local backend (``submit``
and ``wait_any`` with 8 tasks in flight, each output freed), Ray tasks on a
``ray.put`` ref, and a multiprocessing pool. The time includes starting the 2
workers (about half a second); ``--param runtime_tasks=N`` sets the count.
"""

from __future__ import annotations

from typing import Any

from benchmarks.workloads import Result, RunContext, Workload, checksum

TASKS = 20_000
IN_FLIGHT = 8


def noop(tables: list) -> list:
    """The task: hand the input block back (the backend still stores it anew)."""
    return tables


def _result(tasks: int, rows: int) -> Result:
    return Result(rows=rows, checksum=checksum(rows=rows), units=tasks)


def _dataflow(ctx: RunContext) -> Result:
    import pyarrow as pa

    from runtime.backends.local import LocalBackend

    tasks = ctx.param("runtime_tasks", TASKS)
    backend = LocalBackend(num_cpus=2)
    try:
        fn = backend.register_function(noop)
        block = backend.put(pa.table({"x": [1]}))
        pending: set[Any] = set()
        submitted = rows = 0
        while submitted < tasks or pending:
            while submitted < tasks and len(pending) < IN_FLIGHT:
                pending.add(backend.submit(fn, [block]))
                submitted += 1
            for future in backend.wait_any(list(pending), None):
                pending.discard(future)
                refs = future.result().refs
                rows += sum(r.num_rows for r in refs)
                backend.free(refs)
    finally:
        backend.shutdown()
    return _result(tasks, rows)


def _ray(ctx: RunContext) -> Result:
    import pyarrow as pa
    import ray

    tasks = ctx.param("runtime_tasks", TASKS)
    remote_noop = ray.remote(num_cpus=1)(lambda table: table)
    block = ray.put(pa.table({"x": [1]}))
    pending: list[Any] = []
    submitted = rows = 0
    while submitted < tasks or pending:
        while submitted < tasks and len(pending) < IN_FLIGHT:
            pending.append(remote_noop.remote(block))
            submitted += 1
        done, pending = ray.wait(pending, num_returns=1)
        rows += sum(t.num_rows for t in ray.get(done))
    return _result(tasks, rows)


def _noop_table(table: Any) -> Any:
    return table


def _pyarrow_mp(ctx: RunContext) -> Result:
    import pyarrow as pa

    tasks = ctx.param("runtime_tasks", TASKS)
    table = pa.table({"x": [1]})
    submitted, rows = min(IN_FLIGHT, tasks), 0
    results = [ctx.handle.apply_async(_noop_table, (table,)) for _ in range(submitted)]
    while results:
        rows += results.pop(0).get().num_rows
        if submitted < tasks:
            results.append(ctx.handle.apply_async(_noop_table, (table,)))
            submitted += 1
    return _result(tasks, rows)


WORKLOAD = Workload(
    name="runtime_overhead",
    description="no-op task round trips on a 1-row block through 2 workers: per-task cost",
    dataset="none",
    runs={"dataflow": _dataflow, "ray": _ray, "pyarrow-mp": _pyarrow_mp},
    unit="tasks",
)
