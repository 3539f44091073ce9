"""A batch ETL pipeline that runs unchanged on a laptop and on a Ray cluster.

Nothing in it names a backend: ``DATAFLOW_BACKEND`` picks one when the first
pipeline runs (``local`` by default; ``ray`` joins the cluster in
``DATAFLOW_RAY_ADDRESS`` or ``RAY_ADDRESS``, which Ray sets for a job's
entrypoint). Inputs and outputs must be reachable from every node (object
storage or a shared filesystem).

    python examples/ray_pipeline.py --input data/ --output out/
    DATAFLOW_BACKEND=ray DATAFLOW_RAY_ADDRESS=auto python examples/ray_pipeline.py \\
        --input s3://bucket/orders/ --output s3://bucket/orders-clean/
    # on Kubernetes: examples/ray-job.yaml (KubeRay RayJob) runs this file
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import dataflow as df


def add_total(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``total = price * quantity`` for each row (a vectorized batch UDF)."""
    return {**batch, "total": batch["price"] * batch["quantity"]}


def main(argv: list[str] | None = None) -> int:
    """Read ``--input`` (Parquet), add ``total``, keep positive totals, write ``--output``;
    returns the number of rows written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="Parquet files: a path, glob or URL")
    parser.add_argument("--output", required=True, help="a directory or URL for the Parquet output")
    args = parser.parse_args(argv)

    ds = df.read_parquet(args.input, columns=["order_id", "price", "quantity"])
    ds = ds.map_batches(add_total, batch_format="numpy").filter(expr="total > 0")
    ds.write_parquet(args.output)
    written = df.read_parquet(args.output).count()
    print(f"wrote {written} rows to {args.output}")
    print(ds.stats())
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
