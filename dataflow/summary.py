"""Per-column statistics over a stream of blocks: the table of ``Dataset.summary()``.

``summary()`` computes, as Ray Data's does, by column type:

- numbers (ints, floats, decimals, bools): ``count``, ``mean``, ``min``,
  ``max``, ``std`` (population, ddof=0, as Ray), ``approx_quantile[0]``
  (the median), ``missing_pct``, ``zero_pct``;
- strings and binary: ``count``, ``missing_pct``, ``approx_topk[i]`` (the 10
  most frequent values as ``{column: value, "count": n}``);
- temporal types: ``count``, ``min``, ``max``, ``missing_pct``;
- anything else (lists, structs, tensors): ``count``, ``missing_pct``.

``count`` counts rows, nulls included (Ray's). The median is exact while a
column holds at most ``_SAMPLE`` values and a reservoir sample's beyond; the
top values are exact while a column has at most ``_DISTINCT`` distinct values
and from pruned counts beyond (heavy hitters survive the pruning).

>>> import pyarrow as pa
>>> s = summarize([pa.table({"a": [1, 2, 0, None]})], pa.schema([("a", pa.int64())]))
>>> s.get_column_stats("a").set_index("statistic")["value"]["mean"]
1.0
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflow.errors import PlanError

if TYPE_CHECKING:
    import pandas as pd

_SAMPLE = 100_000
_DISTINCT = 10_000
_TOPK = 10


class Moments:
    """Running count, min, max, mean and M2 of one numeric column across blocks
    (``summary()``'s; ``Dataset.sum/mean/std`` are keyless ``Aggregate`` nodes).
    Blocks combine by Chan's parallel formula for mean and variance."""

    def __init__(self) -> None:
        self.count = 0
        self.lo: Any = None
        self.hi: Any = None
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, column: pa.ChunkedArray | pa.Array) -> None:
        """Fold one block's column in (nulls are skipped)."""
        n = len(column) - column.null_count
        if n == 0:
            return
        mm = pc.min_max(column).as_py()
        self.lo = mm["min"] if self.lo is None else min(self.lo, mm["min"])
        self.hi = mm["max"] if self.hi is None else max(self.hi, mm["max"])
        block_mean = pc.mean(column).as_py()
        block_m2 = pc.variance(column, ddof=0).as_py() * n
        total = self.count + n
        delta = block_mean - self.mean
        self.mean += delta * n / total
        self.m2 += block_m2 + delta * delta * self.count * n / total
        self.count = total

    def std(self, ddof: int) -> float:
        """Divisor ``N - ddof``; NaN when ``N <= ddof`` (Ray Data's rule, as ``Std``)."""
        if self.count - ddof <= 0:
            return math.nan
        return math.sqrt(self.m2 / (self.count - ddof))


