"""The file readers (``read_parquet``, ``read_csv``, ``read_json``, ``read_text``,
``read_binary_files``, ``read_numpy``, ``read_images``, ``read_orc``,
``read_avro``) with Ray Data 2.60's parameters: names, order and defaults.

What every one shares: ``paths`` (files, directories, globs, URLs, lists),
``filesystem``, ``file_extensions`` (each format's default as in Ray Data),
``ignore_missing_paths``, ``partitioning`` ("hive" or None; Ray's
``Partitioning("hive")`` too), ``partition_filter`` (a function of a file's
partition values), ``include_paths``, ``shuffle="files"`` or
``FileShuffleConfig(seed=...)``, ``override_num_blocks`` (``parallelism``,
Ray's old name), ``concurrency`` (read tasks at once) and what each read task
reserves (``num_cpus``, ``num_gpus``, ``memory``, ``resources``,
``ray_remote_args``). Ray-only parameters are refused by name
(``dataflow.compat``).

>>> import dataflow as df
>>> df.read_parquet("out/", shuffle=df.FileShuffleConfig(seed=0))  # doctest: +SKIP
Dataset(read_parquet)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from dataflow.compat import check_ray_only, merge_remote_args, parallelism_arg
from dataflow.dataset import Dataset
from dataflow.errors import PlanError
from dataflow.plan.logical import Compute, Read
from dataflow.sources.datasource import Datasource
from dataflow.sources.paths import FileShuffleConfig
from dataflow.udf import resources_of


def check_num_blocks(where: str, override_num_blocks: int | None) -> None:
    """Reject an ``override_num_blocks`` that is not a positive int (or None)."""
    if override_num_blocks is not None and (
        isinstance(override_num_blocks, bool)
        or not isinstance(override_num_blocks, int)
        or override_num_blocks < 1
    ):
        raise PlanError(
            f"{where}: override_num_blocks must be a positive int or None, "
            f"got {override_num_blocks!r}"
        )


READ_TASK_ARGS = (
    "parallelism",
    "override_num_blocks",
    "concurrency",
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "ray_remote_args",
    "label_selector",
    "fallback_strategy",
    "max_calls",
    "accelerator_type",
    "runtime_env",
)
"""Ray's per-read parameters, which every reader hands to ``read_dataset``."""


def read_task_args(local_vars: dict[str, Any]) -> dict[str, Any]:
    """The per-read parameters among a reader's ``locals()``, for ``read_dataset``."""
    return {k: local_vars[k] for k in READ_TASK_ARGS if k in local_vars}


def read_dataset(
    where: str,
    source: Datasource,
    *,
    parallelism: int = -1,
    override_num_blocks: int | None = None,
    concurrency: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    resources: dict[str, float] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    label_selector: Any = None,
    fallback_strategy: Any = None,
    max_calls: Any = None,
    accelerator_type: Any = None,
    runtime_env: Any = None,
    columns: tuple[str, ...] | None = None,
    predicate: Any = None,
) -> Dataset:
    """The ``Read`` of ``source`` with Ray's per-read parameters given their
    meaning: how many blocks, how many read tasks at once, what each reserves."""
    check_ray_only(
        where,
        label_selector=label_selector,
        fallback_strategy=fallback_strategy,
        max_calls=max_calls,
        accelerator_type=accelerator_type,
        runtime_env=runtime_env,
    )
    num_blocks = parallelism_arg(where, parallelism, override_num_blocks)
    check_num_blocks(where, num_blocks)
    amounts = merge_remote_args(
        where,
        ray_remote_args,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        memory=memory,
        resources=resources,
    )
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise PlanError(
            f"{where}: concurrency must be a positive int (read tasks at once), got {concurrency!r}"
        )
    return Dataset(
        Read(
            source,
            parallelism=num_blocks,
            columns=columns,
            predicate=predicate,
            compute=Compute("tasks", 1, concurrency),
            resources=resources_of(where, **amounts),
        )
    )


def pushdown_args(where: str, filter: Any, columns: Any) -> tuple[Any, tuple[str, ...] | None]:
    """A reader's ``filter`` (an ``Expr`` or a string, parsed) and ``columns``
    (a list of names), checked: they become the ``Read`` node's pushdowns."""
    from dataflow.expressions import Expr, parse

    if isinstance(filter, str):
        filter = parse(filter)
    if filter is not None and not isinstance(filter, Expr):
        raise PlanError(
            f"{where}: filter must be a dataflow expression (col('a') > 0) or a string, "
            f"got {type(filter).__name__}"
        )
    if isinstance(columns, str):
        raise PlanError(f"{where}: columns must be a list of names, got the string {columns!r}")
    return filter, tuple(columns) if columns is not None else None


