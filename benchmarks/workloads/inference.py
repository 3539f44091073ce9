"""inference: read_parquet → preprocess (CPU) → Model class (numpy MLP, 2 actors) → write_parquet.

The model is a callable class built once per actor (its weights come from a
seeded generator, standing in for loading a checkpoint) and runs on a pool of
two: dataflow's and Ray Data's ``map_batches(Model, concurrency=2)``, Daft's
``@daft.cls(max_concurrency=2)``, and one model per process for pyarrow-mp.
Scores are float64 so that the checksum does not depend on batch boundaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.workloads import Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import numpy as np

COLUMNS = ["id", "a", "b", "c"]
FEATURES = ["f0", "f1", "f2", "f3"]
BATCH = 16_384
"""Rows per model call, the same for every engine."""
HIDDEN = 64


def preprocess(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The CPU stage: four float64 features per row (Daft runs the same as expressions)."""
    a, b = batch["a"], batch["b"]
    return {"id": batch["id"], "f0": a, "f1": b, "f2": batch["c"] / 100.0, "f3": a * b}


class Model:
    """A two-layer MLP (4 → 64 → 1, ReLU) with seeded weights; ``dict`` batch in, scores out."""

    def __init__(self) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.w1 = rng.standard_normal((len(FEATURES), HIDDEN)) / 2
        self.b1 = rng.standard_normal(HIDDEN) / 10
        self.w2 = rng.standard_normal((HIDDEN, 1)) / 8

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of an ``(n, 4)`` feature matrix."""
        import numpy as np

        return (np.maximum(features @ self.w1 + self.b1, 0.0) @ self.w2)[:, 0]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        features = np.stack([batch[f] for f in FEATURES], axis=1)
        return {"id": batch["id"], "score": self.score(features)}


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    ds = ds.map_batches(preprocess, batch_size=None)
    ds = ds.map_batches(Model, concurrency=2, batch_size=BATCH)
    ds.write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    ds = ds.map_batches(preprocess, batch_size=None, batch_format="numpy")
    # Half a CPU per actor: with Ray's default of one, two actors hold both CPUs of a
    # 2-core machine and the read tasks never run (6,000 rows timed out after 240 s).
    ds = ds.map_batches(Model, concurrency=2, num_cpus=0.5, batch_size=BATCH, batch_format="numpy")
    ds.write_parquet(str(ctx.out_dir))


def _daft(ctx: RunContext) -> None:
    import daft
    from daft import DataType, col

    @daft.cls(max_concurrency=2)
    class DaftModel(Model):
        @daft.method.batch(return_dtype=DataType.float64(), batch_size=BATCH)
        def predict(self, *features: Any) -> Any:
            import numpy as np

            return self.score(np.stack([f.to_arrow().to_numpy() for f in features], axis=1))

    frame = daft.read_parquet(list(ctx.data.main_files)).select(*COLUMNS)
    frame = frame.select(
        col("id"),
        col("a").alias("f0"),
        col("b").alias("f1"),
        (col("c").cast(DataType.float64()) / 100.0).alias("f2"),
        (col("a") * col("b")).alias("f3"),
    )
    model = DaftModel()
    frame = frame.select(col("id"), model.predict(*(col(f) for f in FEATURES)).alias("score"))
    frame.write_parquet(str(ctx.out_dir))


_process_model: Model | None = None


def _infer_file(path: str, out: Path) -> None:
    """The pyarrow-mp reference: one file through both stages, one model per process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    global _process_model
    if _process_model is None:
        _process_model = Model()
    table = pq.read_table(path, columns=COLUMNS)
    batch = preprocess({name: table[name].to_numpy() for name in COLUMNS})
    parts = [
        _process_model({k: v[start : start + BATCH] for k, v in batch.items()})
        for start in range(0, table.num_rows, BATCH)
    ]
    scored = pa.concat_tables(pa.table(p) for p in parts)
    pq.write_table(scored, out / Path(path).name)


def _pyarrow_mp(ctx: RunContext) -> None:
    ctx.handle.starmap(_infer_file, [(path, ctx.out_dir) for path in ctx.data.main_files])


def _check(ctx: RunContext) -> Result:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(str(ctx.out_dir), format="parquet").to_table(columns=["id", "score"])
    return Result(
        rows=ctx.data.rows,
        checksum=checksum(
            rows=table.num_rows,
            sum_id=pc.sum(table["id"]).as_py() or 0,
            sum_score=float(pc.sum(table["score"]).as_py() or 0.0),
        ),
    )


WORKLOAD = Workload(
    name="inference",
    description="read_parquet → preprocess (CPU) → Model class (numpy MLP, concurrency=2) → write_parquet",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow-mp": _pyarrow_mp},
    check=_check,
)
