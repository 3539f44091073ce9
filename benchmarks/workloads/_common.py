"""Pieces several workloads share (a leading underscore keeps this module out of the registry)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


def identity(batch: Any) -> Any:
    """The no-op UDF of ``overhead`` and ``smallfiles``: only the per-block cost remains."""
    return batch


def daft_identity_count(frame: Any, column: str) -> int:
    """Rows after an identity batch UDF on ``column``, counted so Daft cannot prune the UDF."""
    import daft
    from daft import col

    dtype = frame.schema()[column].dtype
    udf = daft.func.batch(return_dtype=dtype)(identity)
    out = frame.select(udf(col(column)).alias(column)).agg(col(column).count().alias("n"))
    return int(out.to_pydict()["n"][0])


def torch_batches(tables: Iterable[pa.Table | pa.RecordBatch], size: int) -> Iterator[dict]:
    """Re-chunk a stream of Arrow tables into dicts of torch tensors of exactly ``size`` rows
    (the last one shorter): the hand-written equivalent of ``iter_torch_batches``."""
    import pyarrow as pa
    import torch

    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        pending.append(table)
        held += table.num_rows
        if held < size:
            continue
        whole = pa.concat_tables(pending).combine_chunks()
        cut = held - held % size
        for start in range(0, cut, size):
            yield _to_torch(whole.slice(start, size), torch)
        pending, held = [whole.slice(cut)], held - cut
    if held:
        yield _to_torch(pa.concat_tables(pending).combine_chunks(), torch)


def _to_torch(table: pa.Table, torch: Any) -> dict:
    return {name: torch.from_numpy(table[name].to_numpy()) for name in table.column_names}
