"""dataflow: a streaming dataset engine for Python (Ray Data's API, Daft's speed bar).

>>> import dataflow as df
>>> df.range(10).filter(expr="id > 5").map_batches(lambda b: b)
Dataset(read_range -> filter(id > 5) -> map_batches(<lambda>))
"""

from __future__ import annotations

from dataflow.compat import ActorPoolStrategy, TaskPoolStrategy
from dataflow.context import DataContext
from dataflow.dataset import Dataset
from dataflow.errors import (
    DataflowError,
    MemoryLimitError,
    PlanError,
    ResourceError,
    SourceError,
    SpillError,
    UserCodeError,
    WorkerCrashedError,
)
from dataflow.expressions import Expr, col, lit
from dataflow.iterators import DataIterator
from dataflow.plan.optimizer import OptimizerFlags
from dataflow.plot import plot_stats
from dataflow.read_api import (
    from_arrow,
    from_huggingface,
    from_items,
    from_numpy,
    from_pandas,
    range,
    range_tensor,
    read_avro,
    read_binary_files,
    read_csv,
    read_datasource,
    read_delta,
    read_iceberg,
    read_images,
    read_json,
    read_lance,
    read_numpy,
    read_orc,
    read_parquet,
    read_sql,
    read_text,
    read_tfrecords,
    read_webdataset,
)
from dataflow.read_interop import from_daft, from_dask, from_torch
from dataflow.service.connect import connect
from dataflow.session import init, shutdown
from dataflow.sources.datasource import BlockMetadata, Datasink, Datasource, ReadTask, WriteResult
from dataflow.sources.paths import FileShuffleConfig

__version__ = "0.1.0"

__all__ = [
    "ActorPoolStrategy",
    "FileShuffleConfig",
    "TaskPoolStrategy",
    "BlockMetadata",
    "DataContext",
    "DataIterator",
    "Datasink",
    "Datasource",
    "Dataset",
    "DataflowError",
    "Expr",
    "MemoryLimitError",
    "OptimizerFlags",
    "PlanError",
    "ReadTask",
    "ResourceError",
    "SourceError",
    "SpillError",
    "UserCodeError",
    "WorkerCrashedError",
    "WriteResult",
    "__version__",
    "col",
    "connect",
    "from_arrow",
    "from_daft",
    "from_dask",
    "from_huggingface",
    "from_items",
    "from_numpy",
    "from_pandas",
    "from_torch",
    "init",
    "lit",
    "plot_stats",
    "range",
    "range_tensor",
    "read_avro",
    "read_binary_files",
    "read_csv",
    "read_datasource",
    "read_delta",
    "read_iceberg",
    "read_images",
    "read_json",
    "read_lance",
    "read_numpy",
    "read_orc",
    "read_parquet",
    "read_sql",
    "read_text",
    "read_tfrecords",
    "read_webdataset",
    "shutdown",
]
