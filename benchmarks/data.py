"""Seeded benchmark datasets, generated once under a cache dir keyed by their size.

The main dataset is ``rows`` rows in ``files`` Parquet files with row groups of
``row_group_rows`` rows; the small-files variant is ``small_files`` files of
``small_file_rows`` rows. Both have the schema
``id int64, a float64, b float64, c int32, cat string (20 values), text string (~40 chars)``.
``id`` is unique and dense over each dataset, so ``sum(id)`` checks that every
row was seen exactly once.

>>> spec = DataSpec(rows=4_000, files=4, row_group_rows=500, small_files=8, small_file_rows=50)
>>> paths = ensure(spec, cache_dir="/tmp/bench-doc")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.workloads import DataPaths

CACHE_ENV = "DATAFLOW_BENCH_CACHE"
CATEGORIES = tuple(f"cat_{i:02d}" for i in range(20))
_WORDS_PER_TEXT = 6
_FORMAT_VERSION = 1  # bump when the generator changes: old caches then get a new key


@dataclass(frozen=True)
class DataSpec:
    """Sizes of the generated datasets (the defaults are the issue's full size)."""

    rows: int = 8_000_000
    files: int = 16
    row_group_rows: int = 65_536
    small_files: int = 2_000
    small_file_rows: int = 1_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rows", "files", "row_group_rows", "small_files", "small_file_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.files > self.rows:
            raise ValueError(f"DataSpec: files ({self.files}) must not exceed rows ({self.rows})")

    @property
    def key(self) -> str:
        """The cache directory name: every size and the seed, so sizes never collide."""
        return (
            f"v{_FORMAT_VERSION}-r{self.rows}-f{self.files}-g{self.row_group_rows}"
            f"-s{self.small_files}x{self.small_file_rows}-seed{self.seed}"
        )


def default_cache_dir() -> Path:
    """``$DATAFLOW_BENCH_CACHE`` or ``~/.cache/dataflow-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dataflow-bench")


def paths_of(root: Path) -> DataPaths:
    """The file lists of a generated dataset directory (``ensure`` made it)."""
    import pyarrow.parquet as pq

    main = tuple(sorted(str(p) for p in (root / "main").glob("*.parquet")))
    small = tuple(sorted(str(p) for p in (root / "small").glob("*.parquet")))
    if not main or not small:
        raise FileNotFoundError(
            f"benchmark data under {root} is incomplete: run `python -m benchmarks data`"
        )
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in main)
    small_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in small[:1]) * len(small)
    return DataPaths(
        root=root, main_files=main, small_files=small, rows=rows, small_rows=small_rows
    )


def ensure(spec: DataSpec, cache_dir: str | Path | None = None) -> DataPaths:
    """Generate ``spec``'s datasets unless cached; returns their paths.

    Generation writes into a temporary sibling and renames it into place, so an
    interrupted run never leaves a half-written cache entry behind.
    """
    root = Path(cache_dir or default_cache_dir()) / spec.key
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}-", dir=root.parent))
        try:
            _write_main(spec, tmp / "main")
            _write_small(spec, tmp / "small")
            try:
                tmp.rename(root)
            except OSError:
                if not root.exists():  # a concurrent generator may have won the rename
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths_of(root)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def _vocabulary(rng) -> list[str]:
    # Mixed-case words of 3-9 letters, so lower-casing and word counting do real work.
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lengths = rng.integers(3, 10, size=500)
    return ["".join(rng.choice(list(letters), size=n)) for n in lengths]


def _table(rng, first_id: int, n: int, vocab):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    words = pa.array(vocab)
    text_parts = [words.take(rng.integers(0, len(vocab), size=n)) for _ in range(_WORDS_PER_TEXT)]
    return pa.table(
        {
            "id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
            "a": rng.standard_normal(n),
            "b": rng.standard_normal(n),
            "c": pa.array(rng.integers(-5, 6, size=n).astype(np.int32)),
            "cat": pa.array(CATEGORIES).take(rng.integers(0, len(CATEGORIES), size=n)),
            "text": pc.binary_join_element_wise(*text_parts, " "),
        }
    )


def _write_files(out: Path, sizes: list[int], seed: tuple[int, ...], row_group_rows: int) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    out.mkdir(parents=True)
    vocab = _vocabulary(np.random.default_rng([*seed, 0]))
    first_id = 0
    for i, n in enumerate(sizes):
        rng = np.random.default_rng([*seed, 1, i])
        table = _table(rng, first_id, n, vocab)
        pq.write_table(table, out / f"part-{i:05d}.parquet", row_group_size=row_group_rows)
        first_id += n


def _write_main(spec: DataSpec, out: Path) -> None:
    _write_files(out, _split(spec.rows, spec.files), (spec.seed, 0), spec.row_group_rows)


def _write_small(spec: DataSpec, out: Path) -> None:
    sizes = [spec.small_file_rows] * spec.small_files
    _write_files(out, sizes, (spec.seed, 1), spec.small_file_rows)
