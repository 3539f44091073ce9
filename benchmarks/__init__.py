"""Side-by-side benchmarks of dataflow against Daft, Ray Data and a pyarrow reference.

``python -m benchmarks list`` names the workloads, ``python -m benchmarks data``
builds the seeded datasets and ``python -m benchmarks run etl --engines
dataflow,daft`` measures them, each run in a fresh process (see README.md).
"""
