"""Helpers shared by the batch service's tests."""

from __future__ import annotations

import pyarrow as pa


def blocks(sizes: list[int]) -> list[pa.Table]:
    """Tables of an ``id`` column counting on from 0 across them, ``sizes`` rows each."""
    out, start = [], 0
    for n in sizes:
        out.append(pa.table({"id": pa.array(range(start, start + n), pa.int64())}))
        start += n
    return out
