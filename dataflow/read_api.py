"""Dataset constructors: ``range``, ``from_*`` for in-memory data, ``read_*`` for sources.

>>> import dataflow as df
>>> df.range(3).take_all()  # doctest: +SKIP
[{'id': 0}, {'id': 1}, {'id': 2}]
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy, concat, pandas_to_table, rows_to_table
from dataflow.compat import parallelism_arg
from dataflow.context import DataContext
from dataflow.dataset import Dataset
from dataflow.errors import PlanError
from dataflow.plan.logical import InputData, Read
from dataflow.read_files import (
    check_num_blocks,
    pushdown_args,
    read_avro,
    read_binary_files,
    read_csv,
    read_dataset,
    read_images,
    read_json,
    read_numpy,
    read_orc,
    read_parquet,
    read_text,
)
from dataflow.sources.datasource import Datasource
from dataflow.sources.range import RangeDatasource
from runtime.resources import detect_num_cpus

if TYPE_CHECKING:
    import pandas as pd


def _default_num_blocks(num_rows: int) -> int:
    """Enough blocks to keep every CPU busy, never more than rows."""
    per_cpu = DataContext.get_current().read_parallelism_factor
    return max(1, min(num_rows, per_cpu * detect_num_cpus()))


def _split_table(table: pa.Table, num_blocks: int) -> tuple[pa.Table, ...]:
    n = table.num_rows
    if num_blocks <= 1 or n <= 1:
        return (table,)
    bounds = [n * i // num_blocks for i in builtins.range(num_blocks + 1)]
    return tuple(table.slice(a, b - a) for a, b in zip(bounds, bounds[1:]) if b > a)


def read_datasource(datasource: Datasource, *, override_num_blocks: int | None = None) -> Dataset:
    """A Dataset reading from a user-defined ``Datasource``.

    >>> from dataflow.sources.range import RangeDatasource
    >>> read_datasource(RangeDatasource(5))
    Dataset(read_range)
    """
    if not callable(getattr(datasource, "get_read_tasks", None)):
        raise PlanError(
            f"read_datasource: expected a dataflow.sources.datasource.Datasource, got "
            f"{type(datasource).__name__} (it needs get_read_tasks)"
        )
    check_num_blocks("read_datasource", override_num_blocks)
    return Dataset(Read(datasource, parallelism=override_num_blocks))


def range(  # noqa: A001
    n: int,
    *,
    parallelism: int = -1,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """The integers ``0..n-1`` in an int64 column ``id``, in ``override_num_blocks``
    blocks (``parallelism`` is Ray's older name), read by at most
    ``concurrency`` tasks at once.

    >>> range(10**10).limit(2)
    Dataset(read_range -> limit(2))
    """
    _check_count("range", n)
    return read_dataset(
        "range",
        RangeDatasource(n),
        parallelism=parallelism,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )


def range_tensor(
    n: int,
    *,
    shape: tuple[int, ...] = (1,),
    parallelism: int = -1,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """Rows ``i = 0..n-1`` as tensors ``np.full(shape, i)`` (int64) in column
    ``data`` (blocks and ``concurrency`` as in ``range``).

    >>> range_tensor(4, shape=(2, 2))
    Dataset(read_range_tensor)
    """
    _check_count("range_tensor", n)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise PlanError(f"range_tensor: shape must be a tuple of positive ints, got {shape!r}")
    return read_dataset(
        "range_tensor",
        RangeDatasource(n, shape),
        parallelism=parallelism,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )


def _check_count(where: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise PlanError(f"{where}: n must be a non-negative int, got {n!r}")


def from_items(
    items: Sequence[Any], *, parallelism: int = -1, override_num_blocks: int | None = None
) -> Dataset:
    """A Dataset of Python objects: dicts become rows; other values go in column
    ``item``; ``override_num_blocks`` blocks (``parallelism``: Ray's older name).

    >>> from_items([{"a": 1}, {"a": 2}])
    Dataset(from_blocks)
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise PlanError(
            f"from_items: expected a list of dicts or values, got {type(items).__name__}"
        )
    override_num_blocks = parallelism_arg("from_items", parallelism, override_num_blocks)
    check_num_blocks("from_items", override_num_blocks)
    items = list(items)
    if not items:
        return Dataset(InputData(blocks=()))
    dicts = [isinstance(x, Mapping) for x in items]
    if all(dicts):
        table = rows_to_table(items, "from_items")
    elif not any(dicts):
        table = rows_to_table([{"item": x} for x in items], "from_items")
    else:
        raise PlanError(
            "from_items: mix of dicts and plain values; pass either rows (dicts) or values"
        )
    num_blocks = override_num_blocks or _default_num_blocks(table.num_rows)
    return Dataset(InputData(blocks=_split_table(table, num_blocks)))


def _as_list(where: str, obj: Any, kind: type | tuple[type, ...]) -> list:
    objs = list(obj) if isinstance(obj, list) else [obj]
    bad = [type(o).__name__ for o in objs if not isinstance(o, kind)]
    if bad:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PlanError(f"{where}: expected {names} or a list of them, got {bad[0]}")
    return objs


def from_pandas(
    dfs: pd.DataFrame | list[pd.DataFrame], override_num_blocks: int | None = None
) -> Dataset:
    """One block per DataFrame (the index is dropped), or, with
    ``override_num_blocks``, all the rows re-cut into that many blocks.

    >>> import pandas as pd
    >>> from_pandas(pd.DataFrame({"a": [1, 2]}))
    Dataset(from_blocks)
    """
    import pandas as pd  # on use: pandas doubles the cost of `import dataflow`

    check_num_blocks("from_pandas", override_num_blocks)
    frames = _as_list("from_pandas", dfs, pd.DataFrame)
    blocks = tuple(pandas_to_table(f) for f in frames)
    return Dataset(InputData(blocks=_recut(blocks, override_num_blocks)))


def from_arrow(
    tables: pa.Table | pa.RecordBatch | bytes | list,
    *,
    override_num_blocks: int | None = None,
) -> Dataset:
    """One block per Arrow table (a record batch, or ``bytes`` holding an Arrow
    IPC stream, as Ray's), or, with ``override_num_blocks``, all the rows re-cut
    into that many blocks.

    >>> from_arrow(pa.table({"a": [1, 2]}))
    Dataset(from_blocks)
    """
    check_num_blocks("from_arrow", override_num_blocks)
    objs = _as_list("from_arrow", tables, (pa.Table, pa.RecordBatch, bytes))
    blocks = tuple(_arrow_block(o) for o in objs)
    return Dataset(InputData(blocks=_recut(blocks, override_num_blocks)))


def _arrow_block(obj: pa.Table | pa.RecordBatch | bytes) -> pa.Table:
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if isinstance(obj, bytes):
        try:
            return pa.ipc.open_stream(obj).read_all()
        except pa.ArrowInvalid as e:
            raise PlanError(
                f"from_arrow: bytes must hold an Arrow IPC stream (a serialized table): {e}"
            ) from e
    return obj


def _recut(blocks: tuple[pa.Table, ...], num_blocks: int | None) -> tuple[pa.Table, ...]:
    """``blocks`` as they are, or their rows in ``num_blocks`` near-equal blocks."""
    if num_blocks is None or not blocks:
        return blocks
    return _split_table(concat(list(blocks)), num_blocks)


def from_numpy(ndarrays: np.ndarray | list[np.ndarray]) -> Dataset:
    """Arrays in column ``data`` (N-d arrays become tensor columns); a list gives one
    block per array.

    >>> from_numpy(np.zeros((4, 2)))
    Dataset(from_blocks)
    """
    arrays = _as_list("from_numpy", ndarrays, np.ndarray)
    for a in arrays:
        if a.ndim == 0:
            raise PlanError("from_numpy: got a 0-d array; pass at least one dimension (rows)")
    return Dataset(
        InputData(blocks=tuple(pa.table({"data": array_from_numpy(a, "data")}) for a in arrays))
    )


def from_huggingface(
    dataset: Any,
    parallelism: int = -1,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """A Hugging Face ``datasets.Dataset`` (needs ``datasets``), read as zero-copy
    row ranges of its Arrow table, or a ``datasets.IterableDataset``, streamed.
    Columns keep the Arrow types ``datasets`` stores (an ``Image()`` column is
    ``struct<bytes, path>``, as in Ray Data).

    >>> from_huggingface(datasets.load_from_disk("imdb/train"))  # doctest: +SKIP
    Dataset(read_huggingface)
    """
    from dataflow.sources.huggingface import HuggingFaceDatasource

    return read_dataset(
        "from_huggingface",
        HuggingFaceDatasource(dataset),
        parallelism=parallelism,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )


# -- tables and other formats (the file readers are in read_files.py) ---------------


def read_delta(
    path: str,
    version: int | str | Any = None,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    storage_options: dict[str, str] | None = None,
    filesystem: Any = None,
    include_paths: bool = False,
    override_num_blocks: int | None = None,
) -> Dataset:
    """A Delta Lake table (needs ``dataflow[deltalake]``) at ``version`` (a number,
    or a datetime / ISO time for the version then current; None: the latest).

    ``columns`` and ``filter`` are pushed down: files whose partition values or
    statistics in the log cannot match are never opened, then row groups are
    pruned as in ``read_parquet``. ``storage_options`` go to ``deltalake``
    (credentials for object stores); ``filesystem`` reads the data files.

    >>> read_delta("s3://bucket/events", version=3, filter=col("day") == "2024-01-01")  # doctest: +SKIP
    Dataset(read_delta)
    """
    from dataflow.sources.delta import DeltaDatasource

    check_num_blocks("read_delta", override_num_blocks)
    filter, columns = pushdown_args("read_delta", filter, columns)
    source = DeltaDatasource(
        path,
        version=version,
        storage_options=storage_options,
        filesystem=filesystem,
        include_paths=include_paths,
    )
    return Dataset(Read(source, parallelism=override_num_blocks, columns=columns, predicate=filter))


def read_iceberg(
    *,
    table_identifier: str,
    row_filter: Any = None,
    selected_fields: Sequence[str] = ("*",),
    snapshot_id: int | None = None,
    scan_kwargs: dict[str, Any] | None = None,
    catalog_kwargs: dict[str, Any] | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """An Apache Iceberg table (needs ``dataflow[iceberg]``) from its catalog:
    ``catalog_kwargs`` name it (``name``, default "default") and configure it
    (``pyiceberg.catalog.load_catalog``'s properties); ``snapshot_id`` picks a
    snapshot (time travel). ``row_filter`` (Iceberg's string syntax, a pyiceberg
    expression or a ``col(...)`` expression) and ``selected_fields`` go to
    pyiceberg's scan planning, which prunes files by partition values and column
    metrics; a later ``.filter(expr=...)`` or ``select_columns`` is pushed there too.

    >>> read_iceberg(table_identifier="db.events", row_filter="id < 100",
    ...              catalog_kwargs={"name": "default", "type": "sql", "uri": "sqlite:///c.db"})  # doctest: +SKIP
    Dataset(read_iceberg)
    """
    from dataflow.sources.iceberg import IcebergDatasource

    check_num_blocks("read_iceberg", override_num_blocks)
    source = IcebergDatasource(
        table_identifier,
        row_filter=row_filter,
        selected_fields=selected_fields,
        snapshot_id=snapshot_id,
        scan_kwargs=scan_kwargs,
        catalog_kwargs=catalog_kwargs,
    )
    return Dataset(Read(source, parallelism=override_num_blocks))


def read_lance(
    uri: str,
    *,
    version: int | str | None = None,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    storage_options: dict[str, str] | None = None,
    scanner_options: dict[str, Any] | None = None,
    override_num_blocks: int | None = None,
) -> Dataset:
    """A Lance dataset (needs ``dataflow[lance]``) at ``version`` (a number or a
    tag; None: the latest); each fragment group is a read task.

    ``columns`` and ``filter`` are pushed into Lance's scanner. ``filter`` is a
    ``col(...)`` expression, a dataflow string (``"a > 0 and b == 'x'"``) or,
    if it is not one, Lance SQL (``"a > 0 AND b = 'x'"``, as in Ray Data).

    >>> read_lance("/data/items.lance", columns=["id"], filter="id < 10")  # doctest: +SKIP
    Dataset(read_lance)
    """
    from dataflow.expressions import parse
    from dataflow.sources.lance import LanceDatasource

    check_num_blocks("read_lance", override_num_blocks)
    sql = None
    if isinstance(filter, str):
        try:
            filter = parse(filter)
        except PlanError:
            sql, filter = filter, None  # not a dataflow expression: Lance SQL
    filter, columns = pushdown_args("read_lance", filter, columns)
    source = LanceDatasource(
        uri,
        version=version,
        sql_filter=sql,
        storage_options=storage_options,
        scanner_options=scanner_options,
    )
    return Dataset(Read(source, parallelism=override_num_blocks, columns=columns, predicate=filter))


def read_tfrecords(
    paths: str | Sequence[str],
    *,
    schema: pa.Schema | None = None,
    verify_crc: bool = True,
    tf_schema: Any = None,
    override_num_blocks: int | None = None,
    **kwargs: Any,
) -> Dataset:
    """``tf.train.Example`` records of TFRecord files, decoded without TensorFlow.

    A feature with one value per record becomes a scalar column (``int64``,
    ``float32``, ``binary``), one with several a list column, as in Ray Data;
    ``schema=pa.schema(...)`` fixes the columns and types instead. Every
    record's CRCs are checked (``verify_crc``). ``filesystem``,
    ``include_paths``, ``partitioning`` and ``file_extensions`` pass through.

    >>> read_tfrecords("train-*.tfrecords").select_columns(["label"])  # doctest: +SKIP
    Dataset(read_tfrecords -> select_columns(label))
    """
    from dataflow.sources.tfrecords import TFRecordDatasource

    if tf_schema is not None:
        raise PlanError(
            "read_tfrecords: tf_schema (a tensorflow_metadata Schema) needs TensorFlow; pass "
            "schema=pa.schema([...]) with int64 / float32 / binary (or list of them) columns"
        )
    source = TFRecordDatasource(paths, schema=schema, verify_crc=verify_crc, **kwargs)
    return read_dataset("read_tfrecords", source, override_num_blocks=override_num_blocks)


def read_webdataset(
    paths: str | Sequence[str],
    *,
    decoder: Any = True,
    fileselect: Any = None,
    filerename: Any = None,
    suffixes: Any = None,
    expand_json: bool = False,
    override_num_blocks: int | None = None,
    **kwargs: Any,
) -> Dataset:
    """WebDataset tar shards, one row per sample: ``__key__``, ``__url__`` and one
    column per member suffix (``jpg``, ``cls``, ``json``...).

    ``decoder=True`` decodes images to HWC uint8 arrays (needs Pillow), ``.json``,
    ``.txt``, ``.cls`` and ``.npy``; ``False`` keeps bytes; a callable (or a list,
    ``True`` standing for the default) maps a sample dict to a sample dict.
    ``fileselect``/``suffixes`` pick members, ``filerename`` renames them.
    Shards are streamed one at a time. ``filesystem``, ``include_paths`` and
    ``file_extensions`` pass through.

    >>> ds = read_webdataset("s3://bucket/train-{0000..0099}.tar")  # doctest: +SKIP
    >>> ds = read_webdataset("shards/").select_columns(["jpg", "cls"])  # doctest: +SKIP
    """
    from dataflow.sources.webdataset import WebDatasetDatasource

    source = WebDatasetDatasource(
        paths,
        decoder=decoder,
        fileselect=fileselect,
        filerename=filerename,
        suffixes=suffixes,
        expand_json=expand_json,
        **kwargs,
    )
    return read_dataset("read_webdataset", source, override_num_blocks=override_num_blocks)


def read_sql(
    sql: str,
    connection_factory: Callable[[], Any],
    *,
    sql_params: Any = None,
    shard_keys: Sequence[str] | None = None,
    shard_hash_fn: str = "MD5",
    override_num_blocks: int | None = None,
) -> Dataset:
    """The rows of a SQL query over any DB-API 2 connection (sqlite3, psycopg,
    pymysql, ...); ``connection_factory`` makes one connection per read task.

    With ``shard_keys``, ``override_num_blocks`` tasks read in parallel: a single
    numeric key is split into ranges from its MIN/MAX, other keys are hashed
    (``MOD(ABS(shard_hash_fn(key)), n)``, as Ray Data does). Selected columns,
    filters on columns and limits are pushed into the query (see ``explain()``).

    >>> read_sql("SELECT * FROM events", lambda: sqlite3.connect("app.db"),
    ...          shard_keys=["id"], override_num_blocks=4)  # doctest: +SKIP
    Dataset(read_sql)
    """
    from dataflow.sources.sql import SQLDatasource

    check_num_blocks("read_sql", override_num_blocks)
    keys = [shard_keys] if isinstance(shard_keys, str) else list(shard_keys or [])
    source = SQLDatasource(
        sql,
        connection_factory,
        sql_params=sql_params,
        shard_keys=keys,
        shard_hash_fn=shard_hash_fn,
    )
    return Dataset(Read(source, parallelism=override_num_blocks))


__all__ = [
    "from_arrow",
    "from_huggingface",
    "from_items",
    "from_numpy",
    "from_pandas",
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
]