def _family(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return "number"
    if pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_temporal(t):
        return "temporal"
    return "other"


class _ColumnStats:
    """The running statistics of one column (see the module docstring)."""

    def __init__(self, name: str, dtype: pa.DataType, seed: int) -> None:
        self.name = name
        self.family = _family(dtype)
        self.rows = 0
        self.nulls = 0
        self.zeros = 0
        self.moments = Moments()
        self.sample: list[np.ndarray] = []
        self.sampled = 0
        self.rng = np.random.default_rng(seed)
        self.counts: Counter = Counter()
        self.lo: Any = None
        self.hi: Any = None

    def add(self, column: pa.ChunkedArray) -> None:
        self.rows += len(column)
        self.nulls += column.null_count
        if self.family == "number":
            values = column
            if pa.types.is_boolean(column.type):
                values = column.cast(pa.int64())
            elif pa.types.is_decimal(column.type):
                values = column.cast(pa.float64())
            self.moments.add(values)
            self.zeros += int(pc.sum(pc.equal(values, 0)).as_py() or 0)
            self._sample(values.drop_null().to_numpy().astype(np.float64))
        elif self.family == "temporal":
            if len(column) > column.null_count:
                mm = pc.min_max(column).as_py()
                self.lo = mm["min"] if self.lo is None else min(self.lo, mm["min"])
                self.hi = mm["max"] if self.hi is None else max(self.hi, mm["max"])
        elif self.family == "string":
            for row in pc.value_counts(column.drop_null()).to_pylist():
                self.counts[row["values"]] += row["counts"]
            if len(self.counts) > _DISTINCT:
                self.counts = Counter(dict(self.counts.most_common(_DISTINCT // 10)))

    def _sample(self, values: np.ndarray) -> None:
        # Reservoir sampling, vectorized by block: the k-th value seen replaces
        # a random slot with chance _SAMPLE / k (later ones win a shared slot,
        # as one at a time would), so every value stays with equal chance.
        room = max(0, min(len(values), _SAMPLE - self.sampled))
        if room:
            self.sample.append(np.array(values[:room]))
        rest = values[room:]
        if len(rest):
            if len(self.sample) > 1:
                self.sample = [np.concatenate(self.sample)]
            seen = self.sampled + room + 1 + np.arange(len(rest))
            slots = (self.rng.random(len(rest)) * seen).astype(np.int64)
            keep = slots < _SAMPLE
            self.sample[0][slots[keep]] = rest[keep]
        self.sampled += len(values)

    def stats(self) -> dict[str, Any]:
        missing = 100.0 * self.nulls / self.rows if self.rows else None
        out: dict[str, Any] = {"count": self.rows, "missing_pct": missing}
        if self.family == "number":
            m = self.moments
            valid = m.count > 0
            out.update(
                mean=m.mean if valid else None,
                min=m.lo if valid else None,
                max=m.hi if valid else None,
                std=m.std(0) if valid else None,
                zero_pct=100.0 * self.zeros / self.rows if self.rows else None,
            )
            median = float(np.quantile(np.concatenate(self.sample), 0.5)) if self.sample else None
            out["approx_quantile[0]"] = median
        elif self.family == "temporal":
            out.update(min=self.lo, max=self.hi)
        elif self.family == "string":
            top = sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:_TOPK]
            for i, (value, n) in enumerate(top):
                out[f"approx_topk[{i}]"] = {self.name: value, "count": n}
        return out


@dataclass
class DatasetSummary:
    """What ``Dataset.summary()`` returns: one row per statistic and one column
    per dataset column (as Ray Data's ``DatasetSummary``).

    ``to_pandas()`` gives the whole table (a ``statistic`` column, then the
    dataset's columns); ``get_column_stats(column)`` one column's as
    ``statistic`` / ``value``. A statistic that does not apply to a column's
    type is None there.
    """

    STATISTIC_COLUMN = "statistic"

    stats: dict[str, dict[str, Any]]
    dataset_schema: pa.Schema
    columns: list[str]

    def _statistics(self) -> list[str]:
        return sorted({s for col in self.stats.values() for s in col})

    def to_pandas(self) -> pd.DataFrame:
        """Every statistic (rows, sorted by name) of every column."""
        import pandas as pd

        names = self._statistics()
        data: dict[str, list[Any]] = {self.STATISTIC_COLUMN: names}
        for c in self.columns:
            data[c] = [self.stats[c].get(s) for s in names]
        return pd.DataFrame(data)

    def get_column_stats(self, column: str) -> pd.DataFrame:
        """The statistics of one ``column`` as a ``statistic`` / ``value`` table."""
        import pandas as pd

        if column not in self.stats:
            raise PlanError(f"summary: no column {column!r} in the summary; it has {self.columns}")
        names = sorted(self.stats[column])
        return pd.DataFrame(
            {self.STATISTIC_COLUMN: names, "value": [self.stats[column][s] for s in names]}
        )

    def __repr__(self) -> str:
        return f"DatasetSummary(columns={self.columns})"


def summarize(blocks: Iterable[pa.Table], schema: pa.Schema, seed: int = 0) -> DatasetSummary:
    """One pass over ``blocks`` (each with the columns of ``schema``)."""
    cols = {f.name: _ColumnStats(f.name, f.type, seed) for f in schema}
    for table in blocks:
        for name, acc in cols.items():
            acc.add(table.column(name))
    return DatasetSummary(
        stats={n: acc.stats() for n, acc in cols.items()},
        dataset_schema=schema,
        columns=list(cols),
    )