def _decode_tensors(ds: Dataset, schema: dict[str, tuple[Any, tuple[int, ...]]] | None) -> Dataset:
    """Ray's ``tensor_column_schema``: binary columns of raw array bytes decoded
    into tensor columns of the given dtype and shape."""
    if not schema:
        return ds
    if not isinstance(schema, dict):
        raise PlanError(
            "read_parquet: tensor_column_schema must be a dict {column: (dtype, shape)}, "
            f"got {schema!r}"
        )
    return ds.map_batches(
        TensorDecoder(schema), batch_format="pyarrow", batch_size=None, zero_copy_batch=True
    )


class TensorDecoder:
    """Decodes binary columns holding ``ndarray.tobytes()`` into tensor columns."""

    def __init__(self, schema: dict[str, tuple[Any, tuple[int, ...]]]) -> None:
        import numpy as np

        self.schema = {c: (np.dtype(d), tuple(s)) for c, (d, s) in schema.items()}
        self.__name__ = "tensor_column_schema"

    def __call__(self, table: Any) -> Any:
        import numpy as np

        from dataflow.block import array_from_numpy

        for name, (dtype, shape) in self.schema.items():
            if name not in table.column_names:
                raise KeyError(
                    f"read_parquet: tensor_column_schema names column {name!r}, which the "
                    f"files lack; columns: {table.column_names}"
                )
            values = table.column(name).to_pylist()
            arr = np.stack([np.frombuffer(v, dtype=dtype).reshape(shape) for v in values])
            if not len(values):
                arr = np.empty((0, *shape), dtype)
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, array_from_numpy(arr, name))
        return table


def read_parquet(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    catalog: Any = None,
    columns: Sequence[str] | None = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    tensor_column_schema: dict[str, tuple[Any, tuple[int, ...]]] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = "hive",
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    include_paths: bool = False,
    include_row_hash: bool = False,
    file_extensions: list[str] | None = ["parquet"],  # noqa: B006 (Ray's default; never mutated)
    ignore_missing_paths: bool = False,
    skip_paths: Sequence[str] | None = None,
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
    """Parquet files, directories (hive partitions become columns), globs or URLs.

    ``columns`` and ``filter`` (a ``col(...)`` expression or a string such as
    ``"a > 0"``, dataflow's addition) are pushed into the scan: only those
    columns and the row groups whose statistics may match are read. Only
    ``.parquet`` files are read by default (``file_extensions=None``: all), so a
    ``_SUCCESS``/``done`` marker or a README beside them is skipped.
    ``tensor_column_schema={"col": (np.float32, (3, 4))}`` decodes binary
    columns of raw array bytes into tensor columns. ``**arrow_parquet_args``
    are refused (dataflow reads row groups itself) except ``filter=``.

    >>> read_parquet("s3://bucket/events/", columns=["a"], filter=col("a") > 0)  # doctest: +SKIP
    Dataset(read_parquet)
    """
    from dataflow.sources.parquet import ParquetDatasource

    check_ray_only("read_parquet", catalog=catalog)
    if include_row_hash:
        raise PlanError(
            "read_parquet: include_row_hash=True is not supported by dataflow yet; add a "
            "hash column with map_batches or with_column after the read"
        )
    if arrow_parquet_args:
        raise PlanError(
            f"read_parquet: {', '.join(sorted(arrow_parquet_args))} (pyarrow.dataset options) are "
            "not supported: dataflow reads row groups itself; columns= and filter= are "
            "pushed into the scan"
        )
    filter, columns = pushdown_args("read_parquet", filter, columns)
    source = ParquetDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
        skip_paths=skip_paths,
    )
    ds = read_dataset(
        "read_parquet", source, columns=columns, predicate=filter, **read_task_args(locals())
    )
    return _decode_tensors(ds, tensor_column_schema)


def read_csv(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = "hive",
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
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
    **arrow_csv_args: Any,
) -> Dataset:
    """CSV files; ``**arrow_csv_args`` (``read_options``/``parse_options``/
    ``convert_options`` of ``pyarrow.csv``) pass through.

    >>> read_csv("data/*.csv.gz")  # doctest: +SKIP
    Dataset(read_csv)
    """
    from dataflow.sources.csv import CSVDatasource

    source = CSVDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
        **arrow_csv_args,
    )
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_csv", source, **read_task_args(locals()))


def read_json(
    paths: str | Sequence[str],
    *,
    lines: bool = False,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = "hive",
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    file_extensions: list[str] | None = [  # noqa: B006 (Ray's default; never mutated)
        "json",
        "jsonl",
        "json.gz",
        "jsonl.gz",
        "json.br",
        "jsonl.br",
        "json.zst",
        "jsonl.zst",
        "json.lz4",
        "jsonl.lz4",
    ],
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    label_selector: dict[str, str] | None = None,
    fallback_strategy: list[dict[str, Any]] | None = None,
    max_calls: int | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    **arrow_json_args: Any,
) -> Dataset:
    """JSON Lines files or files holding one JSON array of objects
    (``lines=True``: JSON Lines only); ``**arrow_json_args``
    (``read_options``/``parse_options`` of ``pyarrow.json``) pass through.

    >>> read_json("events.jsonl", lines=True)  # doctest: +SKIP
    Dataset(read_json)
    """
    from dataflow.sources.json import JSONDatasource

    source = JSONDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
        **arrow_json_args,
    )
    source.lines = bool(lines)
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_json", source, **read_task_args(locals()))


