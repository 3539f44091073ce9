"""etl_ray: the ``etl`` workload on one local Ray: dataflow's ray backend
(engine ``dataflow-ray``) against Ray Data (engine ``ray``), same Ray settings.

    python -m benchmarks run etl_ray --engines dataflow-ray,ray --repeat 3
"""

from __future__ import annotations

from benchmarks.workloads import Workload
from benchmarks.workloads.etl import WORKLOAD as ETL

WORKLOAD = Workload(
    name="etl_ray",
    description=f"{ETL.description}, dataflow on Ray vs Ray Data",
    dataset="main",
    runs={"dataflow-ray": ETL.runs["dataflow"], "ray": ETL.runs["ray"]},
    check=ETL.check,
)
