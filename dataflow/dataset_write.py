"""The writing methods of ``Dataset`` (``write_datasink`` and the file formats),
kept out of ``dataset.py`` so that no file grows into a god file. ``Dataset``
inherits them; a write runs the plan with a ``Write`` node on top and commits
through the sink's driver-side hooks.

>>> import dataflow as df
>>> df.range(10).write_parquet("/tmp/out")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dataflow.errors import PlanError
from dataflow.plan.logical import Write

if TYPE_CHECKING:
    from dataflow.sources.datasource import Datasink


class WriteMethods:
    """Mixin of ``Dataset``: needs ``self._plan`` and ``self._iterator(plan)``."""

    def write_datasink(self, datasink: Datasink) -> None:
        """Write every block with ``datasink``: ``on_write_start`` here, ``write``
        in the workers, then ``on_write_complete`` (commit) or, on any failure,
        ``on_write_failed`` (roll back) and the error is raised.

        >>> df.range(10).write_datasink(MySink())  # doctest: +SKIP
        """
        from dataflow.sources.datasource import WriteResult

        if not callable(getattr(datasink, "write", None)):
            raise PlanError(
                f"write_datasink: expected a dataflow.sources.datasource.Datasink, "
                f"got {type(datasink).__name__}"
            )
        datasink.on_write_start()
        try:
            plan = Write(datasink, inputs=(self._plan,))
            results = WriteResult.from_tables(self._iterator(plan).iter_blocks())
            datasink.on_write_complete(results)
        except BaseException as e:
            datasink.on_write_failed(e)
            raise

    def write_parquet(
        self,
        path: str,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write Parquet files under ``path`` (committed atomically).

        >>> df.range(10).write_parquet("/tmp/out")  # doctest: +SKIP
        """
        self._write_files("ParquetDatasink", path, filesystem, partition_cols, mode, kwargs)

    def write_csv(
        self,
        path: str,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write CSV files under ``path`` (committed atomically).

        >>> df.range(10).write_csv("/tmp/out")  # doctest: +SKIP
        """
        self._write_files("CSVDatasink", path, filesystem, partition_cols, mode, kwargs)

    def write_json(
        self,
        path: str,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write JSON Lines files under ``path`` (committed atomically).

        >>> df.range(10).write_json("/tmp/out")  # doctest: +SKIP
        """
        self._write_files("JSONDatasink", path, filesystem, partition_cols, mode, kwargs)

    def write_orc(
        self,
        path: str,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write ORC files under ``path`` (committed atomically); ``kwargs`` go
        to ``pyarrow.orc.ORCWriter`` (``compression=``...).

        >>> df.range(10).write_orc("/tmp/out")  # doctest: +SKIP
        """
        self._write_files("ORCDatasink", path, filesystem, partition_cols, mode, kwargs)

    def write_numpy(
        self,
        path: str,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write ``.npy`` files under ``path`` (committed atomically).

        >>> df.range_tensor(10, shape=(2,)).write_numpy("/tmp/out", column="data")  # doctest: +SKIP
        """
        self._write_files("NumpyDatasink", path, filesystem, partition_cols, mode, kwargs)

    def write_delta(
        self,
        path: str,
        *,
        mode: str = "append",
        partition_by: Sequence[str] | None = None,
        storage_options: dict[str, str] | None = None,
        filesystem: Any = None,
        name: str | None = None,
        description: str | None = None,
        **parquet_kwargs: Any,
    ) -> None:
        """Write a Delta Lake table (needs ``dataflow[deltalake]``) in one commit:
        ``mode="append"`` (creates the table if needed), ``"overwrite"`` (a new
        version with only these rows), ``"error"`` or ``"ignore"`` if it exists.
        A failed write commits nothing and removes the files it wrote.

        >>> df.range(10).write_delta("/tmp/table", partition_by=None)  # doctest: +SKIP
        """
        from dataflow.sources.delta import DeltaDatasink

        self.write_datasink(
            DeltaDatasink(
                path,
                mode=mode,
                partition_by=partition_by,
                storage_options=storage_options,
                filesystem=filesystem,
                name=name,
                description=description,
                **parquet_kwargs,
            )
        )

    def write_iceberg(
        self,
        table_identifier: str,
        catalog_kwargs: dict[str, Any] | None = None,
        *,
        snapshot_properties: dict[str, str] | None = None,
        mode: str = "append",
    ) -> None:
        """Write to an existing Apache Iceberg table (needs ``dataflow[iceberg]``)
        in one commit: ``mode="append"`` adds the rows, ``"overwrite"`` replaces
        the table's rows. A failed write commits nothing and removes its files.

        >>> df.range(10).write_iceberg("db.ids", {"type": "sql", "uri": "sqlite:///c.db"})  # doctest: +SKIP
        """
        from dataflow.sources.iceberg import IcebergDatasink

        self.write_datasink(
            IcebergDatasink(
                table_identifier,
                catalog_kwargs=catalog_kwargs,
                snapshot_properties=snapshot_properties,
                mode=mode,
            )
        )

    def write_lance(
        self,
        path: str,
        *,
        schema: Any = None,
        mode: str = "create",
        min_rows_per_file: int = 1024 * 1024,
        max_rows_per_file: int = 64 * 1024 * 1024,
        data_storage_version: str | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        """Write a Lance dataset (needs ``dataflow[lance]``) in one new version:
        ``mode="create"`` (fails if it exists), ``"append"`` or ``"overwrite"``.
        A failed write commits nothing and removes the files it wrote.

        >>> df.range(10).write_lance("/tmp/ids.lance", mode="append")  # doctest: +SKIP
        """
        from dataflow.sources.lance import LanceDatasink

        self.write_datasink(
            LanceDatasink(
                path,
                mode=mode,
                schema=schema,
                min_rows_per_file=min_rows_per_file,
                max_rows_per_file=max_rows_per_file,
                data_storage_version=data_storage_version,
                storage_options=storage_options,
            )
        )

    def write_tfrecords(
        self,
        path: str,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write ``tf.train.Example`` records in TFRecord files under ``path``
        (committed atomically; no TensorFlow needed): ints as Int64List, floats
        as FloatList, strings/bytes as BytesList, list and tensor columns as
        multi-value features.

        >>> df.range(10).write_tfrecords("/tmp/out")  # doctest: +SKIP
        """
        from dataflow.sources.tfrecords import TFRecordDatasink

        self.write_datasink(
            TFRecordDatasink(
                path, filesystem=filesystem, partition_cols=partition_cols, mode=mode, **kwargs
            )
        )

    def write_webdataset(
        self,
        path: str,
        *,
        encoder: Any = True,
        filesystem: Any = None,
        mode: str = "error",
        **kwargs: Any,
    ) -> None:
        """Write WebDataset tar shards under ``path`` (committed atomically): a
        sample per row, column ``c`` as member ``<__key__>.c``; ``encoder=True``
        encodes arrays as images (``.png``, ``.jpg``...) or ``.npy``, values as
        ``.json``, strings and ints as text; ``target_file_size`` bounds a shard.

        >>> ds.write_webdataset("/tmp/shards")  # doctest: +SKIP
        """
        from dataflow.sources.webdataset import WebDatasetDatasink

        self.write_datasink(
            WebDatasetDatasink(path, encoder=encoder, filesystem=filesystem, mode=mode, **kwargs)
        )

    def write_sql(self, sql: str, connection_factory: Callable[[], Any]) -> None:
        """Insert every row with ``cursor.executemany(sql, rows)`` (values in column
        order), one connection and one transaction per write task.

        >>> ds.write_sql("INSERT INTO t VALUES (?, ?)", lambda: sqlite3.connect("app.db"))  # doctest: +SKIP
        """
        from dataflow.sources.sql import SQLDatasink

        self.write_datasink(SQLDatasink(sql, connection_factory))

    def _write_files(
        self,
        sink: str,
        path: str,
        filesystem: Any,
        partition_cols: Any,
        mode: str,
        kwargs: dict[str, Any],
    ) -> None:
        from dataflow.sources import sinks

        cls = getattr(sinks, sink)
        self.write_datasink(
            cls(path, filesystem=filesystem, partition_cols=partition_cols, mode=mode, **kwargs)
        )
