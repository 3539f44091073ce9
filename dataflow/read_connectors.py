"""The table, query and archive readers (``read_delta``, ``read_iceberg``,
``read_lance``, ``read_sql``, ``read_tfrecords``, ``read_webdataset``) and
``read_datasource``, with Ray Data's per-read parameters: ``parallelism`` /
``override_num_blocks`` (how many read tasks), ``concurrency`` (read tasks at
once), ``num_cpus`` / ``num_gpus`` / ``memory`` / ``resources`` /
``ray_remote_args`` (what each reserves); Ray-only ones (``label_selector``,
``runtime_env``...) are refused by name (``dataflow.compat``). Each library is
imported when its reader is called.

>>> import dataflow as df
>>> df.read_sql("SELECT 1 AS x", lambda: sqlite3.connect(":memory:"), concurrency=1)  # doctest: +SKIP
Dataset(read_sql)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import pyarrow as pa

from dataflow.compat import ActorPoolStrategy, TaskPoolStrategy, check_ray_only
from dataflow.dataset import Dataset
from dataflow.errors import PlanError
from dataflow.read_files import pushdown_args, read_dataset, read_task_args
from dataflow.sources.datasource import Datasource
from dataflow.sources.paths import FileShuffleConfig


def read_datasource(
    datasource: Datasource,
    *,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    concurrency: int | None = None,
    compute: TaskPoolStrategy | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    **read_args: Any,
) -> Dataset:
    """A Dataset reading from a user-defined ``Datasource``. ``compute`` may be
    ``TaskPoolStrategy(size=n)`` (same as ``concurrency=n``); ``read_args`` go
    to ``get_read_tasks`` as keywords.

    >>> from dataflow.sources.range import RangeDatasource
    >>> read_datasource(RangeDatasource(5))
    Dataset(read_range)
    """
    where = "read_datasource"
    if not callable(getattr(datasource, "get_read_tasks", None)):
        raise PlanError(
            f"{where}: expected a dataflow.sources.datasource.Datasource, got "
            f"{type(datasource).__name__} (it needs get_read_tasks)"
        )
    if compute is not None:
        if isinstance(compute, ActorPoolStrategy) or compute == "actors":
            raise PlanError(f"{where}: reads run as tasks; compute={compute!r} needs a map stage")
        if not isinstance(compute, TaskPoolStrategy) and compute != "tasks":
            raise PlanError(f"{where}: compute must be a TaskPoolStrategy, got {compute!r}")
        size = getattr(compute, "size", None)
        if size is not None and concurrency is not None and size != concurrency:
            raise PlanError(f"{where}: compute size {size} and concurrency={concurrency} differ")
        concurrency = concurrency if size is None else size
    if read_args:
        datasource = _WithReadArgs(datasource, read_args)
    return read_dataset(where, datasource, **read_task_args(locals()))


class _WithReadArgs(Datasource):
    """A datasource whose ``get_read_tasks`` gets Ray's ``**read_args`` too."""

    def __init__(self, inner: Datasource, read_args: dict[str, Any]) -> None:
        self.inner = inner
        self.read_args = dict(read_args)

    def __getattr__(self, name: str) -> Any:  # schema, num_rows, flags... of the inner one
        if name in ("inner", "read_args"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def get_name(self) -> str:
        return self.inner.get_name()

    def schema(self) -> pa.Schema | None:
        return self.inner.schema()

    def num_rows(self) -> int | None:
        return self.inner.num_rows()

    def estimate_inmemory_data_size(self) -> int | None:
        return self.inner.estimate_inmemory_data_size()

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[Any]:
        return self.inner.get_read_tasks(parallelism, **pushdown, **self.read_args)


def read_delta(
    path: str,
    version: int | str | Any = None,
    *,
    storage_options: dict[str, str] | None = None,
    filesystem: Any = None,
    catalog: Any = None,
    columns: Sequence[str] | None = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    shuffle: Literal["files"] | None = None,
    include_paths: bool = False,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    filter: Any = None,
    **arrow_parquet_args: Any,
) -> Dataset:
    """A Delta Lake table (needs ``dataflow[deltalake]``) at ``version`` (a number,
    or a datetime / ISO time for the version then current; None: the latest).

    ``columns`` and ``filter`` are pushed down: files whose partition values or
    statistics in the log cannot match are never opened, then row groups are
    pruned as in ``read_parquet``. ``storage_options`` go to ``deltalake``
    (credentials for object stores); ``filesystem`` reads the data files.
    ``shuffle`` and ``arrow_parquet_args`` are not supported (PlanError).

    >>> read_delta("s3://bucket/events", version=3, filter=col("day") == "2024-01-01")  # doctest: +SKIP
    Dataset(read_delta)
    """
    from dataflow.sources.delta import DeltaDatasource

    where = "read_delta"
    check_ray_only(where, catalog=catalog)
    if shuffle is not None:
        raise PlanError(
            f"{where}: shuffle={shuffle!r} is not supported (the table's files are read in "
            "log order); call random_shuffle() or randomize_block_order() after the read"
        )
    if arrow_parquet_args:
        raise PlanError(
            f"{where}: {sorted(arrow_parquet_args)} are not supported: the data files are read "
            "by dataflow's Parquet reader with the table's schema; drop them"
        )
    filter, columns = pushdown_args(where, filter, columns)
    source = DeltaDatasource(
        path,
        version=version,
        storage_options=storage_options,
        filesystem=filesystem,
        include_paths=include_paths,
    )
    return read_dataset(
        where, source, columns=columns, predicate=filter, **read_task_args(locals())
    )


def read_iceberg(
    *,
    table_identifier: str,
    row_filter: Any = None,
    parallelism: int = -1,
    selected_fields: Sequence[str] = ("*",),
    snapshot_id: int | None = None,
    scan_kwargs: dict[str, Any] | None = None,
    catalog_kwargs: dict[str, Any] | None = None,
    catalog: Any = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
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

    check_ray_only("read_iceberg", catalog=catalog)
    source = IcebergDatasource(
        table_identifier,
        row_filter=row_filter,
        selected_fields=selected_fields,
        snapshot_id=snapshot_id,
        scan_kwargs=scan_kwargs,
        catalog_kwargs=catalog_kwargs,
    )
    return read_dataset("read_iceberg", source, **read_task_args(locals()))


def read_lance(
    uri: str,
    *,
    version: int | str | None = None,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    storage_options: dict[str, str] | None = None,
    scanner_options: dict[str, Any] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
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
    return read_dataset(
        "read_lance", source, columns=columns, predicate=filter, **read_task_args(locals())
    )


def read_tfrecords(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
    tf_schema: Any = None,
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    file_extensions: list[str] | None = None,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    schema: pa.Schema | None = None,
    verify_crc: bool = True,
    partitioning: Any = "hive",
) -> Dataset:
    """``tf.train.Example`` records of TFRecord files, decoded without TensorFlow.

    A feature with one value per record becomes a scalar column (``int64``,
    ``float32``, ``binary``), one with several a list column, as in Ray Data;
    ``schema=pa.schema(...)`` fixes the columns and types instead. Every
    record's CRCs are checked (``verify_crc``). The file-listing parameters
    mean what they mean for ``read_parquet``.

    >>> read_tfrecords("train-*.tfrecords").select_columns(["label"])  # doctest: +SKIP
    Dataset(read_tfrecords -> select_columns(label))
    """
    from dataflow.sources.tfrecords import TFRecordDatasource

    if tf_schema is not None:
        raise PlanError(
            "read_tfrecords: tf_schema (a tensorflow_metadata Schema) needs TensorFlow; pass "
            "schema=pa.schema([...]) with int64 / float32 / binary (or list of them) columns"
        )
    source = TFRecordDatasource(paths, schema=schema, verify_crc=verify_crc, **_file_args(locals()))
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_tfrecords", source, **read_task_args(locals()))


def read_webdataset(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    decoder: Any = True,
    fileselect: Any = None,
    filerename: Any = None,
    suffixes: Any = None,
    verbose_open: bool = False,
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    include_paths: bool = False,
    file_extensions: list[str] | None = None,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    expand_json: bool = False,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    ignore_missing_paths: bool = False,
    partitioning: Any = "hive",
) -> Dataset:
    """WebDataset tar shards, one row per sample: ``__key__``, ``__url__`` and one
    column per member suffix (``jpg``, ``cls``, ``json``...).

    ``decoder=True`` decodes images to HWC uint8 arrays (needs Pillow), ``.json``,
    ``.txt``, ``.cls`` and ``.npy``; ``False`` keeps bytes; a callable (or a list,
    ``True`` standing for the default) maps a sample dict to a sample dict.
    ``fileselect``/``suffixes`` pick members, ``filerename`` renames them.
    Shards are streamed one at a time; ``verbose_open`` logs each shard opened
    (logger ``dataflow.sources.webdataset``). The file-listing parameters mean
    what they mean for ``read_parquet``.

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
        verbose_open=verbose_open,
        **_file_args(locals()),
    )
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_webdataset", source, **read_task_args(locals()))


def read_sql(
    sql: str,
    connection_factory: Callable[[], Any],
    *,
    sql_params: Any = None,
    shard_keys: Sequence[str] | None = None,
    shard_hash_fn: str = "MD5",
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
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

    keys = [shard_keys] if isinstance(shard_keys, str) else list(shard_keys or [])
    source = SQLDatasource(
        sql,
        connection_factory,
        sql_params=sql_params,
        shard_keys=keys,
        shard_hash_fn=shard_hash_fn,
    )
    return read_dataset("read_sql", source, **read_task_args(locals()))


_FILE_ARGS = (
    "filesystem",
    "partition_filter",
    "partitioning",
    "include_paths",
    "ignore_missing_paths",
    "shuffle",
    "file_extensions",
)


def _file_args(local_vars: dict[str, Any]) -> dict[str, Any]:
    """A file reader's listing parameters, for ``FileBasedDatasource``."""
    return {k: local_vars[k] for k in _FILE_ARGS if k in local_vars}
