"""The ``Dataset`` methods that describe a dataset rather than transform it
(``size_bytes``, ``num_blocks``, ``input_files``, ``summary``, ``name`` /
``set_name``, ``copy``) and ``streaming_train_test_split``, kept out of
``dataset.py`` so that no file grows into a god file.

``size_bytes`` and ``num_blocks`` are answered from metadata for in-memory and
materialized datasets and otherwise run the plan, counting the blocks' sizes
from their references without fetching a block (as ``count()`` does).

>>> import dataflow as df
>>> df.from_items([1, 2, 3]).num_blocks()
1
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from dataflow.dataset_base import DatasetBase
from dataflow.errors import PlanError
from dataflow.plan.logical import InputData, LogicalOperator, MaterializedData, Read
from dataflow.summary import DatasetSummary, summarize
from dataflow.validate import check_known_columns, check_seed, column_names

if TYPE_CHECKING:
    from dataflow.dataset import Dataset


class InfoMethods(DatasetBase):
    """Part of ``Dataset``: size, names, summaries and train/test splits."""

    def size_bytes(self) -> int:
        """The in-memory size of the dataset's blocks in bytes (Arrow buffers).
        Runs the plan unless its blocks are in memory or materialized.

        >>> df.from_items([{"x": i} for i in range(4)]).size_bytes()
        32
        """
        known = _block_stats(self._plan)
        if known is not None:
            return known[1]
        return self._run_block_stats()[1]

    def num_blocks(self) -> int:
        """The number of blocks the dataset has (after running its plan, unless
        its blocks are in memory or materialized).

        >>> df.range(10, override_num_blocks=2).materialize().num_blocks()
        2
        """
        known = _block_stats(self._plan)
        if known is not None:
            return known[0]
        return self._run_block_stats()[0]

    def _run_block_stats(self) -> tuple[int, int]:
        blocks = nbytes = 0
        with self._open_stream() as stream:
            for bundle in stream:
                blocks += len(bundle.refs)
                nbytes += sum(r.nbytes for r in bundle.refs)
                stream.free(bundle)
        return blocks, nbytes

    def input_files(self) -> list[str]:
        """The files this dataset reads (each once, in listing order): those of
        its file reads, and the files a materialized dataset's blocks came
        from. Plans the reads (lists directories; a Parquet read may read
        footers) but reads no rows.

        >>> df.range(3).input_files()
        []
        """
        files: dict[str, None] = {}
        for node in self._plan.walk():
            if isinstance(node, Read):
                for task in node.datasource.get_read_tasks(node.parallelism or 1):
                    files.update(dict.fromkeys(task.metadata.input_files))
            elif isinstance(node, MaterializedData):
                for bundle in node.bundles:
                    files.update(dict.fromkeys(bundle.files()))
        return list(files)

    def summary(
        self,
        columns: list[str] | None = None,
        override_dtype_agg_mapping: dict[Any, Any] | None = None,
    ) -> DatasetSummary:
        """Statistics of each column by its type (count, mean, min, max, std,
        median, missing and zero percentages for numbers; the most frequent
        values for strings...; see ``dataflow.summary``), in one pass.

        >>> s = df.from_items([{"a": 1}, {"a": 3}]).summary()
        >>> s.get_column_stats("a").set_index("statistic")["value"]["mean"]
        2.0
        """
        if override_dtype_agg_mapping is not None:
            raise PlanError(
                "summary: override_dtype_agg_mapping maps Ray Data types to Ray's "
                "AggregateFnV2 classes, which dataflow does not have: compute custom "
                "statistics with Dataset.aggregate(...) instead"
            )
        ds: Any = self
        if columns is not None:
            cols = column_names("summary", columns)
            schema = ds.schema()
            check_known_columns("summary", cols, schema)
            ds = ds.select_columns(list(cols))
        schema = ds.schema()
        if schema is None:
            return DatasetSummary(stats={}, dataset_schema=pa.schema([]), columns=[])
        return summarize(ds._iterator(ds._plan).iter_blocks(), schema)

    @property
    def name(self) -> str | None:
        """The name given with ``set_name`` (shown by ``stats()`` and ``explain()``);
        kept by the datasets derived from this one.

        >>> ds = df.range(3)
        >>> ds.set_name("ids")
        >>> ds.map_batches(lambda b: b).name
        'ids'
        """
        return self._name

    def set_name(self, name: str | None) -> None:
        """Name this dataset (None clears the name); see ``name``."""
        if name is not None and not isinstance(name, str):
            raise PlanError(f"set_name: name must be a str or None, got {type(name).__name__}")
        self._name = name

    def copy(self, _deep_copy: bool = False, _as: type | None = None) -> Dataset:
        """A new Dataset over the same (immutable) plan, with this one's name and
        its own ``stats()``. ``_deep_copy`` is accepted for Ray's signature: plans
        are immutable here, so a shallow copy is already independent; ``_as``
        builds the copy as that subclass of Dataset.

        >>> ds = df.range(3)
        >>> ds.copy().take_all() == ds.take_all()
        True
        """
        cls = type(self) if _as is None else _as
        if not (isinstance(cls, type) and issubclass(cls, type(self))):
            raise PlanError(f"copy: _as must be a subclass of Dataset, got {_as!r}")
        out = cls(self._plan)
        out._name = self._name
        return out

    def streaming_train_test_split(
        self,
        test_size: float,
        *,
        split_type: Literal["hash", "random"] = "random",
        hash_column: str | None = None,
        seed: int | None = None,
        **ray_remote_kwargs: Any,
    ) -> tuple[Dataset, Dataset]:
        """Split into (train, test) without materializing: each row goes to test
        with chance ``test_size``. ``split_type="random"`` draws per block from a
        generator seeded by ``seed`` and the block's content (so the two sides,
        run separately, are complementary for a deterministic input);
        ``"hash"`` puts a row in test by a hash of its ``hash_column`` value,
        Ray Data's hash (blake2b of ``str(value)``), so the same keys go to the
        same side as in Ray. ``ray_remote_kwargs`` go to the splitting
        ``map_batches`` (``num_cpus``, ``concurrency``...).

        >>> train, test = df.range(1000).streaming_train_test_split(0.2, seed=0)
        >>> train.count() + test.count()
        1000
        """
        where = "streaming_train_test_split"
        if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
            raise PlanError(f"{where}: test_size must be a float in (0, 1), got {test_size!r}")
        if not 0 < test_size < 1:
            raise PlanError(f"{where}: test_size must be between 0 and 1, got {test_size}")
        if split_type not in ("hash", "random"):
            raise PlanError(f"{where}: split_type must be 'hash' or 'random', got {split_type!r}")
        if split_type == "hash":
            if seed is not None:
                raise PlanError(f"{where}: seed is not supported for hash split")
            if hash_column is None:
                raise PlanError(f"{where}: hash_column is required for hash split")
            check_known_columns(where, [hash_column], self.schema(fetch_if_missing=False))
        elif hash_column is not None:
            raise PlanError(f"{where}: hash_column is not supported for random split")
        check_seed(where, seed)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        sides = []
        for test in (False, True):
            splitter = TrainTestSide(float(test_size), seed, hash_column, test)
            sides.append(
                self.map_batches(
                    splitter,
                    batch_format="pyarrow",
                    batch_size=None,
                    zero_copy_batch=True,
                    **ray_remote_kwargs,
                )
            )
        return sides[0], sides[1]


class TrainTestSide:
    """Keeps one side (train or test) of ``streaming_train_test_split``: the
    rows whose draw (or key hash) falls below ``test_size`` are test rows."""

    def __init__(self, test_size: float, seed: int, hash_column: str | None, test: bool) -> None:
        self.test_size = test_size
        self.seed = seed
        self.hash_column = hash_column
        self.test = test

    def is_train(self, table: pa.Table) -> np.ndarray:
        if self.hash_column is not None:
            limit = (1 - self.test_size) * (1 << 64)
            keys = table.column(self.hash_column).to_pylist()
            return np.array([_key_hash(k) < limit for k in keys], dtype=bool)
        digest = hashlib.blake2b(digest_size=8)
        digest.update(str(table.num_rows).encode())
        digest.update(repr(table.slice(0, 16).to_pylist()).encode())
        rng = np.random.default_rng([self.seed, int.from_bytes(digest.digest(), "little")])
        return rng.random(table.num_rows) < (1 - self.test_size)

    def __call__(self, table: pa.Table) -> pa.Table:
        train = self.is_train(table)
        return table.filter(pa.array(~train if self.test else train))

    def __repr__(self) -> str:  # the stage's name in plans and stats
        return f"{'test' if self.test else 'train'}_split({self.test_size})"


def _key_hash(key: Any) -> int:
    """Ray Data's bucket hash of a key: 64 bits of blake2b over ``str(key)``."""
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")


def _block_stats(plan: LogicalOperator) -> tuple[int, int] | None:
    """(blocks, bytes) of an in-memory or materialized plan, else None."""
    if isinstance(plan, InputData):
        return len(plan.blocks), sum(t.nbytes for t in plan.blocks)
    if isinstance(plan, MaterializedData):
        refs = [r for b in plan.bundles for r in b.refs]
        return len(refs), sum(r.nbytes for r in refs)
    return None
