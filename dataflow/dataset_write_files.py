"""The file writers of ``Dataset`` (``write_parquet``, ``write_csv``,
``write_json``, ``write_orc``, ``write_numpy``, ``write_tfrecords``,
``write_webdataset``, ``write_images``) with Ray Data's parameters, kept out of
``dataset.py``. Each builds its format's sink (``dataflow.sources.sinks``) and
writes through ``WriteMethods._write``; a write is committed atomically (staged
files moved into place, then a ``_SUCCESS`` manifest).

Ray's parameters mean here:

- ``mode``: "append" (the default, as in Ray Data: new files next to what is
  there; into an empty or new directory they are named ``part-...``),
  "overwrite", "error" (refuse a non-empty directory) or "ignore" (write
  nothing into a non-empty one); Ray's ``SaveMode`` enum works too;
- ``try_create_dir=False``: the directory must exist (FileNotFoundError);
- ``arrow_open_stream_args``: keywords of pyarrow's ``open_output_stream``;
- ``filename_provider``: names each file (``dataflow.sources.sinks.FilenameProvider``
  or Ray Data's);
- ``arrow_*_args_fn`` / ``pandas_json_args_fn``: called in each write task, its
  dict adds format keywords;
- ``min_rows_per_file`` (Ray's older ``num_rows_per_file``): a write task
  gathers at least that many rows (its input blocks bundled) and a file is not
  cut for size before it holds them; ``max_rows_per_file`` (a keyword of
  every writer here, Ray's ``write_parquet`` only): a file holds at most that
  many rows;
- ``concurrency``: write tasks at once; ``ray_remote_args``: what each write
  task reserves (``num_cpus``, ``num_gpus``, ``memory``, ``resources``).

>>> import dataflow as df
>>> df.range(10).write_parquet("/tmp/out", max_rows_per_file=4)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dataflow.compat import check_ray_only
from dataflow.dataset_base import DatasetBase
from dataflow.dataset_write import write_settings
from dataflow.errors import PlanError

if TYPE_CHECKING:
    from dataflow.sources.sinks import FileDatasink


class FileWriteMethods(DatasetBase):
    """Part of ``Dataset``: the file writers, through ``WriteMethods._write``."""

    def write_parquet(
        self,
        path: str,
        *,
        partition_cols: list[str] | None = None,
        filesystem: Any = None,
        catalog: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        arrow_parquet_args_fn: Callable[[], dict[str, Any]] | None = None,
        min_rows_per_file: int | None = None,
        max_rows_per_file: int | None = None,
        min_bytes_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        num_rows_per_file: int | None = None,
        mode: str = "append",
        **arrow_parquet_args: Any,
    ) -> None:
        """Write Parquet files under ``path`` (see the module docstring for the
        parameters; ``arrow_parquet_args`` go to ``pyarrow.parquet.ParquetWriter``,
        ``target_file_size`` bounds a file's bytes).

        >>> df.range(10).write_parquet("/tmp/out")  # doctest: +SKIP
        """
        check_ray_only("write_parquet", catalog=catalog)
        if min_bytes_per_file is not None:
            raise PlanError(
                "write_parquet: min_bytes_per_file is not supported; bound files with "
                "min_rows_per_file / max_rows_per_file, or target_file_size (bytes)"
            )
        from dataflow.sources.sinks import ParquetDatasink

        self._write_files(ParquetDatasink, locals(), arrow_parquet_args_fn, arrow_parquet_args)

    def write_csv(
        self,
        path: str,
        *,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        arrow_csv_args_fn: Callable[[], dict[str, Any]] | None = None,
        min_rows_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        num_rows_per_file: int | None = None,
        mode: str = "append",
        partition_cols: Sequence[str] | None = None,
        **arrow_csv_args: Any,
    ) -> None:
        """Write CSV files under ``path`` (``arrow_csv_args`` go to
        ``pyarrow.csv.CSVWriter``; see the module docstring).

        >>> df.range(10).write_csv("/tmp/out")  # doctest: +SKIP
        """
        from dataflow.sources.sinks import CSVDatasink

        self._write_files(CSVDatasink, locals(), arrow_csv_args_fn, arrow_csv_args)

    def write_json(
        self,
        path: str,
        *,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        pandas_json_args_fn: Callable[[], dict[str, Any]] | None = None,
        min_rows_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        num_rows_per_file: int | None = None,
        mode: str = "append",
        partition_cols: Sequence[str] | None = None,
        **pandas_json_args: Any,
    ) -> None:
        """Write JSON Lines files under ``path`` (see the module docstring).

        >>> df.range(10).write_json("/tmp/out")  # doctest: +SKIP
        """
        from dataflow.sources.sinks import JSONDatasink

        self._write_files(JSONDatasink, locals(), pandas_json_args_fn, pandas_json_args)

    def write_orc(
        self,
        path: str,
        *,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        arrow_orc_args_fn: Callable[[], dict[str, Any]] | None = None,
        min_rows_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        mode: str = "append",
        partition_cols: Sequence[str] | None = None,
        **arrow_orc_args: Any,
    ) -> None:
        """Write ORC files under ``path`` (``arrow_orc_args`` go to
        ``pyarrow.orc.ORCWriter``, e.g. ``compression=``; see the module docstring).

        >>> df.range(10).write_orc("/tmp/out")  # doctest: +SKIP
        """
        from dataflow.sources.sinks import ORCDatasink

        self._write_files(ORCDatasink, locals(), arrow_orc_args_fn, arrow_orc_args)

    def write_numpy(
        self,
        path: str,
        *,
        column: str | None = None,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        min_rows_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        num_rows_per_file: int | None = None,
        mode: str = "append",
        partition_cols: Sequence[str] | None = None,
    ) -> None:
        """Write ``.npy`` files of ``column`` under ``path`` (``column`` may be
        left out when the data has one column; see the module docstring).

        >>> df.range_tensor(10, shape=(2,)).write_numpy("/tmp/out", column="data")  # doctest: +SKIP
        """
        from dataflow.sources.sinks import NumpyDatasink

        self._write_files(NumpyDatasink, locals(), None, {"column": column})

    def write_tfrecords(
        self,
        path: str,
        *,
        tf_schema: Any = None,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        min_rows_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        num_rows_per_file: int | None = None,
        mode: str = "append",
        partition_cols: Sequence[str] | None = None,
    ) -> None:
        """Write ``tf.train.Example`` records in TFRecord files under ``path`` (no
        TensorFlow needed): ints as Int64List, floats as FloatList,
        strings/bytes as BytesList, list and tensor columns as multi-value
        features. ``tf_schema`` (a ``schema_pb2.Schema``) is not supported: the
        feature types follow the column types.

        >>> df.range(10).write_tfrecords("/tmp/out")  # doctest: +SKIP
        """
        if tf_schema is not None:
            raise PlanError(
                "write_tfrecords: tf_schema is not supported: feature types follow the "
                "column types (cast columns first to change them); drop tf_schema"
            )
        from dataflow.sources.tfrecords import TFRecordDatasink

        self._write_files(TFRecordDatasink, locals(), None, {})

    def write_webdataset(
        self,
        path: str,
        *,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        min_rows_per_file: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        encoder: Any = True,
        concurrency: int | None = None,
        num_rows_per_file: int | None = None,
        mode: str = "append",
        **kwargs: Any,
    ) -> None:
        """Write WebDataset tar shards under ``path``: a sample per row, column
        ``c`` as member ``<__key__>.c``; ``encoder=True`` encodes arrays as
        images (``.png``, ``.jpg``...) or ``.npy``, values as ``.json``, strings
        and ints as text; ``target_file_size`` bounds a shard.

        >>> ds.write_webdataset("/tmp/shards")  # doctest: +SKIP
        """
        from dataflow.sources.webdataset import WebDatasetDatasink

        self._write_files(WebDatasetDatasink, locals(), None, {**kwargs, "encoder": encoder})

    def write_images(
        self,
        path: str,
        column: str,
        file_format: str = "png",
        *,
        filesystem: Any = None,
        try_create_dir: bool = True,
        arrow_open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        mode: str = "append",
    ) -> None:
        """Write one image file per row from ``column`` (HxW or HxWxC uint8
        arrays, needs Pillow) in ``file_format`` ("png", "jpeg", "webp"...),
        named ``part-TTTTT-BBBBBB-RRRRRR.png`` (task, block, row) or after the
        ``filename_provider``'s task name as ``{stem}_{block:06}_{row:06}.png``.

        >>> df.read_images("in/").write_images("out/", column="image")  # doctest: +SKIP
        """
        from dataflow.sources.images import ImageDatasink

        self._write_files(
            ImageDatasink, locals(), None, {"column": column, "file_format": file_format}
        )

    def _write_files(
        self,
        cls: type[FileDatasink],
        args: dict[str, Any],
        args_fn: Callable[[], dict[str, Any]] | None,
        format_kwargs: dict[str, Any],
    ) -> None:
        """Build a ``cls`` sink from a writer's arguments and write. (Each writer
        imports its sink when called: ``import dataflow`` loads no format.)"""
        where = cls.where
        format_kwargs = dict(format_kwargs)
        # Ray has max_rows_per_file on write_parquet only; the other writers take it
        # as a keyword here too.
        max_rows = args.get("max_rows_per_file", format_kwargs.pop("max_rows_per_file", None))
        min_rows = args.get("min_rows_per_file")
        old = args.get("num_rows_per_file")
        if old is not None:
            if min_rows is not None and min_rows != old:
                raise PlanError(
                    f"{where}: num_rows_per_file is Ray's older name of min_rows_per_file; "
                    "give one of them"
                )
            min_rows = old
        datasink = cls(
            args["path"],
            filesystem=args.get("filesystem"),
            partition_cols=args.get("partition_cols"),
            mode=args.get("mode", "append"),
            try_create_dir=args.get("try_create_dir", True),
            open_stream_args=args.get("arrow_open_stream_args"),
            filename_provider=args.get("filename_provider"),
            min_rows_per_file=min_rows,
            max_rows_per_file=max_rows,
            format_args_fn=args_fn,
            **{k: v for k, v in format_kwargs.items() if v is not None or k != "column"},
        )
        settings = write_settings(where, args.get("ray_remote_args"), args.get("concurrency"))
        self._write(datasink, min_rows_per_task=min_rows or 0, **settings)
