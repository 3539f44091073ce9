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

from dataflow.compat import check_ray_only, merge_remote_args
from dataflow.dataset_base import DatasetBase
from dataflow.errors import PlanError
from dataflow.plan.logical import Compute, Write
from dataflow.udf import resources_of
from runtime.resources import Resources

if TYPE_CHECKING:
    from dataflow.sources.datasource import Datasink


class WriteMethods(DatasetBase):
    """Part of ``Dataset``: ``write_datasink`` and the table-format writers."""

    def write_datasink(
        self,
        datasink: Datasink,
        *,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Write every block with ``datasink``: ``on_write_start`` here, ``write``
        in the workers, then ``on_write_complete`` (commit) or, on any failure,
        ``on_write_failed`` (roll back) and the error is raised. ``concurrency``
        caps the write tasks running at once; ``ray_remote_args`` says what each
        reserves (``num_cpus``, ``num_gpus``, ``memory``, ``resources``).

        >>> df.range(10).write_datasink(MySink())  # doctest: +SKIP
        """
        if not callable(getattr(datasink, "write", None)):
            raise PlanError(
                f"write_datasink: expected a dataflow.sources.datasource.Datasink, "
                f"got {type(datasink).__name__}"
            )
        self._write(datasink, **write_settings("write_datasink", ray_remote_args, concurrency))

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
        catalog: Any = None,
        mode: str = "append",
        partition_by: Sequence[str] | None = None,
        storage_options: dict[str, str] | None = None,
        filesystem: Any = None,
        name: str | None = None,
        description: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
        **parquet_kwargs: Any,
    ) -> None:
        """Write a Delta Lake table (needs ``dataflow[deltalake]``) in one commit:
        ``mode="append"`` (creates the table if needed), ``"overwrite"`` (a new
        version with only these rows), ``"error"`` or ``"ignore"`` if it exists.
        A failed write commits nothing and removes the files it wrote.

        >>> df.range(10).write_delta("/tmp/table", partition_by=None)  # doctest: +SKIP
        """
        from dataflow.sources.delta import DeltaDatasink

        check_ray_only("write_delta", catalog=catalog)
        if "schema_mode" in parquet_kwargs:
            raise PlanError(
                "write_delta: schema_mode is not supported: an append keeps the table's "
                "schema (blocks are conformed to it); drop schema_mode"
            )
        self._write(
            DeltaDatasink(
                path,
                mode=mode,
                partition_by=partition_by,
                storage_options=storage_options,
                filesystem=filesystem,
                name=name,
                description=description,
                **parquet_kwargs,
            ),
            **write_settings("write_delta", ray_remote_args, concurrency),
        )

    def write_iceberg(
        self,
        table_identifier: str,
        catalog_kwargs: dict[str, Any] | None = None,
        catalog: Any = None,
        snapshot_properties: dict[str, str] | None = None,
        mode: str = "append",
        overwrite_filter: Any = None,
        upsert_kwargs: dict[str, Any] | None = None,
        overwrite_kwargs: dict[str, Any] | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Write to an existing Apache Iceberg table (needs ``dataflow[iceberg]``)
        in one commit: ``mode="append"`` adds the rows, ``"overwrite"`` replaces
        the table's rows. A failed write commits nothing and removes its files.

        >>> df.range(10).write_iceberg("db.ids", {"type": "sql", "uri": "sqlite:///c.db"})  # doctest: +SKIP
        """
        from dataflow.sources.iceberg import IcebergDatasink

        check_ray_only("write_iceberg", catalog=catalog)
        for key, value in (
            ("overwrite_filter", overwrite_filter),
            ("upsert_kwargs", upsert_kwargs),
            ("overwrite_kwargs", overwrite_kwargs),
        ):
            if value is not None:
                raise PlanError(
                    f"write_iceberg: {key} is not supported: mode='overwrite' replaces "
                    "every row of the table and mode='append' adds rows; drop it"
                )
        self._write(
            IcebergDatasink(
                table_identifier,
                catalog_kwargs=catalog_kwargs,
                snapshot_properties=snapshot_properties,
                mode=mode,
            ),
            **write_settings("write_iceberg", ray_remote_args, concurrency),
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
        table_id: list[str] | None = None,
        namespace_impl: str | None = None,
        namespace_properties: dict[str, str] | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Write a Lance dataset (needs ``dataflow[lance]``) in one new version:
        ``mode="create"`` (fails if it exists), ``"append"`` or ``"overwrite"``.
        A failed write commits nothing and removes the files it wrote.

        >>> df.range(10).write_lance("/tmp/ids.lance", mode="append")  # doctest: +SKIP
        """
        from dataflow.sources.lance import LanceDatasink

        for key, value in (
            ("table_id", table_id),
            ("namespace_impl", namespace_impl),
            ("namespace_properties", namespace_properties),
        ):
            if value is not None:
                raise PlanError(
                    f"write_lance: {key} names a table in a Lance namespace (catalog), "
                    "which dataflow does not resolve: pass the dataset's path instead"
                )
        self._write(
            LanceDatasink(
                path,
                mode=mode,
                schema=schema,
                min_rows_per_file=min_rows_per_file,
                max_rows_per_file=max_rows_per_file,
                data_storage_version=data_storage_version,
                storage_options=storage_options,
            ),
            **write_settings("write_lance", ray_remote_args, concurrency),
        )

    def write_sql(
        self,
        sql: str,
        connection_factory: Callable[[], Any],
        ray_remote_args: dict[str, Any] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Insert every row with ``cursor.executemany(sql, rows)`` (values in column
        order), one connection and one transaction per write task (at most
        ``concurrency`` at once, each reserving ``ray_remote_args``' resources).

        >>> ds.write_sql("INSERT INTO t VALUES (?, ?)", lambda: sqlite3.connect("app.db"))  # doctest: +SKIP
        """
        from dataflow.sources.sql import SQLDatasink

        self._write(
            SQLDatasink(sql, connection_factory),
            **write_settings("write_sql", ray_remote_args, concurrency),
        )


def write_settings(
    where: str, ray_remote_args: dict[str, Any] | None, concurrency: int | None
) -> dict[str, Any]:
    """A write's ``concurrency`` (write tasks at once) and ``ray_remote_args``
    (what each reserves) as the ``Write`` node's ``compute`` and ``resources``."""
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise PlanError(
            f"{where}: concurrency must be a positive int (write tasks at once), "
            f"got {concurrency!r}"
        )
    amounts = merge_remote_args(where, ray_remote_args)
    return {
        "compute": Compute("tasks", 1, concurrency),
        "resources": resources_of(where, **amounts),
    }
