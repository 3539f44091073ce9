"""``dataflow demo``: the README's main job, end to end on this machine.

1. Generate a sample dataset once (deterministic; ~1 M rows, ~75 MB of Parquet
   in 16 files) under the user's cache directory.
2. ``read_parquet`` (projection pushed into the scan) → ``map_batches``
   (standardize 16 feature columns into one ``features`` tensor column) →
   ``filter`` (drop the ``spam`` category).
3. Train a logistic regression on it with a PyTorch batch loop.
4. ``write_parquet`` the same pipeline's output (atomic commit).

Each run shows live progress bars in a terminal and prints its stats table.
No GPU and no network needed.

>>> run_demo(rows=20_000)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    import dataflow as df

NUM_FEATURES = 16
DEFAULT_ROWS = 1_000_000
NUM_FILES = 16
CATEGORIES = ("web", "mobile", "api", "spam")
_VERSION = "v1"
"""Bump when the generated data changes, so old caches are not reused."""
_DONE = "_COMPLETE"


def default_cache_dir() -> Path:
    """``$DATAFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/dataflow``, else ``~/.cache/dataflow``."""
    explicit = os.environ.get("DATAFLOW_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dataflow"


def true_weights() -> np.ndarray:
    """The hidden weights that define ``label``: the model should find them."""
    return np.random.default_rng(1234).normal(size=NUM_FEATURES).astype(np.float32)


def generate_sample(root: Path, rows: int = DEFAULT_ROWS, files: int = NUM_FILES) -> Path:
    """Write the sample dataset under ``root`` (once: reused while complete).

    Columns: ``id`` (int64), ``category`` (string; a quarter is ``"spam"``),
    ``f0`` … ``f15`` (float32, feature ``i`` has mean ``i`` and scale ``1 + i/4``)
    and ``label`` (int64, 1 where the standardized features dot ``true_weights()``
    is positive, with 5 % of labels flipped). Returns the dataset directory.

    >>> generate_sample(Path("/tmp/demo"), rows=1000)  # doctest: +SKIP
    PosixPath('/tmp/demo/sample-v1-1000')
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < files:
        raise ValueError(f"generate_sample: rows={rows} must be at least files={files}")
    out = root / f"sample-{_VERSION}-{rows}"
    if (out / _DONE).exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    # Build in a private temp dir, then rename: a crash or a concurrent demo
    # never leaves (or reads) a half-written dataset.
    staging = Path(tempfile.mkdtemp(prefix=".sample-", dir=root))
    try:
        rng = np.random.default_rng(0)
        w = true_weights()
        means = np.arange(NUM_FEATURES, dtype=np.float32)
        scales = 1 + means / 4
        bounds = np.linspace(0, rows, files + 1).astype(np.int64)
        for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            n = int(hi - lo)
            z = rng.standard_normal((n, NUM_FEATURES), dtype=np.float32)
            label = (z @ w > 0) ^ (rng.random(n) < 0.05)
            columns: dict[str, Any] = {
                "id": np.arange(lo, hi, dtype=np.int64),
                "category": rng.choice(np.array(CATEGORIES), size=n),
            }
            for i in range(NUM_FEATURES):
                columns[f"f{i}"] = z[:, i] * scales[i] + means[i]
            columns["label"] = label.astype(np.int64)
            pq.write_table(pa.table(columns), staging / f"part-{k:03d}.parquet")
        (staging / _DONE).write_text(f"{rows} rows\n")
        try:
            staging.rename(out)
        except OSError:  # another demo finished first: use its copy
            if not (out / _DONE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def standardize(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``f0..f15`` → one ``features`` column (rows of 16 float32, ~zero mean,
    unit scale); keeps ``id``, ``category`` and ``label``."""
    means = np.arange(NUM_FEATURES, dtype=np.float32)
    x = np.stack([batch[f"f{i}"] for i in range(NUM_FEATURES)], axis=1)
    features = ((x - means) / (1 + means / 4)).astype(np.float32)
    return {
        "id": batch["id"],
        "category": batch["category"],
        "features": features,
        "label": batch["label"],
    }


def build_pipeline(data_dir: Path) -> df.Dataset:
    """read_parquet → map_batches(standardize) → filter(category != 'spam')."""
    import dataflow as df

    columns = ["id", "category", *(f"f{i}" for i in range(NUM_FEATURES)), "label"]
    ds = df.read_parquet(str(data_dir), columns=columns)
    # A vectorized UDF: big batches keep per-batch overhead (and output files) few.
    ds = ds.map_batches(standardize, batch_format="numpy", batch_size=16_384)
    return ds.filter(expr="category != 'spam'")


@dataclass
class DemoResult:
    """What the demo measured."""

    rows_trained: int
    loss: float
    accuracy: float
    train_s: float
    rows_written: int
    write_s: float
    output_dir: Path
    train_stats: str
    write_stats: str


def train(ds: df.Dataset, batch_size: int = 4096) -> tuple[int, float, float, str]:
    """One epoch of logistic regression over ``ds``: (rows, mean loss, accuracy
    of the predictions made before each step, the run's stats table)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(NUM_FEATURES, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rows, loss_sum, correct = 0, 0.0, 0
    inputs = ds.select_columns(["features", "label"])
    for batch in inputs.iter_torch_batches(batch_size=batch_size, dtypes={"label": torch.float32}):
        x, y = batch["features"], batch["label"]
        logits = model(x).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n = len(y)
        rows += n
        loss_sum += loss.item() * n
        correct += int(((logits > 0).float() == y).sum())
    if not rows:
        raise RuntimeError("dataflow demo: the pipeline produced no rows to train on")
    return rows, loss_sum / rows, correct / rows, inputs.stats()


def run_demo(
    rows: int = DEFAULT_ROWS,
    cache_dir: Path | None = None,
    output_dir: Path | None = None,
    out: TextIO | None = None,
) -> DemoResult:
    """Generate (or reuse) the sample, train over the pipeline, write it, and
    print what happened to ``out`` (default stdout)."""
    import pyarrow.parquet as pq

    out = out if out is not None else sys.stdout
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    t0 = time.perf_counter()
    data_dir = generate_sample(cache, rows)
    size = sum(p.stat().st_size for p in data_dir.glob("*.parquet"))
    print(
        f"sample data: {data_dir} ({rows:,} rows, {size / 2**20:.0f} MiB of Parquet, "
        f"ready in {time.perf_counter() - t0:.1f} s)",
        file=out,
    )
    ds = build_pipeline(data_dir)
    print(f"pipeline: {ds}", file=out, flush=True)

    t0 = time.perf_counter()
    trained, loss, accuracy, train_stats = train(ds)
    train_s = time.perf_counter() - t0
    print(
        f"\ntrained a logistic regression on {trained:,} rows in {train_s:.1f} s "
        f"({trained / train_s:,.0f} rows/s): mean loss {loss:.3f}, accuracy {accuracy:.1%}",
        file=out,
    )
    print(train_stats, file=out, flush=True)

    dest = output_dir if output_dir is not None else cache / "demo-output"
    t0 = time.perf_counter()
    ds.write_parquet(str(dest), mode="overwrite")
    write_s = time.perf_counter() - t0
    written = sum(pq.read_metadata(p).num_rows for p in dest.rglob("*.parquet"))
    write_stats = ds.stats()
    print(f"\nwrote {written:,} rows to {dest} in {write_s:.1f} s", file=out)
    print(write_stats, file=out, flush=True)
    return DemoResult(
        trained, loss, accuracy, train_s, written, write_s, dest, train_stats, write_stats
    )