def read_text(
    paths: str | Sequence[str],
    *,
    encoding: str = "utf-8",
    drop_empty_lines: bool = True,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = None,
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
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
) -> Dataset:
    """One row per line in column ``text``, decoded with ``encoding``;
    ``drop_empty_lines`` drops blank lines.

    >>> read_text("logs/")  # doctest: +SKIP
    Dataset(read_text)
    """
    from dataflow.sources.text import TextDatasource

    source = TextDatasource(
        paths,
        encoding=encoding,
        drop_empty_lines=drop_empty_lines,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
    )
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_text", source, **read_task_args(locals()))


def read_binary_files(
    paths: str | Sequence[str],
    *,
    include_paths: bool = False,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = None,
    ignore_missing_paths: bool = False,
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
) -> Dataset:
    """One row per file, its content in column ``bytes`` (``include_paths=True``
    adds ``path``).

    >>> read_binary_files("blobs/", include_paths=True)  # doctest: +SKIP
    Dataset(read_binary_files)
    """
    from dataflow.sources.text import BinaryDatasource

    source = BinaryDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
    )
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_binary_files", source, **read_task_args(locals()))


def read_numpy(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = None,
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    file_extensions: list[str] | None = ["npy"],  # noqa: B006 (Ray's default; never mutated)
    concurrency: int | None = None,
    override_num_blocks: int | None = None,
    allow_pickle: bool = False,
    **numpy_load_args: Any,
) -> Dataset:
    """``.npy`` files as rows of column ``data`` (N-d arrays become tensor
    columns); ``allow_pickle`` loads object arrays (trusted files only).

    >>> read_numpy("arrays/")  # doctest: +SKIP
    Dataset(read_numpy)
    """
    from dataflow.sources.npy import NumpyDatasource

    source = NumpyDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
    )
    source.allow_pickle = bool(allow_pickle)
    if numpy_load_args:
        raise PlanError(
            f"read_numpy: {', '.join(sorted(numpy_load_args))}: numpy.load options other "
            "than allow_pickle are not supported (.npy files are read whole)"
        )
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_numpy", source, **read_task_args(locals()))


def read_images(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_file_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = None,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    file_extensions: list[str] | None = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif"],  # noqa: B006 (Ray's default; never mutated)
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
    """Images (needs Pillow) as column ``image``, HWC uint8; ``size=(h, w)``
    resizes and ``mode="RGB"`` converts so every row has one shape.

    >>> read_images("imgs/", size=(64, 64), mode="RGB")  # doctest: +SKIP
    Dataset(read_images)
    """
    from dataflow.sources.images import ImageDatasource

    source = ImageDatasource(
        paths,
        size=size,
        mode=mode,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
    )
    source.open_args = dict(arrow_open_file_args or {})
    return read_dataset("read_images", source, **read_task_args(locals()))


def read_orc(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = None,
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
    shuffle: Literal["files"] | FileShuffleConfig | None = None,
    file_extensions: list[str] | None = ["orc"],  # noqa: B006 (Ray's default; never mutated)
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
    """ORC files (``pyarrow.orc``), read stripe by stripe; selected columns are
    the only ones decoded.

    >>> read_orc("data/", columns=["a"])  # doctest: +SKIP
    Dataset(read_orc)
    """
    from dataflow.sources.orc import OrcDatasource

    source = OrcDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
    )
    return read_dataset("read_orc", source, **read_task_args(locals()))


def read_avro(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    parallelism: int = -1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
    arrow_open_stream_args: dict[str, Any] | None = None,
    partition_filter: Callable[[dict[str, str]], bool] | None = None,
    partitioning: Any = None,
    include_paths: bool = False,
    ignore_missing_paths: bool = False,
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
) -> Dataset:
    """Avro container files (needs fastavro), one column per top-level field with
    the types of the file's schema (int32, float32, structs, maps, decimals,
    timestamps...). Selected columns are the only ones fastavro decodes.

    >>> read_avro("s3://bucket/events/", file_extensions=["avro"])  # doctest: +SKIP
    Dataset(read_avro)
    """
    from dataflow.sources.avro import AvroDatasource

    source = AvroDatasource(
        paths,
        filesystem=filesystem,
        partition_filter=partition_filter,
        partitioning=partitioning,
        include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths,
        shuffle=shuffle,
        file_extensions=file_extensions,
    )
    source.open_args = dict(arrow_open_stream_args or {})
    return read_dataset("read_avro", source, **read_task_args(locals()))


__all__ = [
    "pushdown_args",
    "read_avro",
    "read_binary_files",
    "read_csv",
    "read_dataset",
    "read_images",
    "read_json",
    "read_numpy",
    "read_orc",
    "read_parquet",
    "read_text",
]
