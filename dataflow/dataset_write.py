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
from dataflow.plan.logical import Compute, Write
from runtime.resources import Resources

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
        if not callable(getattr(datasink, "write", None)):
            raise PlanError(
                f"write_datasink: expected a dataflow.sources.datasource.Datasink, "
                f"got {type(datasink).__name__}"
            )
        self._write(datasink)

    def _write(
        self,
        datasink: Datasink,
        *,
        min_rows_per_task: int = 0,
        compute: Compute = Compute(),
        resources: Resources = Resources(cpu=1),
    ) -> None:
        """``write_datasink`` with the write tasks' own settings (see ``Write``)."""
        from dataflow.sources.datasource import WriteResult

        datasink.on_write_start()
        if getattr(datasink, "skip_write", False):  # mode="ignore" on existing data
            return
        try:
            plan = Write(
                datasink,
                min_rows_per_task=min_rows_per_task,
                compute=compute,
                resources=resources,
                inputs=(self._plan,),
            )
            results = WriteResult.from_tables(self._iterator(plan).iter_blocks())
            datasink.on_write_complete(results)
        except BaseException as e:
            datasink.on_write_failed(e)
            raise

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

    def write_sql(self, sql: str, connection_factory: Callable[[], Any]) -> None:
        """Insert every row with ``cursor.executemany(sql, rows)`` (values in column
        order), one connection and one transaction per write task.

        >>> ds.write_sql("INSERT INTO t VALUES (?, ?)", lambda: sqlite3.connect("app.db"))  # doctest: +SKIP
        """
        from dataflow.sources.sql import SQLDatasink

        self.write_datasink(SQLDatasink(sql, connection_factory))
