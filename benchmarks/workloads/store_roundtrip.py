"""store_roundtrip: put a 256 MiB table into the object store, read it in another process.

dataflow: ``LocalBackend.put`` into shared memory, then a worker task maps the
object (zero-copy) and sums a column; pyarrow: the hand-written equivalent, an
Arrow IPC file in /dev/shm that a pool process memory-maps. Units are MiB put.
``--param store_mib=N --param store_rounds=K`` set the size and the count.
"""

from __future__ import annotations

from typing import Any

from benchmarks.workloads import Result, RunContext, Workload, checksum

MIB = 256
ROUNDS = 4


def _table(ctx: RunContext) -> Any:
    import numpy as np
    import pyarrow as pa

    n = ctx.param("store_mib", MIB) * 1024 * 1024 // 8
    return pa.table({"x": np.arange(n, dtype=np.int64)})


def sum_column(tables: list) -> Any:
    """Read the block in the worker and reduce it to one row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    yield pa.table({"s": [sum(pc.sum(t["x"]).as_py() for t in tables)]})


def _result(ctx: RunContext, table: Any, total: int) -> Result:
    rounds = ctx.param("store_rounds", ROUNDS)
    return Result(
        rows=table.num_rows * rounds,
        checksum=checksum(rows=table.num_rows * rounds, sum_x=total),
        units=ctx.param("store_mib", MIB) * rounds,
    )


def _dataflow(ctx: RunContext) -> Result:
    from runtime.backends.local import LocalBackend

    table = _table(ctx)
    backend = LocalBackend(num_cpus=1)
    total = 0
    try:
        fn = backend.register_function(sum_column)
        for _ in range(ctx.param("store_rounds", ROUNDS)):
            ref = backend.put(table)
            result = backend.submit(fn, [ref]).result()
            total += backend.get(result.refs[0])["s"][0].as_py()
            backend.free([ref, *result.refs])
    finally:
        backend.shutdown()
    return _result(ctx, table, total)


def _map_and_sum(path: str) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    return pc.sum(table["x"]).as_py()


def _pyarrow_mp(ctx: RunContext) -> Result:
    import os
    import tempfile

    import pyarrow as pa

    table = _table(ctx)
    total = 0
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    for i in range(ctx.param("store_rounds", ROUNDS)):
        path = os.path.join(shm, f"store-roundtrip-{os.getpid()}-{i}.arrow")
        try:
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            total += ctx.handle.apply(_map_and_sum, (path,))
        finally:
            os.unlink(path)
    return _result(ctx, table, total)


WORKLOAD = Workload(
    name="store_roundtrip",
    description="put a 256 MiB table into shared memory and sum it in another process",
    dataset="none",
    runs={"dataflow": _dataflow, "pyarrow-mp": _pyarrow_mp},
    unit="MiB",
)
